#!/usr/bin/env python3
"""Corpus throughput: hours of audio transcribed per hour of wall time through Ray Data against a plain
loop over the files with the same model, and the memory of each Ray worker.

    python bench/corpus.py                        # the full-size random q8_0 model, 24 files of 30 s
    python bench/corpus.py --model demo --files 48

The model defaults to bench/run.py's full-size random model (24 x 1024, the joint tuned to 0.5 tokens per
frame), made once in --cache. The corpus is --files copies of --seconds of espeak-ng speech. Rows:

* plain loop: one process, ``model.transcribe`` file after file with all cores' threads;
* Ray: ``nemotron_cpp.ray.transcribe_corpus`` on a local cluster (``ray.init(num_cpus=cores)``), as
  workers x threads; wall time from the call to the last row, the cluster's start excluded (reported);
* per worker: the largest resident set (RSS) of a worker process, and its proportional set (PSS: shared
  pages divided among the processes that map them) in the last sample before the job ended, when every
  worker had mapped the weights (sampled every 0.2 s): the weights are mapped from one file, so the
  workers of a node share their pages.

A benchmark, not a test; the machine's load is printed with the results.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import CACHE, default_models, speech as run_speech  # noqa: E402


def memory_of(pid: int) -> Dict[str, float]:
    """RSS and PSS of a process in MB (0 when it is gone)."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return {"rss": 0.0, "pss": 0.0}
    fields = {line.split(":")[0]: float(line.split()[1]) / 1024 for line in rollup.splitlines()[1:] if ":" in line}
    return {"rss": fields.get("Rss", 0.0), "pss": fields.get("Pss", 0.0)}


def worker_pids() -> List[int]:
    """The processes of Ray's map workers (their titles name the transcriber)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"Transcriber" in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def main() -> int:
    from nemotron_cpp import NemotronModel
    from nemotron_cpp.demo import demo_model_path

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="a GGUF file, or 'demo' (default: the full-size random q8_0 model)")
    p.add_argument("--files", type=int, default=24)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--cache", type=Path, default=CACHE)
    args = p.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    model = (demo_model_path(log=False) if args.model == "demo" else Path(args.model) if args.model
             else default_models(args.cache, ["q8_0"])["q8_0"])
    speech = run_speech(args.cache, args.seconds)
    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp())
    corpus = work / "corpus"
    corpus.mkdir()
    for i in range(args.files):
        shutil.copy(speech, corpus / f"{i:04d}.wav")
    hours = args.files * args.seconds / 3600
    print(f"{model.name}: {args.files} files x {args.seconds:g} s = {hours * 60:.1f} min of audio; "
          f"{platform.processor() or platform.machine()}, {cores} CPUs, load {os.getloadavg()[0]:.2f}\n")
    print("| how | workers x threads | wall s | hours per hour | worker RSS MB (max) | worker PSS MB (at the end) |")
    print("|---|---|---|---|---|---|")

    with NemotronModel(model, n_threads=cores) as m:
        m.transcribe(corpus / "0000.wav")  # warm: pages of the weights in memory, as for the workers
        t0 = time.monotonic()
        for f in sorted(corpus.iterdir()):
            m.transcribe(f)
        wall = time.monotonic() - t0
    print(f"| plain loop | 1 x {cores} | {wall:.1f} | {hours / (wall / 3600):.0f} | | |", flush=True)

    import ray

    from nemotron_cpp.ray import transcribe_corpus

    t0 = time.monotonic()
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    started = time.monotonic() - t0
    for workers, threads in ((cores, 1), (1, cores)):
        peak: Dict[int, float] = {}
        last: Dict[int, float] = {}
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.2):
                for pid in worker_pids():
                    m = memory_of(pid)
                    if m["rss"]:
                        peak[pid] = max(peak.get(pid, 0.0), m["rss"])
                        last[pid] = m["pss"]

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        out = work / f"out-{workers}x{threads}.jsonl"
        counts = transcribe_corpus(str(corpus), out, model=str(model), concurrency=workers,
                                   num_cpus_per_worker=threads, batch_size=2)
        done.set()
        sampler.join()
        assert counts["done"] == args.files and counts["errors"] == 0, counts
        wall = counts["wall_seconds"]
        rss = max(peak.values(), default=0.0)
        pss = max(last.values(), default=0.0)
        print(f"| Ray Data | {workers} x {threads} | {wall:.1f} | {hours / (wall / 3600):.0f} | {rss:.0f} | {pss:.0f} |",
              flush=True)
    ray.shutdown()
    print(f"\nthe local cluster took {started:.1f} s to start (not in the rows); model file "
          f"{model.stat().st_size / 1e6:.0f} MB")
    shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
