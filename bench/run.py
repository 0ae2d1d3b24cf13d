"""The project's benchmark: speed, latency and memory of streaming recognition on this machine.

Feeds a recording (by default 60 s of espeak-ng speech, made once into --cache) to a model in pieces
of one chunk (latency_ms of audio) each, as fast as the engine runs, for every cell of the matrix
weight type x latency x threads x concurrent streams. Each cell runs in a fresh process, so its load
time and peak RSS are its own. The default model is a full-size random-weight model (24 layers,
d_model 1024, written once per type into --cache by nemotron_cpp.testing); --model benches your own.

Per cell: RTF, the wall time of the whole feed over the audio's length (with N streams, the group's
wall time over one stream's audio, so "realtime" (RTF <= 1) means N live streams keep up); the
compute time of each call that ran a chunk (p50, p95); the first partial: the audio position (at
piece granularity) at which text first appeared, plus that call's compute time, the wait of a live
user (with N streams, the slowest stream's); the load time; the peak RSS (VmHWM); the tokens emitted
per encoder frame. It prints a markdown table under a line naming the machine, the engine and ggml
versions, the git commit and the date.

--mode threads feeds each stream from its own Python thread (the engine releases the GIL); --mode
batched pushes each piece to every stream, then computes them together with model.step(streams).
bench/compare.py times other engines' command lines against this package's on the same audio. --nemo-python
times NVIDIA NeMo's own cache-aware streaming of a .nemo file. For a .nemo and a GGUF file with the
same full-size random weights (NeMo needs minutes and several GiB at this size):

    /tmp/nemo-venv/bin/python scripts/make_reference.py --size full --seed 0 --preset full \\
        --clips speech_a --att-context-sizes 70,13 --modes stream --out ~/.cache/nemotron-cpp/reference/full
    python bench/run.py --model ~/.cache/nemotron-cpp/reference/full/model.f32.gguf --streams 1 \\
        --nemo-python /tmp/nemo-venv/bin/python --nemo-model ~/.cache/nemotron-cpp/reference/full/model.nemo

--backend runs every cell on another device (gpu, rpc://HOST:PORT). --capacity MS finds how many
concurrent streams of that latency one model keeps in real time with a p95 chunk time under MS
(batched, doubling the count), and --offline N transcribes the recording repeated N times as one file:
with the first, the figures a GPU is judged by.

Examples:

    python bench/run.py                                  # the whole matrix: hours on a 2-core machine
    python bench/run.py --backend gpu --types q8_0 --threads 1 --streams 1 --capacity 160 --offline 60
    python bench/run.py --types q8_0 --latencies 160 --threads 2 --streams 1,4 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import soundfile

RATE = 16000
# Where every bench script keeps the models and audio it generates: outside the clone, shared by all.
CACHE = Path.home() / ".cache" / "nemotron-cpp" / "bench"
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
TUNE_SECONDS = 6.0  # of speech to tune the random joint on: enough frames, and seconds of work at full size
TARGET_RATE = 0.5  # tokens per encoder frame, as in the project's NeMo references
MODES = {"threads": "a Python thread feeds each stream", "batched": "model.step() computes all streams together"}


# ----------------------------------------------------------------------------------------------------
# Audio and the default model


def make_speech(path: Path, seconds: float) -> None:
    """Writes `seconds` of espeak-ng sentences in four voices and five speeds, as 16 kHz mono int16."""
    parts: List[np.ndarray] = []
    with tempfile.TemporaryDirectory() as tmp:
        raw, wav = Path(tmp) / "raw.wav", Path(tmp) / "16k.wav"
        while sum(map(len, parts)) < seconds * RATE:
            i = len(parts)
            voice = ["en-us", "en", "en-us+f3", "en+m3"][i % 4]
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(150 + 10 * (i % 5)), "-w", str(raw),
                            SENTENCES[i % len(SENTENCES)]], check=True)
            subprocess.run(["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(wav), "pad", "0", "0.3"],
                           check=True)
            parts.append(soundfile.read(wav, dtype="float32")[0])
    soundfile.write(path, np.concatenate(parts)[: int(seconds * RATE)], RATE, subtype="PCM_16")


def speech(cache: Path, seconds: float) -> Path:
    """`seconds` of espeak-ng speech in `cache`, made on first use."""
    path = cache / f"speech-{seconds:g}s.wav"
    if not path.exists():
        make_speech(path, seconds)
    return path


def as_wav16k(path: Path, cache: Path) -> Path:
    """The audio as a 16 kHz mono 16-bit WAV file, which any engine compared (bench/compare.py) can read."""
    info = soundfile.info(str(path))
    if (info.format, info.subtype, info.samplerate, info.channels) == ("WAV", "PCM_16", RATE, 1):
        return path
    out = cache / f"{path.stem}-16k.wav"
    subprocess.run(["sox", str(path), "-r", str(RATE), "-c", "1", "-b", "16", str(out)], check=True)
    return out


def default_models(cache: Path, types: List[str]) -> Dict[str, Path]:
    """The full-size random model in each type; every file has the same weights, joint tuned once."""
    from nemotron_cpp import NemotronModel, testing

    size = testing.FULL
    name = f"random-{size.n_layers}x{size.d_model}"
    paths = {t: cache / f"{name}-{t}.gguf" for t in types}
    missing = [t for t in types if not paths[t].exists()]
    if not missing:
        return paths
    state = testing.random_state_dict(size, seed=0)
    joint = cache / f"{name}-joint.npz"  # so that a type added later gets the same joint
    if not joint.exists():
        audio = soundfile.read(speech(cache, TUNE_SECONDS), dtype="float32")[0]
        probe = testing.write_model(cache / f"{name}-probe.gguf", size=size, weight_type="q8_0", state_dict=state)
        encs = []
        with NemotronModel(probe) as model:  # each latency gives other encoder outputs: tune on them all
            for latency in model.latencies_ms:
                with model.stream(latency, endpointing=False, keep_encoder_output=True) as s:
                    s.feed(audio)
                    s.finalize()
                    encs.append(s.encoder_output)
        probe.unlink()
        tuned = testing.tune_joint(state, size, encs, TARGET_RATE)
        print(f"joint tuned: blank bias {tuned.blank_bias:+.2f}, median {tuned.tokens_per_frame:.2f} tokens per frame",
              file=sys.stderr)
        np.savez(joint, **tuned.tensors)  # type: ignore[arg-type]  # numpy's stub: **kwds as bool
    state.update(np.load(joint))
    for t in missing:
        print(f"writing {paths[t]}", file=sys.stderr)
        testing.write_model(paths[t], size=size, weight_type=t, state_dict=state)
    return paths


# ----------------------------------------------------------------------------------------------------
# Measurements, each in a process of its own: `run.py _cell|_nemo JSON`


def _peak_rss() -> int:
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))


def _feed(stream: Any, pieces: List[np.ndarray], result: Dict[str, Any]) -> None:
    """Feeds one stream, then finalizes it; chunk times and the first partial go into `result`."""
    done = 0
    for piece in pieces + [None]:
        before = stream.n_frames
        t = time.perf_counter()
        update = stream.feed(piece) if piece is not None else stream.finalize()
        spent = time.perf_counter() - t
        done += 0 if piece is None else len(piece)
        if stream.n_frames > before and piece is not None:
            result["chunks"].append(spent)
        # finalize() ends the utterance, so its partial is empty: its new text counts too.
        if result["first"] is None and (update.partial or update.new_text):
            result["first"] = [done / RATE, spent]


def _step(model: Any, streams: List[Any], pieces: List[np.ndarray], result: Dict[str, Any]) -> None:
    """Pushes each piece to every stream, then computes all their ready chunks in one model.step(): one
    time and one first partial for the group."""
    done = 0
    for piece in pieces + [None]:
        before = streams[0].n_frames
        if piece is not None:
            for s in streams:
                s.push(piece)
        t = time.perf_counter()
        updates = model.step(streams, final=piece is None)
        spent = time.perf_counter() - t
        done += 0 if piece is None else len(piece)
        if streams[0].n_frames > before and piece is not None:
            result["chunks"].append(spent)
        if result["first"] is None and any(u.partial or u.new_text for u in updates):
            result["first"] = [done / RATE, spent]


def cell(p: Dict[str, Any]) -> Dict[str, Any]:
    """One matrix cell: load the model, make N streams, feed them the whole audio."""
    if p["cold"]:  # evict the file's pages, so that the load reads the disk
        fd = os.open(p["model"], os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    from nemotron_cpp import NemotronModel

    audio = soundfile.read(p["audio"], dtype="float32")[0]
    t = time.perf_counter()
    model = NemotronModel(p["model"], n_threads=p["threads"], backend=p["backend"], use_mmap=p["mmap"])
    load = time.perf_counter() - t
    step = p["latency"] * RATE // 1000
    pieces = [audio[i:i + step] for i in range(0, len(audio), step)]
    streams = [model.stream(p["latency"], endpointing=False) for _ in range(p["streams"])]
    results: List[Dict[str, Any]] = [{"chunks": [], "first": None} for _ in streams]
    start = time.perf_counter()
    if p["mode"] == "threads":
        workers = [threading.Thread(target=_feed, args=(s, pieces, r)) for s, r in zip(streams, results)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    else:
        results = results[:1]
        _step(model, streams, pieces, results[0])
    wall = time.perf_counter() - start
    firsts = [r["first"] for r in results if r["first"] is not None]
    return {"load_s": load, "wall_s": wall, "chunk_s": [t for r in results for t in r["chunks"]],
            "first_partial": max(firsts, key=sum, default=None), "peak_bytes": _peak_rss(),
            "tokens_per_frame": len(streams[0].tokens) / max(streams[0].n_frames, 1)}


def offline(p: Dict[str, Any]) -> Dict[str, Any]:
    """A long file transcribed at once (model.transcribe: the full-utterance path chunk by chunk)."""
    from nemotron_cpp import NemotronModel

    audio = np.tile(soundfile.read(p["audio"], dtype="float32")[0], p["repeat"])
    t = time.perf_counter()
    model = NemotronModel(p["model"], n_threads=p["threads"], backend=p["backend"], use_mmap=p["mmap"])
    load = time.perf_counter() - t
    start = time.perf_counter()
    transcript = model.transcribe(audio, latency_ms=p["latency"])
    text = transcript.text  # results are lazy: the work is done when they are read
    wall = time.perf_counter() - start
    return {"load_s": load, "wall_s": wall, "audio_s": len(audio) / RATE, "peak_bytes": _peak_rss(),
            "words": len(text.split())}


def nemo(p: Dict[str, Any]) -> Dict[str, Any]:
    """NeMo's cache-aware streaming of one file on the CPU, driven as scripts/make_reference.py does."""
    import torch
    from nemo.collections.asr.models import ASRModel
    from nemo.collections.asr.parts.utils.streaming_utils import CacheAwareStreamingAudioBuffer

    torch.set_num_threads(p["threads"])
    t = time.perf_counter()
    model = ASRModel.restore_from(p["model"], map_location="cpu")
    load = time.perf_counter() - t
    model.eval()
    model.preprocessor.featurizer.dither = 0.0
    model.preprocessor.featurizer.pad_to = 0
    hop = model.cfg.preprocessor.window_stride
    right = round(p["latency"] / (1000 * hop * model.encoder.subsampling_factor)) - 1
    contexts = [list(c) for c in model.encoder.att_context_size_all if c[1] == right]
    if not contexts:
        sys.exit(f"the model has no {p['latency']} ms mode (att_context_size {model.encoder.att_context_size_all})")
    model.encoder.set_default_att_context_size(contexts[0])
    times, first = [], None
    with torch.inference_mode():
        start = time.perf_counter()
        buffer = CacheAwareStreamingAudioBuffer(model=model, online_normalization=False)
        buffer.append_audio_file(p["audio"], stream_id=-1)  # the whole file's features, so timed too
        caches = model.encoder.get_initial_cache_state(batch_size=1)
        hyps = pred = None
        for i, (chunk, lengths) in enumerate(buffer):
            t = time.perf_counter()
            pred, _, *caches, hyps = model.conformer_stream_step(
                processed_signal=chunk, processed_signal_length=lengths, cache_last_channel=caches[0],
                cache_last_time=caches[1], cache_last_channel_len=caches[2], keep_all_outputs=buffer.is_buffer_empty(),
                previous_hypotheses=hyps, previous_pred_out=pred, return_transcription=True,
                drop_extra_pre_encoded=0 if i == 0 else model.encoder.streaming_cfg.drop_extra_pre_encoded)
            times.append(time.perf_counter() - t)
            if first is None and len(hyps[0].y_sequence):
                # Chunks follow each other without overlap: the buffer's index is the audio heard so far.
                first = [min(buffer.buffer_idx, buffer.buffer.size(-1)) * hop, times[-1]]
        wall = time.perf_counter() - start
    return {"load_s": load, "wall_s": wall, "chunk_s": times, "first_partial": first, "peak_bytes": _peak_rss()}


CHILDREN = {"_cell": cell, "_offline": offline, "_nemo": nemo}


def child(argv: List[str], label: str) -> Dict[str, Any]:
    """Runs a measurement process; its result is the last line it prints (NeMo prints before it)."""
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode:
        lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        raise SystemExit(f"{label}: {lines[-1]}")
    result: Dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# ----------------------------------------------------------------------------------------------------
# The run


def machine() -> str:
    """The machine, the engine and ggml versions, the git commit and the date."""
    from nemotron_cpp import system_info

    info = system_info()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True).stdout.strip()

    commit = (git("rev-parse", "--short", "HEAD") or "unknown") + ("-dirty" if git("status", "--porcelain") else "")
    return (f"Machine: {cpu}, {os.cpu_count()} logical CPUs; engine {info.version}, ggml {info.ggml_version}; "
            f"commit {commit}; {time.strftime('%Y-%m-%d')}")


def header(mode: str, audio_s: float, audio_name: str) -> str:
    return f"{machine()}; {audio_s:.1f} s of {audio_name} in chunk-sized pieces, as fast as it runs; {MODES[mode]}"


def row(engine: str, weights: str, latency: Optional[int], threads: int, streams: int,
        r: Dict[str, Any]) -> Dict[str, Any]:
    chunks = np.array(r.get("chunk_s", [])) * 1000
    p50, p95 = (float(np.percentile(chunks, q)) if chunks.size else None for q in (50, 95))
    rtf = r["wall_s"] / r["audio_s"]
    return {"engine": engine, "weights": weights, "latency_ms": latency, "threads": threads, "streams": streams,
            "rtf": rtf, "realtime": rtf <= 1, "chunk_p50_ms": p50, "chunk_p95_ms": p95,
            "first_partial": r.get("first_partial"), "load_ms": r["load_s"] * 1000 if "load_s" in r else None,
            "peak_mib": r["peak_bytes"] / 2**20, "tokens_per_frame": r.get("tokens_per_frame"),
            "wall_s": r["wall_s"], "audio_s": r["audio_s"]}


def table(rows: List[Dict[str, Any]]) -> str:
    def num(v: Optional[float], fmt: str, unit: str = "") -> str:
        return "-" if v is None else format(v, fmt) + unit

    lines = ["| engine | weights | latency | threads | streams | RTF | realtime | chunk p50 | chunk p95 "
             "| first partial | load | peak RSS | tokens/frame |", "|" + "---|" * 13]
    for r in rows:
        first = "-" if r["first_partial"] is None else "{:.2f} s + {:.0f} ms".format(r["first_partial"][0],
                                                                                   r["first_partial"][1] * 1000)
        lines.append(f"| {r['engine']} | {r['weights']} | {num(r['latency_ms'], 'd', ' ms')} | {r['threads']} "
                     f"| {r['streams']} | {r['rtf']:.3f} | {'yes' if r['realtime'] else 'no'} "
                     f"| {num(r['chunk_p50_ms'], '.0f', ' ms')} | {num(r['chunk_p95_ms'], '.0f', ' ms')} | {first} "
                     f"| {num(r['load_ms'], '.0f', ' ms')} | {r['peak_mib']:.0f} MiB "
                     f"| {num(r['tokens_per_frame'], '.2f')} |")
    return "\n".join(lines)


def main() -> None:
    doc = (__doc__ or "").split("\n\n", 1)
    parser = argparse.ArgumentParser(description=doc[0], epilog=doc[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--types", default="f32,q8_0,q4_0", help="weight types of the default model (default: %(default)s)")
    add("--latencies", default="80,160,560,1120", help="chunk latencies in ms (default: %(default)s)")
    add("--threads", default="1,2", help="engine threads of each model (default: %(default)s)")
    add("--streams", default="1,2,4,8", help="concurrent streams (default: %(default)s)")
    add("--mode", choices=tuple(MODES), default="threads",
        help="threads: a Python thread per stream; batched: model.step(streams) (default: %(default)s)")
    add("--model", type=Path, help="bench this GGUF file instead of the random model (--types is then ignored)")
    add("--audio", type=Path, help="bench this recording instead of espeak-ng speech")
    add("--seconds", type=float, default=60.0, help="length of the espeak-ng speech (default: %(default)s)")
    add("--cache", type=Path, default=CACHE,
        help="where the generated models and audio are kept (default: %(default)s)")
    add("--backend", default="cpu", help="the device: cpu, gpu, gpu:N or rpc://HOST:PORT (default: %(default)s)")
    add("--capacity", type=int, metavar="MS",
        help="also find how many concurrent streams of this latency one model keeps in real time with a p95 chunk time "
             "under the latency (model.step batches, doubling the count: 1, 2, 4, ...)")
    add("--max-streams", type=int, default=4096, help="where --capacity stops (default: %(default)s)")
    add("--offline", type=int, metavar="N",
        help="also transcribe the recording repeated N times as one file (model.transcribe), for the offline RTFx")
    add("--cold", action="store_true", help="evict the model file from the page cache before each load")
    add("--no-mmap", action="store_true", help="copy the weights into memory instead of mapping the file")
    add("--nemo-python", metavar="PYTHON", help="a Python with NVIDIA NeMo: also time NeMo, per latency x threads")
    add("--nemo-model", type=Path, metavar="NEMO", help="the .nemo file for --nemo-python")
    add("--json", type=Path, metavar="OUT", help="also write every result to this JSON file")
    args = parser.parse_args()
    if args.nemo_python and not args.nemo_model:
        parser.error("--nemo-python needs --nemo-model")
    from nemotron_cpp import NemotronModel

    if args.mode == "batched" and not hasattr(NemotronModel, "step"):
        parser.exit(1, "--mode batched needs NemotronModel.step(streams), which this nemotron_cpp does not have\n")
    latencies, threads, streams = ([int(v) for v in s.split(",")] for s in (args.latencies, args.threads, args.streams))

    args.cache.mkdir(parents=True, exist_ok=True)
    if args.audio:
        wav, audio_name = as_wav16k(args.audio, args.cache), args.audio.name
    else:
        wav, audio_name = speech(args.cache, args.seconds), "espeak-ng speech"
    audio_s = soundfile.info(str(wav)).frames / RATE
    if args.model:
        try:  # a bad file fails here, with the loader's message, rather than in every cell
            with NemotronModel(args.model) as model:
                models = {model.weight_type: args.model}
        except (OSError, ValueError) as e:
            parser.exit(1, f"--model: {e}\n")
    else:
        models = default_models(args.cache, args.types.split(","))

    rows: List[Dict[str, Any]] = []
    capacity: List[str] = []
    offline_lines: List[str] = []

    def measure(argv: List[str], label: str, engine: str, weights: str, latency: Optional[int], n_threads: int,
                n_streams: int) -> None:
        r = child(argv, label)
        rows.append(row(engine, weights, latency, n_threads, n_streams, {"audio_s": audio_s, **r}))
        print(f"{label}: RTF {rows[-1]['rtf']:.3f}", file=sys.stderr)

    for weights, path in models.items():
        for n_threads in threads:
            for latency in latencies:
                for n in streams:
                    params = {"model": str(path), "audio": str(wav), "latency": latency, "threads": n_threads,
                              "streams": n, "mode": args.mode, "cold": args.cold, "mmap": not args.no_mmap,
                              "backend": args.backend}
                    measure([sys.executable, __file__, "_cell", json.dumps(params)],
                            f"{weights} {latency} ms, {n_threads} threads, {n} streams", "nemotron_cpp", weights,
                            latency, n_threads, n)
            if args.capacity:
                # Real time with a margin: the batch's wall time under the audio's, and 95 % of its steps
                # within one chunk's latency.
                n, best = 1, 0
                while n <= args.max_streams:
                    params = {"model": str(path), "audio": str(wav), "latency": args.capacity, "threads": n_threads,
                              "streams": n, "mode": "batched", "cold": False, "mmap": not args.no_mmap,
                              "backend": args.backend}
                    measure([sys.executable, __file__, "_cell", json.dumps(params)],
                            f"{weights} capacity at {args.capacity} ms: {n} streams", "nemotron_cpp", weights,
                            args.capacity, n_threads, n)
                    if not (rows[-1]["realtime"] and rows[-1]["chunk_p95_ms"] is not None
                            and rows[-1]["chunk_p95_ms"] <= args.capacity):
                        break
                    best, n = n, 2 * n
                capacity.append(f"{weights}, {n_threads} threads: {best} concurrent {args.capacity} ms streams in real "
                                f"time with p95 chunk time under {args.capacity} ms (model.step batches; the table's "
                                f"capacity rows)")
            if args.offline:
                params = {"model": str(path), "audio": str(wav), "latency": max(latencies), "threads": n_threads,
                          "repeat": args.offline, "mmap": not args.no_mmap, "backend": args.backend}
                r = child([sys.executable, __file__, "_offline", json.dumps(params)], f"{weights} offline")
                offline_lines.append(f"{weights}, {n_threads} threads: offline {r['audio_s'] / 60:.1f} min of audio in "
                                     f"{r['wall_s']:.1f} s, RTFx {r['audio_s'] / r['wall_s']:.0f} "
                                     f"(load {r['load_s'] * 1000:.0f} ms, peak RSS {r['peak_bytes'] / 2**20:.0f} MiB)")
                print(offline_lines[-1], file=sys.stderr)
    for n_threads in threads if args.nemo_python else []:
        for latency in latencies:
            params = {"model": str(args.nemo_model), "audio": str(wav), "latency": latency, "threads": n_threads}
            measure([args.nemo_python, __file__, "_nemo", json.dumps(params)],
                    f"NeMo {latency} ms, {n_threads} threads", "NeMo", "f32", latency, n_threads, 1)

    head = header(args.mode, audio_s, audio_name) + f"; backend {args.backend}"
    print(f"{head}\n\n{table(rows)}")
    for line in capacity + offline_lines:
        print(f"\n{line}")
    if args.json:
        args.json.write_text(json.dumps({"header": head, "argv": sys.argv[1:], "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in CHILDREN:
        print(json.dumps(CHILDREN[sys.argv[1]](json.loads(sys.argv[2]))))
    else:
        main()
