"""Real-time factor, per-chunk latency and memory of recognition on a full-size model.

Makes (once, into --cache) 60 s of espeak-ng speech and full-size random-weight models
(24 layers, d_model 1024) in f32, q8_0 and q4_0. A random joint emits a label on nearly every
step, which no trained model does, so the blank logit's bias is first tuned (in numpy, on the
engine's own encoder output) until greedy decoding emits about 0.5 tokens per encoder frame,
the rate NeMo's references use. Then, for each weight type x latency x thread count, a fresh
process streams the audio in chunk-sized pieces and reports the real-time factor (compute
seconds per audio second), the compute time of each chunk (p50 / p95), the load time and the
peak RSS. Prints a markdown table.

    python bench/rtf.py [--cache bench/models] [--seconds 60] [--types f32,q8_0,q4_0]
                        [--latencies 80,160,560,1120] [--threads 1,2]
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
from typing import Dict, List

import numpy as np

SENTENCES = [
    "The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.", "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.", "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.", "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.", "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.", "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.", "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.", "A pot of tea helps to pass the evening.",
]

_CHILD = r"""
import json, sys, time, numpy as np, soundfile
from nemotron_cpp import NemotronModel
path, wav, latency, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
audio, rate = soundfile.read(wav, dtype="float32")
t0 = time.perf_counter()
model = NemotronModel(path, n_threads=threads, backend="cpu")
load = time.perf_counter() - t0
step = int(round(latency / 1000 * rate))
chunk_times = []
with model.stream(latency) as s:
    t_start = time.perf_counter()
    first = True
    for i in range(0, len(audio), step):
        before = s.n_frames
        t = time.perf_counter()
        s.feed(audio[i:i + step])
        if s.n_frames > before:
            chunk_times.append(time.perf_counter() - t)
    s.finalize()
    total = time.perf_counter() - t_start
    tokens = len(s.tokens)
    frames = s.n_frames
peak = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"load": load, "total": total, "chunks": chunk_times, "tokens": tokens, "frames": frames, "peak": peak,
                  "seconds": len(audio) / rate}))
"""


def make_speech(path: Path, seconds: float) -> None:
    parts, total, i = [], 0.0, 0
    tmp = path.with_suffix(".part.wav")
    while total < seconds:
        voice = ["en-us", "en", "en-us+f3", "en+m3"][i % 4]
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(150 + 10 * (i % 5)), "-w", str(tmp),
                        SENTENCES[i % len(SENTENCES)]], check=True)
        out = path.with_name(f"{path.stem}.{i}.wav")
        subprocess.run(["sox", str(tmp), "-r", "16000", "-c", "1", "-b", "16", str(out), "pad", "0", "0.3"], check=True)
        import soundfile

        data, _ = soundfile.read(out, dtype="float32")
        parts.append(data)
        total += len(data) / 16000
        out.unlink()
        i += 1
    tmp.unlink()
    import soundfile

    soundfile.write(path, np.concatenate(parts)[: int(seconds * 16000)], 16000, subtype="PCM_16")


def greedy_rate(w: Dict[str, np.ndarray], enc: np.ndarray, blank: int, max_symbols: int) -> float:
    """Tokens per encoder frame of greedy RNN-T decoding, in numpy."""
    layers = sum(1 for k in w if k.startswith("decoder.prediction.dec_rnn.lstm.weight_ih_l"))
    hidden = w["decoder.prediction.dec_rnn.lstm.weight_hh_l0"].shape[1]
    h = [np.zeros(hidden, np.float32) for _ in range(layers)]
    c = [np.zeros(hidden, np.float32) for _ in range(layers)]
    enc_proj = enc @ w["joint.enc.weight"].T + w["joint.enc.bias"]
    last, pred, emitted = -1, None, 0
    lstm = "decoder.prediction.dec_rnn.lstm."
    for frame in enc_proj:
        for _ in range(max_symbols):
            if pred is None:
                x = np.zeros(w["decoder.prediction.embed.weight"].shape[1], np.float32) if last < 0 \
                    else w["decoder.prediction.embed.weight"][last]
                nh, nc = [], []
                for l in range(layers):
                    g = (w[f"{lstm}weight_ih_l{l}"] @ x + w[f"{lstm}bias_ih_l{l}"] + w[f"{lstm}weight_hh_l{l}"] @ h[l]
                         + w[f"{lstm}bias_hh_l{l}"])
                    i, f, gg, o = np.split(g, 4)
                    cc = c[l] / (1 + np.exp(-f)) + np.tanh(gg) / (1 + np.exp(-i))
                    x = np.tanh(cc) / (1 + np.exp(-o))
                    nh.append(x)
                    nc.append(cc)
                pred = w["joint.pred.weight"] @ x + w["joint.pred.bias"]
            k = int(np.argmax(w["joint.joint_net.2.weight"] @ np.maximum(0, frame + pred) + w["joint.joint_net.2.bias"]))
            if k == blank:
                break
            h, c, last, pred = nh, nc, k, None
            emitted += 1
    return emitted / len(enc)


def make_models(cache: Path, wav: Path, types: List[str]) -> Dict[str, Path]:
    from nemotron_cpp import NemotronModel, testing

    paths = {t: cache / f"full-tuned-{t}.gguf" for t in types}
    if all(p.exists() for p in paths.values()):
        return paths
    import soundfile

    size = testing.FULL
    state = testing.random_state_dict(size, seed=0)
    probe = cache / "full-probe-q8_0.gguf"
    testing.write_model(probe, size=size, layout="nemo", weight_type="q8_0", state_dict=state)
    audio, _ = soundfile.read(wav, dtype="float32")
    with NemotronModel(probe) as model:
        with model.stream(1120, keep_encoder_output=True) as s:
            s.feed(audio)
            s.finalize()
            enc = s.encoder_output
        w = {t.name: model.get_tensor(t.name) for t in model.tensors if t.name.startswith(("decoder.", "joint."))}
    blank = size.vocab
    lo, hi = 0.0, 64.0
    for _ in range(10):  # the emission rate falls as the blank's bias rises
        mid = (lo + hi) / 2
        w["joint.joint_net.2.bias"][blank] = state["joint.joint_net.2.bias"][blank] + mid
        lo, hi = (mid, hi) if greedy_rate(w, enc, blank, size.max_symbols) > 0.5 else (lo, mid)
    state["joint.joint_net.2.bias"][blank] += hi
    w["joint.joint_net.2.bias"][blank] = state["joint.joint_net.2.bias"][blank]
    print(f"blank bias +{hi:.2f}: {greedy_rate(w, enc, blank, size.max_symbols):.2f} tokens per frame", file=sys.stderr)
    probe.unlink()
    for t, p in paths.items():
        testing.write_model(p, size=size, layout="nemo", weight_type=t, state_dict=state)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=Path(__file__).parent / "models")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--types", default="f32,q8_0,q4_0")
    parser.add_argument("--latencies", default="80,160,560,1120")
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    wav = args.cache / f"speech-{int(args.seconds)}s.wav"
    if not wav.exists():
        make_speech(wav, args.seconds)
    types = args.types.split(",")
    models = make_models(args.cache, wav, types)

    rows = []
    for t in types:
        for latency in map(int, args.latencies.split(",")):
            for threads in map(int, args.threads.split(",")):
                out = subprocess.run([sys.executable, "-c", _CHILD, str(models[t]), str(wav), str(latency), str(threads)],
                                     capture_output=True, text=True, check=True)
                r = json.loads(out.stdout)
                chunks = np.array(r["chunks"]) * 1000
                rows.append((t, latency, threads, r["total"] / r["seconds"], np.percentile(chunks, 50),
                             np.percentile(chunks, 95), r["load"], r["peak"], r["tokens"] / r["frames"]))
                print(f"{t} {latency} ms {threads} threads: RTF {rows[-1][3]:.3f}", file=sys.stderr)

    from nemotron_cpp import system_info

    info = system_info()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"Machine: {cpu}, {os.cpu_count()} logical CPUs; engine {info.version}, ggml {info.ggml_version}; "
          f"{args.seconds:.0f} s of espeak-ng speech streamed in chunk-sized pieces; {time.strftime('%Y-%m-%d')}")
    print()
    print("| weights | latency | threads | RTF | chunk p50 | chunk p95 | load | peak RSS | tokens/frame |")
    print("|---|---|---|---|---|---|---|---|---|")
    for t, lat, th, rtf, p50, p95, load, peak, tpf in rows:
        print(f"| {t} | {lat} ms | {th} | {rtf:.3f} | {p50:.0f} ms | {p95:.0f} ms | {load * 1000:.0f} ms | "
              f"{peak / 2**20:.0f} MiB | {tpf:.2f} |")


if __name__ == "__main__":
    main()
