"""Load time and memory of full-size models, both layouts, q8_0 and q4_0.

Writes full-size (24 layers, d_model 1024) random-weight models once into a cache folder,
then loads each in a fresh process, several times, with the file's pages both cold (evicted
from the page cache with posix_fadvise) and warm, and reports the median load time, the
resident memory after loading and the peak. Prints a markdown table.

    python bench/load.py [--cache bench/models] [--repeat 5] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

_CHILD = r"""
import json, os, sys, time
path, mmap, cold, threads = sys.argv[1], sys.argv[2] == "1", sys.argv[3] == "1", int(sys.argv[4])
if cold:
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
from nemotron_cpp import NemotronModel
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
rss_before = status("VmRSS")
t0 = time.perf_counter()
m = NemotronModel(path, use_mmap=mmap, n_threads=threads or None)
dt = time.perf_counter() - t0
print(json.dumps({"load_s": dt, "rss": status("VmRSS"), "rss_before": rss_before, "peak": status("VmHWM"),
                  "uses_mmap": m.uses_mmap}))
"""


def measure(path: Path, mmap: bool, cold: bool, threads: int, repeat: int) -> dict:
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", _CHILD, str(path), "1" if mmap else "0", "1" if cold else "0",
                              str(threads)], capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout))
    return {
        "load_s": statistics.median(r["load_s"] for r in runs),
        "rss": statistics.median(r["rss"] for r in runs),
        "rss_before": statistics.median(r["rss_before"] for r in runs),
        "peak": max(r["peak"] for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=Path(__file__).parent / "models")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()

    from nemotron_cpp import system_info, testing

    args.cache.mkdir(parents=True, exist_ok=True)
    rows = []
    for layout in ("nemo", "asr"):
        for weight_type in ("q8_0", "q4_0"):
            path = args.cache / f"full-{layout}-{weight_type}.gguf"
            if not path.exists():
                t0 = time.perf_counter()
                testing.write_model(path, size=testing.FULL, layout=layout, weight_type=weight_type, seed=0)
                print(f"wrote {path} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            for mmap in (True, False):
                for cold in (True, False):
                    r = measure(path, mmap, cold, args.threads, args.repeat)
                    rows.append((layout, weight_type, path.stat().st_size, mmap, cold, r))

    info = system_info()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    print(f"Machine: {cpu}, {os.cpu_count()} logical CPUs, Linux {platform.release()}, Python {platform.python_version()}")
    print(f"Engine: {info.version}, ggml {info.ggml_version}; median of {args.repeat} loads, each in a fresh process;")
    print("RSS is the process's resident memory after loading, less what it held before (Python, numpy, cffi).")
    print()
    print("| layout | type | file | mmap | page cache | load time | RSS after load | peak RSS (process) |")
    print("|---|---|---|---|---|---|---|---|")
    mib = 1024 * 1024
    for layout, weight_type, size, mmap, cold, r in rows:
        print(f"| {layout} | {weight_type} | {size / mib:.0f} MiB | {'yes' if mmap else 'no'} | "
              f"{'cold' if cold else 'warm'} | {r['load_s'] * 1000:.1f} ms | {(r['rss'] - r['rss_before']) / mib:.1f} MiB | "
              f"{r['peak'] / mib:.0f} MiB |")


if __name__ == "__main__":
    main()
