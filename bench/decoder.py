"""The RNN-T decoder step: what one label costs (a prediction network step and a joint step), for one
stream and for streams decoded together.

The encoder's work does not depend on the joint, so two copies of a model that differ only in the
blank's output bias split the decoding out of the whole: with the blank always winning, every frame
takes one joint step and no prediction network step; with it never winning, every frame takes
max_symbols labels (each a prediction network step and a joint step). The same audio through both,
alternating, median of --repeat runs each:

    ms per label = (time with labels - time with blanks) / (labels - frames)

(the blank copy's one joint step per frame is netted out). One stream is the audio fed at once with
offline chunking (as model.transcribe runs a file: several large chunks per graph); N streams are N live streams fed --latency ms pieces and
computed together with model.step(streams), whose greedy decoders run in lockstep. The default model
is bench/run.py's full-size random q8_0 model (its predictor and joint are float32, as in the C++
port's files); --model takes another file in the nemo layout.

Examples:

    python bench/decoder.py                                  # 1 and 8 streams, 2 threads
    python bench/decoder.py --streams 1,2,4,8,16 --threads 1,2 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import soundfile

sys.path.insert(0, str(Path(__file__).parent))
import run  # noqa: E402  # bench/run.py: the default model, the speech, the machine line

BLANK_BIAS = "joint.joint_net.2.bias"  # the joint's output bias, the blank's last (nemo layout)


def with_blank_bias(model: Path, out: Path, value: float) -> Path:
    """A copy of `model` whose blank output bias is `value`."""
    from gguf import GGUFReader

    if not out.exists() or out.stat().st_mtime < model.stat().st_mtime:
        shutil.copyfile(model, out.with_suffix(".part"))
        reader = GGUFReader(out.with_suffix(".part"), "r+")
        bias = next((t for t in reader.tensors if t.name == BLANK_BIAS), None)
        if bias is None:
            raise SystemExit(f"{model}: no tensor {BLANK_BIAS} (decoder.py reads the nemo layout)")
        bias.data[-1] = value
        del reader  # writes the mapped page back
        out.with_suffix(".part").rename(out)
    return out


def measure(p: Dict[str, Any]) -> Dict[str, Any]:
    """One run in this process: decoding time is the whole wall time; labels and frames counted."""
    from nemotron_cpp import NemotronModel

    audio = soundfile.read(p["audio"], dtype="float32")[0]
    model = NemotronModel(p["model"], n_threads=p["threads"])
    model.transcribe(audio[: run.RATE])  # warm: pages, graphs, the first labels' input gates
    if p["streams"] == 1:
        stream = model.stream(endpointing=False, chunking="offline")  # as model.transcribe runs a file
        start = time.perf_counter()
        stream.feed(audio)
        stream.finalize()
        wall = time.perf_counter() - start
        labels, frames = len(stream.tokens), stream.n_frames
    else:
        streams = [model.stream(p["latency"], endpointing=False) for _ in range(p["streams"])]
        step = p["latency"] * run.RATE // 1000
        start = time.perf_counter()
        for i in range(0, len(audio), step):
            for s in streams:
                s.push(audio[i:i + step])
            model.step(streams)
        model.step(streams, final=True)
        wall = time.perf_counter() - start
        labels = sum(len(s.tokens) for s in streams)
        frames = sum(s.n_frames for s in streams)
    return {"wall_s": wall, "labels": labels, "frames": frames}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--model", type=Path, help="a GGUF file in the nemo layout (default: bench/run.py's q8_0 model)")
    add("--audio", type=Path, help="16 kHz speech (default: 10 s of espeak-ng speech)")
    add("--streams", default="1,8", help="comma-separated stream counts (default: %(default)s)")
    add("--threads", default="2", help="comma-separated thread counts (default: %(default)s)")
    add("--latency", type=int, default=160, help="chunk latency of the N-stream runs (default: %(default)s)")
    add("--repeat", type=int, default=3, help="alternating runs per cell and copy (default: %(default)s)")
    add("--cache", type=Path, default=run.CACHE)
    add("--json", type=Path, help="also write the results here")
    add("_measure", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._measure is not None:
        print(json.dumps(measure(json.loads(args._measure))))
        return
    args.cache.mkdir(parents=True, exist_ok=True)
    model = args.model or run.default_models(args.cache, ["q8_0"])["q8_0"]
    audio = args.audio or run.speech(args.cache, 10.0)
    copies = {"blanks": with_blank_bias(model, args.cache / f"{model.stem}-blanks.gguf", 1e4),
              "labels": with_blank_bias(model, args.cache / f"{model.stem}-labels.gguf", -1e4)}
    seconds = soundfile.info(str(audio)).duration
    print(run.machine(), file=sys.stderr)
    print(f"{model.name}, {seconds:.1f} s of {audio.name}; streams > 1: {args.latency} ms pieces through "
          f"model.step; median of {args.repeat} alternating runs", file=sys.stderr)
    print("| streams | threads | labels | ms per label | ms per step of all streams | decoding RTF per stream |")
    print("|---|---|---|---|---|---|")
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        for n in [int(s) for s in args.streams.split(",")]:
            runs: Dict[str, List[Dict[str, Any]]] = {"blanks": [], "labels": []}
            for _ in range(args.repeat):
                for name, path in copies.items():
                    p = {"model": str(path), "audio": str(audio), "threads": threads, "streams": n,
                         "latency": args.latency}
                    runs[name].append(run.child([sys.executable, __file__, json.dumps(p)], f"{name}, {n} streams"))
            blank = statistics.median(r["wall_s"] for r in runs["blanks"])
            label = statistics.median(r["wall_s"] for r in runs["labels"])
            labels, frames = runs["labels"][0]["labels"], runs["blanks"][0]["frames"]
            per_label = (label - blank) / max(labels - frames, 1)
            row = {"streams": n, "threads": threads, "labels": labels, "frames": frames, "blank_s": blank,
                   "label_s": label, "ms_per_label": per_label * 1e3}
            rows.append(row)
            # A lockstep step decodes one label of every stream; the RTF: one stream's labels' decoding time
            # over the audio's length.
            print(f"| {n} | {threads} | {labels} | {per_label * 1e3:.3f} | {per_label * 1e3 * n:.3f} | "
                  f"{per_label * labels / n / seconds:.3f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": run.machine(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
