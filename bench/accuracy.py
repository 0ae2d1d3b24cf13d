#!/usr/bin/env python3
"""Word error rate of the demo model on the committed held-out clips, per weight type and latency.

    python bench/accuracy.py                          # the shipped q8_0 model, clip by clip
    python bench/accuracy.py --long --telephone       # also the ten-minute stream and 8 kHz audio
    python bench/accuracy.py --nemo model.nemo        # also f32 and q4_0, converted from the checkpoint

The clips (tests/reference/demo, spoken with espeak-ng voice variants that training never used) and
NVIDIA NeMo's WER on the same audio come from scripts/make_demo_assets.py. Each clip is one
utterance, transcribed whole at the given latency (the engine's chunk-by-chunk streaming). ``--long``
streams all the clips as one ten-minute recording (``nemotron_cpp.demo.long_stream``, fed in
half-second pieces), with NeMo's decoding and with ``Endpointing(reset_decoder=True)``;
``--telephone`` gives every clip at 8 kHz, mu-law coded (``nemotron_cpp.demo.telephone``). Prints
markdown tables; tests/test_demo.py asserts the bars, this only reports.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict

import soundfile

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "tests" / "reference" / "demo"
LATENCIES = {1120: "70_13", 560: "70_6", 160: "70_1", 80: "70_0"}


def main() -> int:
    from nemotron_cpp import Endpointing, NemotronModel
    from nemotron_cpp.demo import demo_model_path, long_stream, telephone, word_error_rate

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nemo", type=Path, help="the demo model's .nemo checkpoint: also f32 and q4_0 rows")
    p.add_argument("--long", action="store_true", help="also the ten-minute stream of all the clips")
    p.add_argument("--telephone", action="store_true", help="also every clip at 8 kHz, mu-law coded")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    manifest = json.loads((REFERENCE / "manifest.json").read_text(encoding="utf-8"))
    refs = [c["text"] for c in manifest["clips"]]
    audio = [soundfile.read(REFERENCE / c["file"], dtype="float32")[0] for c in manifest["clips"]]
    models: Dict[str, Path] = {"q8_0 (shipped)": demo_model_path(log=False)}
    tmp = tempfile.TemporaryDirectory()
    if args.nemo:
        from nemotron_cpp.gguf.convert import convert_nemo

        for weight_type in ("f32", "q4_0"):
            models[weight_type] = convert_nemo(args.nemo, Path(tmp.name) / f"demo.{weight_type}.gguf",
                                               weight_type=weight_type)
    header = "| weights | " + " | ".join(f"{lat} ms" for lat in LATENCIES) + " | RTF (1120 ms) |\n|---|" + \
        "---|" * (len(LATENCIES) + 1)
    print(f"{len(refs)} held-out clips, {manifest['words']} words; WER %, greedy; {args.threads} thread(s)\n")
    print(header)
    print("| NeMo 2.7.3, f32 | " + " | ".join(f"{manifest['nemo'][c]['wer']:.2f}" for c in LATENCIES.values()) + " | |")
    for name, path in models.items():
        with NemotronModel(path, n_threads=args.threads) as model:
            row(name, lambda latency: word_error_rate(refs, [
                model.transcribe(a, sample_rate=16000, latency_ms=latency, endpointing=False).text for a in audio]),
                sum(len(a) for a in audio) / 16000)
    if args.long:
        stream = long_stream(audio)
        long = manifest["long_stream"]
        print(f"\nThe ten-minute stream: the same clips one after another with {long['gap_seconds']} s pauses "
              f"({stream.size / 16000:.1f} s), streamed in 0.5 s pieces\n")
        print(header)
        print("| NeMo 2.7.3, f32 (cache-aware streaming) | " + " | ".join(
            f"{long['nemo'][c]['wer']:.2f}" for c in LATENCIES.values()) + " | |")
        reference = [" ".join(refs)]
        for name, path in models.items():
            with NemotronModel(path, n_threads=args.threads) as model:
                for label, rule in (("", Endpointing()), (", reset_decoder", Endpointing(reset_decoder=True))):
                    row(name + label, lambda latency: word_error_rate(
                        reference, [streamed(model, stream, latency, rule)]), stream.size / 16000)
    if args.telephone:
        narrow = [telephone(a) for a in audio]
        print("\nThe same clips at 8 kHz, mu-law coded (a telephone line), given at 8 kHz\n")
        print(header)
        print("| NeMo 2.7.3, f32 (brought back to 16 kHz) | " + " | ".join(
            f"{manifest['telephone']['nemo'][c]['wer']:.2f}" for c in LATENCIES.values()) + " | |")
        for name, path in models.items():
            with NemotronModel(path, n_threads=args.threads) as model:
                row(name, lambda latency: word_error_rate(refs, [
                    model.transcribe(a, sample_rate=8000, latency_ms=latency, endpointing=False).text
                    for a in narrow]), sum(len(a) for a in narrow) / 8000)
    return 0


def row(name: str, wer_at: Callable[[int], float], seconds: float) -> None:
    """One table row: the WER at each latency and the real-time factor at 1120 ms."""
    cells, rtf = [], 0.0
    for latency in LATENCIES:
        t0 = time.perf_counter()
        cells.append(f"{wer_at(latency):.2f}")
        if latency == 1120:
            rtf = (time.perf_counter() - t0) / seconds
    print(f"| {name} | " + " | ".join(cells) + f" | {rtf:.4f} |", flush=True)


def streamed(model: Any, audio: Any, latency: int, endpointing: Any) -> str:
    with model.stream(latency, endpointing=endpointing) as stream:
        for i in range(0, len(audio), 8000):
            stream.feed(audio[i:i + 8000])
        stream.finalize()
        return str(stream.transcript().text)


if __name__ == "__main__":
    sys.exit(main())
