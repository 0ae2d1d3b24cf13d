#!/usr/bin/env python3
"""Do phrase boosting and beam search help? The demo model on words it confuses, with and without hotwords,
greedy and with a beam.

    python bench/boosting.py                     # 160 and 1120 ms; greedy and beam 4; alpha 1 and 4
    python bench/boosting.py --alpha 1 --beam-size 2 --clips 48

The demo model (``nemotron_cpp.demo``) knows seven contacts and ten rooms. The held-out clips here use
names and rooms outside them, in the demo's own commands ("call stella", "remind me to call marcus at
seven", "turn on the attic lights"), spoken by espeak-ng with voice variants training never used
(``TEST_VARIANTS`` of scripts/train_demo_model.py), with light noise. The hotword list holds every new
name and room (a contact list and a floor plan, as an app would pass them), so each clip's phrase
competes with the others. Reported per latency (live streams, chunk by chunk) and setting:

* **hit rate**: clips whose transcript holds their new name or room as words;
* **WER** on the same clips;
* **control WER**: the committed held-out clips (tests/reference/demo, 200 commands without new words)
  with the same hotword list, to show what boosting costs where the phrases are not said;
* **RTF**: compute seconds per audio second over the scenario's clips (one thread; the median of three
  rounds that alternate the settings), and its change against greedy decoding without hotwords.

Prints a markdown table. A benchmark, not a test: the numbers depend on the synthetic voices.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parent.parent
CONTROL = ROOT / "tests" / "reference" / "demo"
# Scenario "new": words outside the demo's grammar.
NAMES = ["stella", "marcus", "olivia", "victor", "sophie", "oscar", "nina", "leo", "helen", "martin", "lucas", "simon"]
ROOMS = ["attic", "nursery", "pantry", "laundry room", "studio", "porch"]
TEMPLATES_NAME = ["call {}", "send a message to {}", "remind me to call {} at seven", "call {} tomorrow"]
TEMPLATES_ROOM = ["turn on the {} lights", "turn off the {} fan", "what is the temperature in the {}",
                  "play music in the {}"]
# Scenario "house": rooms the demo knows, in a house that has only these (the app knows its floor plan), in
# loud noise, where the model confuses them with its other rooms.
HOUSE = ["bedroom", "bathroom", "office", "garage"]
VOICES = ["en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc"]
VARIANTS = ["m4", "f2", "klatt4", "Andy", "belinda", "david", "steph2", "iven3", "robosoft3", "Annie", "grandpa",
            "michel"]  # scripts/train_demo_model.py TEST_VARIANTS: never in training
RATE = 16000


def espeak(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    import soxr

    out = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
                         check=True, capture_output=True).stdout
    data = out.index(b"data") + 8
    pcm = np.frombuffer(out[data:data + (len(out) - data) // 2 * 2], dtype="<i2").astype(np.float32) / 32768
    return soxr.resample(pcm, int.from_bytes(out[24:28], "little"), RATE).astype(np.float32)


def make_clips(n: int, seed: int, scenario: str) -> List[Dict[str, Any]]:
    """n clips, cycling through the scenario's words, each with a random held-out voice."""
    rng = np.random.default_rng(seed)
    clips = []
    if scenario == "new":
        targets = [(w, TEMPLATES_NAME) for w in NAMES] + [(w, TEMPLATES_ROOM) for w in ROOMS]
    else:
        targets = [(w, TEMPLATES_ROOM) for w in HOUSE]
    snr_db = 50.0 if scenario == "new" else 10.0
    for i in range(n):
        word, templates = targets[i % len(targets)]
        text = templates[int(rng.integers(len(templates)))].format(word)
        voice = f"{VOICES[int(rng.integers(len(VOICES)))]}+{VARIANTS[int(rng.integers(len(VARIANTS)))]}"
        speech = espeak(text, voice, int(rng.integers(130, 220)), int(rng.integers(20, 80)))
        speech *= 10 ** (rng.uniform(-12, -2) / 20) / max(float(np.abs(speech).max()), 1e-6)
        audio = np.concatenate([np.zeros(int(0.3 * RATE), np.float32), speech, np.zeros(int(0.5 * RATE), np.float32)])
        level = float(np.sqrt(np.mean(speech ** 2)))
        audio += rng.normal(0, level * 10 ** (-snr_db / 20), audio.size).astype(np.float32)
        clips.append({"text": text, "target": word, "voice": voice, "audio": audio})
    return clips


def recognize(model: Any, audio: Sequence[np.ndarray], latency: int, hotwords: Optional[List[str]],
              alpha: float, beam_size: int) -> Tuple[List[str], float]:
    from nemotron_cpp import Boosting

    boosting = Boosting(alpha=alpha) if hotwords else None
    texts, compute = [], 0.0
    for samples in audio:
        t0 = time.perf_counter()
        with model.stream(latency, hotwords=hotwords, boosting=boosting, endpointing=False, beam_size=beam_size) as s:
            for start in range(0, samples.size, s.chunk_samples):
                s.feed(samples[start:start + s.chunk_samples])
            texts.append(s.finalize().text)
        compute += time.perf_counter() - t0
    return texts, compute


def hit(text: str, target: str) -> bool:
    return f" {target} " in f" {text} "


def main() -> int:
    from nemotron_cpp import NemotronModel
    from nemotron_cpp.demo import demo_model_path, word_error_rate

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=72, help="held-out clips per scenario (default 72)")
    p.add_argument("--alpha", type=float, action="append", help="boosting alpha (repeatable; default 1 and 4)")
    p.add_argument("--beam-size", type=int, default=4, help="the beam search's size (default 4)")
    p.add_argument("--latency", type=int, action="append", help="ms (repeatable; default 160 and 1120)")
    p.add_argument("--scenario", choices=("new", "house"), action="append", help="default: both")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    alphas = args.alpha or [1.0, 4.0]
    latencies = args.latency or [160, 1120]

    manifest = json.loads((CONTROL / "manifest.json").read_text(encoding="utf-8"))
    control_audio = [soundfile.read(CONTROL / c["file"], dtype="float32")[0] for c in manifest["clips"]]
    control_refs = [c["text"] for c in manifest["clips"]]
    control_seconds = sum(a.size for a in control_audio) / RATE
    model = NemotronModel(demo_model_path(log=False), n_threads=1)
    print(f"demo model (q8_0); control: {len(control_audio)} held-out clips ({control_seconds:.0f} s); live streams, "
          f"1 thread; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.2f}\n")
    print("| scenario | latency | decoding | hotwords | hit rate | WER | control WER | RTF | RTF change |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    settings = [(beam, alpha) for beam in (1, args.beam_size) for alpha in [None, *alphas]]
    for scenario in args.scenario or ["new", "house"]:
        clips = make_clips(args.clips, args.seed, scenario)
        audio = [c["audio"] for c in clips]
        hotwords = NAMES + ROOMS if scenario == "new" else HOUSE
        seconds = sum(a.size for a in audio) / RATE
        for latency in latencies:
            texts: Dict[Tuple[int, Optional[float]], List[str]] = {}
            times: Dict[Tuple[int, Optional[float]], List[float]] = {k: [] for k in settings}
            for _ in range(3):  # rounds that alternate the settings, for the timings
                for beam, alpha in settings:
                    out, compute = recognize(model, audio, latency, hotwords if alpha else None, alpha or 1.0, beam)
                    texts[(beam, alpha)] = out
                    times[(beam, alpha)].append(compute / seconds)
            base = float(np.median(times[(1, None)]))
            for beam, alpha in settings:
                control, _ = recognize(model, control_audio, latency, hotwords if alpha else None, alpha or 1.0, beam)
                hits = sum(hit(t, c["target"]) for t, c in zip(texts[(beam, alpha)], clips)) / len(clips)
                wer = word_error_rate([c["text"] for c in clips], texts[(beam, alpha)])
                control_wer = word_error_rate(control_refs, control)
                rtf = float(np.median(times[(beam, alpha)]))
                decoding = "greedy" if beam == 1 else f"beam {beam}"
                name = "none" if alpha is None else f"alpha {alpha:g}"
                change = "" if (beam, alpha) == (1, None) else f"{rtf / base - 1:+.0%}"
                print(f"| {scenario} ({len(clips)} clips, {len(hotwords)} hotwords) | {latency} ms | {decoding} | {name} | "
                      f"{hits:.0%} | {wer:.1f} % | {control_wer:.1f} % | {rtf:.4f} | {change} |", flush=True)
                rows.append({"scenario": scenario, "latency_ms": latency, "beam_size": beam, "alpha": alpha,
                             "hit_rate": hits, "wer": wer, "control_wer": control_wer, "rtf": rtf})
        strongest = texts[(args.beam_size, alphas[-1])]
        misses = [(c["text"], t) for c, t in zip(clips, strongest) if not hit(t, c["target"])][:4]
        print(f"\n{scenario}: some misses at the strongest setting: {misses}\n")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
