#!/usr/bin/env python3
"""Word error rate of the demo model on the committed held-out clips, per weight type and latency.

    python bench/accuracy.py                          # the shipped q8_0 model
    python bench/accuracy.py --nemo model.nemo        # also f32 and q4_0, converted from the checkpoint

The clips (tests/reference/demo, spoken with espeak-ng voice variants that training never used) and
NVIDIA NeMo's WER on the same audio come from scripts/make_demo_assets.py. Each clip is one
utterance, transcribed whole at the given latency (the engine's chunk-by-chunk streaming). Prints a
markdown table; tests/test_demo.py asserts the bars, this only reports.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import soundfile

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "tests" / "reference" / "demo"
LATENCIES = {1120: "70_13", 560: "70_6", 160: "70_1", 80: "70_0"}


def main() -> int:
    from nemotron_cpp import NemotronModel
    from nemotron_cpp.demo import demo_model_path, word_error_rate

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nemo", type=Path, help="the demo model's .nemo checkpoint: also f32 and q4_0 rows")
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
    print(f"{len(refs)} held-out clips, {manifest['words']} words; WER %, greedy; one thread\n")
    print("| weights | " + " | ".join(f"{lat} ms" for lat in LATENCIES) + " | RTF (1120 ms) |")
    print("|---|" + "---|" * (len(LATENCIES) + 1))
    print("| NeMo 2.7.3, f32 | " + " | ".join(f"{manifest['nemo'][c]['wer']:.2f}" for c in LATENCIES.values()) + " | |")
    for name, path in models.items():
        model = NemotronModel(path, n_threads=args.threads)
        cells, rtf = [], 0.0
        for latency in LATENCIES:
            t0 = time.perf_counter()
            hyps = [model.transcribe(a, sample_rate=16000, latency_ms=latency, endpointing=False).text for a in audio]
            if latency == 1120:
                rtf = (time.perf_counter() - t0) / (sum(len(a) for a in audio) / 16000)
            cells.append(f"{word_error_rate(refs, hyps):.2f}")
        print(f"| {name} | " + " | ".join(cells) + f" | {rtf:.4f} |")
        model.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
