"""Side by side with other engines: the same audio through this package's command line and through
other engines' command lines, each a whole process (start, model load, recognition, exit), in
alternating order, with the ratio of the medians.

Each --peer is `ENGINE PATH=COMMAND`: PATH is `offline` (a whole file at once) or a streaming
latency in ms (80, 160, 560, 1120), COMMAND a shell command line in which {audio} (a 16 kHz mono
16-bit WAV file), {pcm} (the same samples as raw 16-bit little-endian PCM), {model} (--model) and
{threads} are replaced. For every PATH some peer runs, this package runs the same audio as its users
would: `nemotron-cpp transcribe` (offline, chunked at 1120 ms as NeMo's full-utterance path of this
model) or `nemotron-cpp stream --no-pace --latency MS`. Each round runs every command once, the
engines in a rotating order; a cell is the median of --repeat rounds (with the range). "faster" is
the peer's median wall time over ours. Peak RSS is the process's own (as getrusage reports a child's).

The weights must be the same for the ratio to mean anything; docs/benchmarks.md says how the peers'
files were made from the bench model. Outputs are not compared here: run the commands by hand.

    python bench/compare.py --model m.gguf --audio speech-60s.wav --threads 2 \\
        --peer "other offline=other-cli -m other.gguf -t {threads} {audio}" \\
        --peer "other 160=other-cli -m other.gguf -t {threads} --chunk-ms 160 {audio}"
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import soundfile

sys.path.insert(0, str(Path(__file__).parent))
import run  # noqa: E402  # bench/run.py: the default model, the speech, the machine line

OURS = "nemotron-cpp"

# Times one command line (argv[1]) and takes its peak RSS from RUSAGE_CHILDREN, which only this
# wrapper's child feeds. Linux counts the spawning process's own peak into an exec'd child's
# ru_maxrss, so the wrapper is as small as Python gets (no site, json imported afterwards): the
# figure cannot fall below about 8 MiB.
MEASURE = r"""
import os, resource, sys, time
t = time.perf_counter()
pid = os.posix_spawn("/bin/sh", ["sh", "-c", sys.argv[1]], os.environ,
                     file_actions=[(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])
status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
wall = time.perf_counter() - t
import json
if status:
    sys.exit(f"exit status {status}")
print(json.dumps({"wall_s": wall, "peak_bytes": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))
"""


def ours(path: str) -> str:
    cli = shlex.quote(str(Path(sys.executable).with_name("nemotron-cpp")))
    if path == "offline":
        return f"{cli} transcribe {{audio}} -m {{model}} --threads {{threads}} --latency 1120 -q"
    return f"{cli} stream {{audio}} -m {{model}} --threads {{threads}} --latency {path} --no-pace -q"


def parse_peer(text: str) -> Tuple[str, str, str]:
    """`ENGINE PATH=COMMAND` -> (engine, path, command)."""
    head, sep, command = text.partition("=")
    parts = head.rsplit(None, 1)
    if not sep or len(parts) != 2 or not command.strip():
        raise argparse.ArgumentTypeError(f"expected 'ENGINE PATH=COMMAND', not {text!r}")
    engine, path = parts
    if path != "offline" and not (path.isdigit() and int(path) > 0):
        raise argparse.ArgumentTypeError(f"PATH is offline or a latency in ms, not {path!r}")
    return engine, path, command


def main() -> None:
    doc = (__doc__ or "").split("\n\n", 1)
    parser = argparse.ArgumentParser(description=doc[0], epilog=doc[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--peer", type=parse_peer, action="append", required=True, metavar="'ENGINE PATH=COMMAND'",
        help="another engine's command for one path; repeatable")
    add("--model", type=Path, help="our GGUF file (default: bench/run.py's full-size random q8_0 model)")
    add("--audio", type=Path, help="the recording (default: 60 s of bench/run.py's espeak-ng speech)")
    add("--threads", type=int, default=2, help="threads of every engine (default: %(default)s)")
    add("--repeat", type=int, default=3, help="rounds (default: %(default)s)")
    add("--cache", type=Path, default=run.CACHE)
    add("--json", type=Path, help="also write every measurement here")
    args = parser.parse_args()

    args.cache.mkdir(parents=True, exist_ok=True)
    model = args.model or run.default_models(args.cache, ["q8_0"])["q8_0"]
    wav = run.as_wav16k(args.audio, args.cache) if args.audio else run.speech(args.cache, 60.0)
    pcm = args.cache / f"{wav.stem}.s16le"
    if not pcm.exists():
        soundfile.read(str(wav), dtype="int16")[0].astype("<i2").tofile(pcm)
    audio_s = soundfile.info(str(wav)).duration
    values = {"audio": shlex.quote(str(wav)), "pcm": shlex.quote(str(pcm)), "model": shlex.quote(str(model)),
              "threads": str(args.threads)}

    commands: Dict[str, List[Tuple[str, str]]] = {}  # path -> [(engine, command)], ours first
    for engine, path, command in args.peer:
        commands.setdefault(path, [(OURS, ours(path))]).append((engine, command))
    paths = sorted(commands, key=lambda p: (p != "offline", int(p) if p.isdigit() else 0))

    print(run.machine(), file=sys.stderr)
    walls: Dict[Tuple[str, str], List[float]] = {}
    peaks: Dict[Tuple[str, str], List[float]] = {}
    for round_ in range(args.repeat):
        for path in paths:
            engines = commands[path]
            shift = round_ % len(engines)
            for engine, command in engines[shift:] + engines[:shift]:
                line = command
                for key, value in values.items():
                    line = line.replace("{" + key + "}", value)
                r = run.child([sys.executable, "-S", "-I", "-c", MEASURE, line], f"{engine}, {path}")
                walls.setdefault((path, engine), []).append(r["wall_s"])
                peaks.setdefault((path, engine), []).append(r["peak_bytes"] / 2**20)
                print(f"round {round_ + 1}: {engine}, {path}: {r['wall_s']:.2f} s", file=sys.stderr)

    print(f"{run.machine()}; {model.name}; {audio_s:.1f} s of {wav.name}; {args.threads} threads; whole process "
          f"(start, load, recognition), median of {args.repeat} alternating rounds\n")
    print(f"| path | engine | wall time | RTF | peak RSS | {OURS} faster by |")
    print("|---|---|---|---|---|---|")
    for path in paths:
        base = statistics.median(walls[(path, OURS)])
        for engine, _ in commands[path]:
            w = walls[(path, engine)]
            median = statistics.median(w)
            ratio = "" if engine == OURS else f"{median / base:.2f}x"
            print(f"| {path if path == 'offline' else path + ' ms'} | {engine} | {median:.2f} s ({min(w):.2f}-{max(w):.2f}) "
                  f"| {median / audio_s:.3f} | {float(np.median(peaks[(path, engine)])):.0f} MiB | {ratio} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": run.machine(), "argv": sys.argv[1:], "audio_s": audio_s,
                                         "runs": [{"path": p, "engine": e, "wall_s": w, "peak_mib": peaks[(p, e)]}
                                                  for (p, e), w in walls.items()]}, indent=1) + "\n")


if __name__ == "__main__":
    main()
