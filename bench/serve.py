"""How many live sessions one `nemotron-cpp serve` keeps in real time on this machine.

Starts the server (a separate process, --threads engine threads) on each model, then for a doubling
number of sessions opens that many OpenAI Realtime WebSocket sessions at once, each streaming
--seconds of speech as 16-bit PCM at 24 kHz paced in real time (40 ms appends, starts spread over one
chunk), and commits at the end. The default models are the full-size random-weight files of
bench/run.py (24 layers, d_model 1024, the joint tuned to 0.5 tokens per encoder frame, so the
decoder works as on speech), in q4_0 and q8_0.

Per count: speech to first delta (from the audio position where an utterance's speech starts, as
paced, to its first transcription delta; p50/p95 over utterances), finish lag (from the last append
to the commit's completed transcript; p50/p95 over sessions), the mean batch (chunks per engine
step) and compute time per chunk, from the server's /metrics. A count is *real time* when every
session's finish lag is under --max-lag seconds (default 1.0): a server falling behind piles up
audio, and the lag then grows with the length of the stream. The search stops at the first count
that is not real time. Prints a markdown table under the machine line; --json writes the rows.

    python bench/serve.py                                   # q4_0 and q8_0, 160 ms, 2 threads
    python bench/serve.py --types q8_0 --counts 1,2,4 --seconds 10
    python bench/serve.py --model my.gguf --latency 560
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import soundfile
import soxr

sys.path.insert(0, str(Path(__file__).parent))
from run import CACHE, default_models, machine, speech  # noqa: E402

RATE = 24000  # OpenAI's Realtime default
PIECE = 0.04
QUIET = 3.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(model: Path, threads: int, latency: int) -> "tuple[subprocess.Popen[bytes], int]":
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "nemotron_cpp", "serve", "-q", "-m", str(model), "--port",
                                str(port), "--no-grpc", "--threads", str(threads), "--latency", str(latency),
                                "--max-sessions", "1024"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return process, port
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the server did not start")


def metrics(port: int) -> Dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as response:
        text = response.read().decode()
    return {k: float(v) for k, v in (line.rsplit(" ", 1) for line in text.splitlines() if line and line[0] != "#")}


async def session(port: int, data: bytes, delay: float, out: Dict[str, List[float]]) -> None:
    import websockets.asyncio.client

    piece = int(RATE * PIECE) * 2
    async with websockets.asyncio.client.connect(
            f"ws://127.0.0.1:{port}/v1/realtime?intent=transcription", max_size=None) as ws:
        await ws.recv()
        await asyncio.sleep(delay)
        started = time.monotonic()
        speech_start: Dict[str, int] = {}
        first: Dict[str, float] = {}
        done = asyncio.Event()
        last_sent = [0.0]

        async def send() -> None:
            for k, i in enumerate(range(0, len(data), piece)):
                await asyncio.sleep(max(0.0, started + k * PIECE - time.monotonic()))
                await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                          "audio": base64.b64encode(data[i:i + piece]).decode()}))
            last_sent[0] = time.monotonic()
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            done.set()

        sender = asyncio.create_task(send())
        completed_at = 0.0
        while True:
            try:
                # The commit's item is the last to complete: once the audio is all sent, the session
                # is over when nothing more comes for QUIET seconds.
                event = json.loads(await asyncio.wait_for(ws.recv(), QUIET if done.is_set() else None))
            except asyncio.TimeoutError:
                break
            kind = event["type"]
            if kind == "error":
                raise RuntimeError(event["error"]["message"])
            if kind == "input_audio_buffer.speech_started":
                speech_start[event["item_id"]] = event["audio_start_ms"]
            elif kind.endswith("transcription.delta"):
                first.setdefault(event["item_id"], time.monotonic())
            elif kind.endswith("transcription.completed"):
                completed_at = time.monotonic()
        await sender
        out["lag"].append(completed_at - last_sent[0])
        out["first"] += [first[i] - (started + ms / 1000) for i, ms in speech_start.items() if i in first]


def run_count(port: int, data: bytes, n: int, latency: int) -> Dict[str, Any]:
    out: Dict[str, List[float]] = {"lag": [], "first": []}
    before = metrics(port)

    async def all_sessions() -> None:
        await asyncio.gather(*(session(port, data, k * latency / 1000 / n, out) for k in range(n)))

    wall = time.monotonic()
    asyncio.run(all_sessions())
    wall = time.monotonic() - wall
    after = metrics(port)
    chunks = after["nemotron_chunks_total"] - before["nemotron_chunks_total"]
    steps = after["nemotron_steps_total"] - before["nemotron_steps_total"]
    compute = after["nemotron_compute_seconds_total"] - before["nemotron_compute_seconds_total"]
    return {"sessions": n, "first_p50": float(np.percentile(out["first"], 50)) if out["first"] else None,
            "first_p95": float(np.percentile(out["first"], 95)) if out["first"] else None,
            "lag_p50": float(np.percentile(out["lag"], 50)), "lag_p95": float(np.percentile(out["lag"], 95)),
            "lag_max": float(max(out["lag"])), "batch": chunks / steps if steps else 0.0,
            "per_chunk_ms": 1000 * compute / chunks if chunks else 0.0, "busy": compute / wall}


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a model file (default: the full-size random models)")
    parser.add_argument("--types", default="q4_0,q8_0", help="weight types of the default models")
    parser.add_argument("--latency", type=int, default=160)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of speech each session streams")
    parser.add_argument("--counts", default="1,2,4,8,16,32,64", help="session counts to try, in order")
    parser.add_argument("--max-lag", type=float, default=1.0, help="finish lag (s) under which a count is real time")
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    audio, rate = soundfile.read(speech(args.cache, args.seconds), dtype="float32")
    data = (np.clip(soxr.resample(audio, rate, RATE), -1, 1) * 32767).astype("<i2").tobytes()
    models = {args.model.name: args.model} if args.model else default_models(args.cache, args.types.split(","))
    print(machine())
    print(f"\n{args.seconds:g} s of speech per session, {args.latency} ms chunks, {args.threads} engine threads, "
          f"Realtime WebSocket on loopback; real time: every finish lag < {args.max_lag:g} s\n")
    print("| model | sessions | speech to first delta p50 / p95 | finish lag p50 / p95 / max | batch | "
          "compute per chunk | engine busy | real time | load |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---|")
    rows = []
    for name, path in models.items():
        process, port = start_server(path, args.threads, args.latency)
        try:
            for n in (int(c) for c in args.counts.split(",")):
                row = run_count(port, data, n, args.latency)
                row.update(model=name, realtime=row["lag_max"] < args.max_lag, load=load_average())
                rows.append(row)
                first = (f"{row['first_p50'] * 1000:.0f} / {row['first_p95'] * 1000:.0f} ms"
                         if row["first_p50"] is not None else "-")
                print(f"| {name} | {n} | {first} | {row['lag_p50'] * 1000:.0f} / {row['lag_p95'] * 1000:.0f} / "
                      f"{row['lag_max'] * 1000:.0f} ms | {row['batch']:.1f} | {row['per_chunk_ms']:.0f} ms | "
                      f"{row['busy'] * 100:.0f} % | {'yes' if row['realtime'] else 'no'} | {row['load']} |", flush=True)
                if not row["realtime"]:
                    break
        finally:
            process.terminate()
            process.wait(30)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
