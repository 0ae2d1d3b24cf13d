"""The ``nemotron-cpp`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Tuple, TypeVar, Union

import numpy as np

from . import __version__, hub
from .audio import (MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, AudioInput, decode_audio, is_container, iter_audio,
                    iter_wav_stream, read_wav_header)
from .errors import NemotronError
from .boosting import Boosting, Hotword, parse_hotword_lines
from .chunking import att_right_context
from .demo import DEMO_DOMAIN, demo_model_path, demo_sample
from .formats import FORMATS, format_transcript, plural
from .gguf.layout import FILE_TYPES, LAYOUTS
from .info import system_info
from .model import NemotronModel, _parse_backend
from .results import Transcript
from .segmenter import Endpointing
from .stream import PCM, StreamUpdate

#: The model file used when --model is not given (without either: the demo model).
MODEL_ENV = "NEMOTRON_MODEL"
#: The key `serve` requires when --api-key is not given.
API_KEY_ENV = "NEMOTRON_API_KEY"

#: The exit status of a command whose reader went away (``| head``): what a shell reports for a
#: process killed by SIGPIPE, as other Unix tools are.
EXIT_BROKEN_PIPE = 128 + 13

_T = TypeVar("_T")


def _note(args: argparse.Namespace, message: str) -> None:
    """A notice on stderr (which model, progress, files written, warnings), which --quiet silences."""
    if not args.quiet:
        print(f"nemotron-cpp: {message}", file=sys.stderr)


def _error(message: str) -> None:
    print(f"nemotron-cpp: error: {message}", file=sys.stderr)


def _show_warning(message: Union[Warning, str], category: Any, filename: str, lineno: int, file: Any = None,
                  line: Optional[str] = None) -> None:
    """Python warnings as one line each, without the source line they came from."""
    print(f"nemotron-cpp: warning: {message}", file=sys.stderr)


def _checked(convert: Callable[[str], _T], ok: Callable[[_T], bool], what: str) -> Callable[[str], _T]:
    """An argparse type: ``convert(text)`` where ``ok`` holds, else an error that argparse prefixes with
    the option's flag (``argument --threads: must be a positive integer, not 0``)."""

    def parse(text: str) -> _T:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, not {text}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, not {text}")
        return value

    return parse


def _backend(text: str) -> str:
    _parse_backend(text)
    return text


_THREADS = _checked(int, lambda n: n >= 1, "a positive integer")
_LATENCY = _checked(int, lambda n: n >= 1, "a positive number of milliseconds")
_RATE = _checked(int, lambda r: MIN_SAMPLE_RATE <= r <= MAX_SAMPLE_RATE,
                 f"a sample rate from {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz")
_SECONDS = _checked(float, lambda s: 0 < s < float("inf"), "a number of seconds > 0")
_ALPHA = _checked(float, lambda a: 0 < a <= 100, "a number > 0 and <= 100")
_SECONDS_OR_ZERO = _checked(float, lambda s: 0 <= s < float("inf"), "a number of seconds >= 0")
_BACKEND = _checked(_backend, lambda _: True, "auto, cpu, gpu, gpu:N or rpc://HOST:PORT")
_SERVED_BACKEND = _checked(_backend, lambda text: not text.lower().startswith("rpc://"), "auto, cpu, gpu or gpu:N")
_PORT = _checked(int, lambda n: 0 < n < 65536, "a port number from 1 to 65535")
_PORT_OR_FREE = _checked(int, lambda n: 0 <= n < 65536, "a port number from 0 to 65535")


def _format_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _existing(path: str, message: str) -> str:
    """``path``, or a FileNotFoundError with ``message`` (which says where the path came from)."""
    if not os.path.exists(path):
        raise FileNotFoundError(message)
    return path


def _fetch(args: argparse.Namespace, name: str, filename: Optional[str] = None, revision: Optional[str] = None) -> str:
    """The local path of a model file from the Hub (huggingface_hub's progress bar on stderr, unless --quiet)."""
    if args.quiet:  # the process is the command line's: huggingface_hub's bars and warnings are its to silence
        from huggingface_hub.utils.tqdm import disable_progress_bars

        disable_progress_bars()
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    return str(hub.download(name, filename, revision))


def _model_file(args: argparse.Namespace, value: str, missing: str) -> str:
    """The model file ``value`` names: a file, or the fetched file of a registered model name; else a
    FileNotFoundError with ``missing`` (which says where the value came from), listing the known names
    when the value does not look like a path."""
    if os.path.exists(value) or hub.looks_like_path(value):
        return _existing(value, missing)
    if hub.is_known(value):
        return _fetch(args, value)
    names = ", ".join(m.name for m in hub.known_models())
    raise FileNotFoundError(f"{missing} (and it is not a known model name: {names})")


def _info(args: argparse.Namespace) -> int:
    if args.model_file is not None and args.model is not None:
        raise ValueError("give the model once: as MODEL or with --model")
    if args.model_file is None and args.model is None:
        info = system_info()
        if args.json:
            print(json.dumps(dataclasses.asdict(info), indent=2))
        else:
            print(info)
        return 0
    path = (_model_file(args, args.model_file, f"{args.model_file}: no such file") if args.model is None
            else _model_file(args, args.model, f"--model {args.model}: no such file"))
    with NemotronModel(path, backend=args.backend, n_threads=args.threads) as model:
        hp = model.hparams
        if args.json:
            out = {
                "path": model.path,
                "name": model.name,
                "layout": model.layout,
                "weight_type": model.weight_type,
                "backend": model.backend,
                "n_threads": model.n_threads,
                "file_size": model.file_size,
                "weight_bytes": model.weight_bytes,
                "uses_mmap": model.uses_mmap,
                "repacked_bytes": model.repacked_bytes,
                "hparams": dataclasses.asdict(hp),
                "languages": list(model.languages),
                "default_language": model.default_language,
                "tensor_groups": [dataclasses.asdict(g) for g in model.tensor_groups],
            }
            if args.vocab:
                out["vocabulary"] = list(model.vocabulary)
            print(json.dumps(out, indent=2, ensure_ascii=False))
            return 0
        layout = {"nemo": "nemo (nemotron-asr.cpp port)", "asr": "asr (NVIDIA NeMo-Speech.cpp)"}[model.layout]
        print(f"model        {model.path} ({_format_bytes(model.file_size)})")
        print(f"name         {model.name}")
        print(f"layout       {layout}")
        print(f"weights      {model.weight_type}, {_format_bytes(model.weight_bytes)}"
              f"{', used in place from the mapped file' if model.uses_mmap else ''}"
              f"{f', {_format_bytes(model.repacked_bytes)} repacked for the CPU' if model.repacked_bytes else ''}")
        print(f"backend      {model.backend}, {plural(model.n_threads, 'thread')}")
        print(f"encoder      {hp.n_layers} conformer layers, d_model {hp.d_model}, {hp.n_heads} heads, "
              f"d_ff {hp.d_ff}, conv kernel {hp.conv_kernel_size}, subsampling x{hp.subsampling_factor}")
        print(f"streaming    left context {hp.att_left_context}, right contexts "
              f"{', '.join(map(str, hp.att_right_contexts))}")
        print(f"decoder      {hp.pred_num_layers}-layer LSTM {hp.pred_hidden}, joint {hp.joint_dim}, "
              f"vocabulary {hp.vocab_size - 1} + blank, at most {hp.max_symbols_per_step} symbols per frame")
        print(f"frontend     {hp.sample_rate} Hz, {hp.n_mels} mels, window {hp.win_length}, hop {hp.hop_length}, "
              f"n_fft {hp.n_fft}")
        if model.languages:
            print(f"languages    {', '.join(model.languages)} (default {model.default_language}; "
                  f"{hp.num_prompts} prompts)")
        print("tensors")
        for g in model.tensor_groups:
            print(f"  {g.name:<13} {g.type:<5} {g.n_tensors:4d} tensors {g.n_params:>13,} params "
                  f"{_format_bytes(g.n_bytes):>10}")
        if args.vocab:
            for i, piece in enumerate(model.vocabulary):
                print(f"{i}\t{piece}")
    return 0


def _download(args: argparse.Namespace) -> int:
    print(_fetch(args, args.name, args.filename, args.revision))
    return 0


def _writing(args: argparse.Namespace, write: Callable[[], Path]) -> Path:
    """``write()``, its refusal to replace DST said in the command's terms."""
    _existing(args.src, f"{args.src}: no such file")
    try:
        return write()
    except FileExistsError:
        raise FileExistsError(f"{args.dst} exists; pass --force to overwrite it") from None


def _convert(args: argparse.Namespace) -> int:
    # Imported here: converting needs the optional gguf and PyYAML packages, the rest of the CLI does not.
    from .gguf.convert import convert_nemo

    out = _writing(args, lambda: convert_nemo(args.src, args.dst, layout=args.layout, weight_type=args.weight_type,
                                              force=args.force))
    print(f"wrote {out} ({_format_bytes(out.stat().st_size)}, layout {args.layout}, {args.weight_type})")
    return 0


def _quantize(args: argparse.Namespace) -> int:
    from .gguf.quantize import quantize_gguf

    out = _writing(args, lambda: quantize_gguf(args.src, args.dst, weight_type=args.weight_type, force=args.force))
    print(f"wrote {out} ({_format_bytes(out.stat().st_size)}, {args.weight_type})")
    return 0


def _load(args: argparse.Namespace, announce_demo: bool = True) -> NemotronModel:
    if args.model is not None:
        path = _model_file(args, args.model, f"--model {args.model}: no such file")
    elif os.environ.get(MODEL_ENV):
        value = os.environ[MODEL_ENV]
        path = _model_file(args, value, f"${MODEL_ENV} names {value}, which does not exist")
    else:
        if announce_demo:
            _note(args, f"no --model or ${MODEL_ENV}: using the demo model ({DEMO_DOMAIN.split(':')[0]} only; "
                        f"-m {hub.RECOMMENDED_MODEL.name} fetches NVIDIA's model for general English)")
        path = str(demo_model_path(log=False))
    return NemotronModel(path, backend=args.backend, n_threads=args.threads)


def _check_latency(model: NemotronModel, latency: Optional[int]) -> None:
    """Refuses a --latency the model cannot run, in the option's words (the model's would say latency_ms)."""
    att_right_context(model.hparams, latency, name="--latency")


class _ProgressBar:
    """A one-line bar on stderr, redrawn in place."""

    def __init__(self, name: str, out: IO[str]) -> None:
        self.name, self.out, self.drawn = name, out, False
        self.last: Optional[float] = None

    def __call__(self, done: float, total: Optional[float]) -> None:
        if done == self.last:
            return
        self.last = done
        if total:
            filled = int(30 * min(done / total, 1.0))
            bar = f"[{'#' * filled}{'.' * (30 - filled)}] {100 * min(done / total, 1.0):3.0f}% {done:.0f}/{total:.0f} s"
        else:
            bar = f"{done:.0f} s"
        self.out.write(f"\r{self.name} {bar}")
        self.out.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.out.write("\n")
            self.out.flush()


def _recognize(model: NemotronModel, path: str, args: argparse.Namespace, endpointing: Endpointing,
               bar: Optional[_ProgressBar], hotwords: Optional[List[Hotword]], boosting: Optional[Boosting]) -> Transcript:
    """One FILE (``-``: stdin, a file or raw PCM at --rate) through the model; warnings about it are shown
    after its progress bar."""
    with warnings.catch_warnings(record=True) as caught:
        try:
            audio: AudioInput = path
            rate = None
            if path == "-":
                audio = sys.stdin.buffer.read()
                rate = None if is_container(audio[:4]) else args.rate
            return model.transcribe(audio, sample_rate=rate, latency_ms=args.latency, endpointing=endpointing,
                                    progress=bar, language=args.language, hotwords=hotwords, boosting=boosting,
                                    beam_size=args.beam_size)
        finally:
            if bar is not None:
                bar.close()
            for w in caught:
                _show_warning(w.message, w.category, w.filename, w.lineno)


def _transcribe(args: argparse.Namespace) -> int:
    if len(args.files) > 1 and args.format in ("srt", "vtt") and args.output_dir is None:
        raise ValueError(f"{args.format} output of several files needs --output-dir")
    if args.files.count("-") > 1:
        raise ValueError("- (stdin) can be given once")
    show_progress = not args.quiet and (sys.stderr.isatty() if args.progress is None else args.progress)
    endpointing = Endpointing(silence=args.silence, min_utterance=args.min_utterance,
                              reset_decoder=args.reset_decoder)
    failed = 0
    hotwords, boosting = _hotwords(args)
    with _load(args) as model:
        _check_latency(model, args.latency)
        if hotwords:
            model.check_hotwords(hotwords)  # phrases the vocabulary cannot spell fail here, once
        results: List[Dict[str, Any]] = []
        for path in args.files:
            label = "stdin" if path == "-" else path
            try:
                transcript = _recognize(model, path, args, endpointing,
                                        _ProgressBar(Path(label).name, sys.stderr) if show_progress else None,
                                        hotwords, boosting)
            except (OSError, NemotronError, ValueError) as e:
                # The file's error (naming the file, unless it already does), then the next file; the exit
                # status says that one failed.
                failed += 1
                message = str(e) if path != "-" and path in str(e) else f"{label}: {e}"
                _error(message)
                if args.format == "json" and args.output_dir is None:
                    results.append({"file": path, "error": message})
                continue
            if args.output_dir is not None:
                out = Path(args.output_dir) / f"{Path(label).stem}.{'txt' if args.format == 'text' else args.format}"
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(format_transcript(transcript, args.format), encoding="utf-8")
                _note(args, f"wrote {out}")
            elif args.format == "json":
                results.append({"file": path, **dataclasses.asdict(transcript)})
            else:
                if len(args.files) > 1:
                    print(f"==> {path} <==")
                sys.stdout.write(format_transcript(transcript, args.format))
        if results:
            print(json.dumps(results[0] if len(args.files) == 1 else results, ensure_ascii=False, indent=2))
    return 1 if failed else 0


def _stdin_pieces(head: bytes, rate: int, seconds: float) -> Iterator[bytes]:
    """Raw PCM from stdin, ``head`` (already read) first, in pieces of ``seconds`` as they arrive."""
    size = 2 * max(1, int(rate * seconds))
    data = head + sys.stdin.buffer.read(size - len(head))
    while data:
        yield data[: len(data) - len(data) % 2]
        data = sys.stdin.buffer.read(size)


def _stdin_audio(rate: int, model_rate: int) -> Tuple[int, Callable[[float], Iterator[PCM]]]:
    """What stdin holds: its sample rate and its pieces of a given length. A WAV stream is read as it
    arrives (its header says the rate, channels and sample format); any other file libsndfile reads is
    read whole and decoded; anything else is raw 16-bit mono PCM at ``rate``."""
    stdin = sys.stdin.buffer
    head = stdin.read(4)
    if head == b"RIFF":
        header = read_wav_header(stdin, head)
        return header.sample_rate, lambda seconds: iter_wav_stream(
            stdin, header, max(1, int(header.sample_rate * seconds)))
    if is_container(head):
        data = head + stdin.read()
        return model_rate, lambda seconds: _file_pieces(data, model_rate, seconds, pace=False)
    return rate, lambda seconds: _stdin_pieces(head, rate, seconds)


def _file_pieces(source: AudioInput, rate: int, seconds: float, pace: bool) -> Iterator[np.ndarray]:
    start = time.monotonic()
    for block, done, _ in iter_audio(source, None, rate, block_seconds=seconds):
        if pace:  # hand each piece over when it would have been recorded
            time.sleep(max(0.0, start + done - time.monotonic()))
        if block.size:
            yield block


def _stream(args: argparse.Namespace) -> int:
    with _load(args) as model:
        _live(model, args.file, args)
    return 0


def _demo(args: argparse.Namespace) -> int:
    audio, text = demo_sample()
    with _load(args, announce_demo=False) as model:
        _note(args, f"model: {Path(model.path).name} ({_format_bytes(model.file_size)}), trained on synthetic "
                    f"speech: {DEMO_DOMAIN}")
        _note(args, f"audio: {audio.name}, a voice the model was not trained on, "
                    f"{'fed as fast as it is recognized' if args.no_pace else 'played in real time'} "
                    f"at {args.latency} ms latency")
        _live(model, str(audio), args)
    _note(args, f"expected: {' / '.join(text.splitlines())}")
    return 0


def _live(model: NemotronModel, file: Optional[str], args: argparse.Namespace) -> None:
    """Streams stdin or a file (paced unless --no-pace) through the model, partials redrawn in place."""
    _check_latency(model, args.latency)
    tty = sys.stdout.isatty()
    endpointing = Endpointing(silence=args.silence, min_utterance=args.min_utterance,
                              reset_decoder=args.reset_decoder)
    model_rate = model.hparams.sample_rate
    if file is None:
        rate, pieces = _stdin_audio(args.rate, model_rate)
    else:
        rate, pieces = model_rate, lambda seconds: _file_pieces(file, model_rate, seconds, not args.no_pace)
    hotwords, boosting = _hotwords(args)
    stream = model.stream(args.latency, sample_rate=rate, endpointing=endpointing, language=args.language,
                          hotwords=hotwords, boosting=boosting, beam_size=args.beam_size)
    seconds = stream.chunk_samples / model_rate

    def show(update: StreamUpdate) -> None:
        for segment in update.segments:
            sys.stdout.write(f"\r\x1b[K{segment.text}\n" if tty else f"{segment.text}\n")
        if tty:
            sys.stdout.write(f"\r\x1b[K{update.partial}")
        sys.stdout.flush()

    with stream:
        for piece in pieces(seconds):
            show(stream.feed(piece))
        show(stream.finalize())


def _bench(args: argparse.Namespace) -> int:
    from .bench import bench, markdown_table

    start = time.perf_counter()
    model = _load(args)
    load = time.perf_counter() - start
    with model:
        for latency in args.latency or ():
            _check_latency(model, latency)
        rate = model.hparams.sample_rate
        if args.file is not None:
            audio = decode_audio(args.file, out_rate=rate)
        else:  # speech-shaped noise: bursts of low-passed noise with pauses, 4 Hz syllable rhythm
            rng = np.random.default_rng(0)
            n = int(args.seconds * rate)
            noise = np.convolve(rng.standard_normal(n), np.ones(8) / 8, mode="same")
            envelope = np.clip(np.sin(2 * np.pi * 4 * np.arange(n) / rate), 0, None) * (rng.random(n // rate + 1)[
                np.arange(n) // rate] > 0.2)
            audio = (0.3 * noise * envelope).astype(np.float32)
        latencies = args.latency or list(model.latencies_ms)
        rows = bench(model, audio, latencies)
        sys.stdout.write(markdown_table(model, rows, len(audio) / rate, load))
    return 0


def _rpc_server(args: argparse.Namespace) -> int:
    from . import _lib

    kind, index, _ = _parse_backend(args.backend)
    # The engine serves inside one C call until the process ends: let Ctrl-C end it as it would any server.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _lib.rpc_serve(f"{args.host}:{args.port}", kind, index, args.threads or 0)
    return 1  # not reached: rpc_serve returns only by raising


def _transcribe_dataset(args: argparse.Namespace) -> int:
    try:
        from .ray import transcribe_corpus
    except ImportError:
        raise ImportError('transcribe-dataset needs the ray extra: pip install "nemotron-cpp[ray]"') from None
    with _load(args) as model:  # a model that cannot load fails here, not in every worker
        _check_latency(model, args.latency)
        path = model.path
    start = time.monotonic()

    def show(counts: Dict[str, Any]) -> None:
        if args.quiet:
            return
        hours, elapsed = counts["audio_seconds"] / 3600, time.monotonic() - start
        sys.stderr.write(f"\r{counts['skipped'] + counts['done']}/{counts['files']} files ({counts['errors']} errors), "
                         f"{hours:.2f} h of audio in {elapsed:.0f} s ({hours / max(elapsed / 3600, 1e-9):.0f} h/h)")
        sys.stderr.flush()

    counts = transcribe_corpus(args.input, args.output, model=path, address=args.address,
                               concurrency=args.workers, num_cpus_per_worker=args.cpus_per_worker,
                               batch_size=args.batch_size, latency_ms=args.latency, language=args.language,
                               progress=show)
    if counts["done"] and not args.quiet:
        sys.stderr.write("\n")
    _note(args, f"{args.output}: {counts['done']} files transcribed ({counts['errors']} with an error), "
                f"{counts['skipped']} already there")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .server import Limits, ServerConfig, serve

    limits = Limits(max_sessions=args.max_sessions, max_buffer_seconds=args.max_buffer,
                    idle_timeout=args.idle_timeout, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024))
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    with _load(args) as model:
        _check_latency(model, args.latency)
        config = ServerConfig(host=args.host, port=args.port, grpc_port=None if args.no_grpc else args.grpc_port,
                              api_key=api_key, limits=limits, stream_latency_ms=args.latency, language=args.language)
        name = Path(model.path).name

        def ready(port: int, grpc_port: Optional[int]) -> None:
            where = f"http://{args.host}:{port}"
            _note(args, f"serving {name} on {model.backend}: OpenAI API {where}/v1 (Realtime: "
                        f"ws://{args.host}:{port}/v1/realtime?intent=transcription)"
                        + (f", Riva gRPC {args.host}:{grpc_port}" if grpc_port else "")
                        + ("; API key required" if api_key else "") + "; Ctrl-C stops")

        serve(model, config, on_ready=ready)
    return 0


def _add_model_options(parser: argparse.ArgumentParser,
                       model_help: str = f"the GGUF model file or a known model name (see download; default: "
                                         f"${MODEL_ENV}, else the demo model)") -> None:
    parser.add_argument("-m", "--model", help=model_help)
    parser.add_argument("--backend", type=_BACKEND, default="auto",
                        help="auto, cpu, gpu, gpu:N or rpc://HOST:PORT (default: auto)")
    parser.add_argument("--threads", type=_THREADS, default=None, metavar="N",
                        help="CPU threads (default: one per physical core)")
    _add_quiet_option(parser)


def _add_quiet_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no notices on stderr (which model, progress, files written, warnings); errors still")


def _add_latency_option(parser: argparse.ArgumentParser, default: Optional[int], text: str) -> None:
    parser.add_argument("--latency", type=_LATENCY, default=default, metavar="MS", help=text)


def _add_language_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--language", metavar="CODE", default=None,
                        help="a multilingual model's language, e.g. de-DE (see info; default: auto, its own detection)")


def _add_hotword_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hotword", action="append", default=[], metavar="PHRASE",
                        help="a word or phrase to boost, optionally followed by ' :WEIGHT' (repeatable)")
    parser.add_argument("--hotwords", metavar="FILE",
                        help="phrases to boost, one per line, each optionally followed by ' :WEIGHT' (its score "
                             "instead of 1.0); # starts a comment")
    parser.add_argument("--hotword-alpha", type=_ALPHA, default=Boosting().alpha, metavar="X",
                        help=f"how strongly phrases are boosted (default: {Boosting().alpha:g})")
    parser.add_argument("--beam-size", type=_THREADS, default=1, metavar="N",
                        help="beam search with N hypotheses (NeMo's malsd_batch; default 1: greedy decoding); "
                             "--format json lists the N best")


def _hotwords(args: argparse.Namespace) -> Tuple[Optional[List[Hotword]], Optional[Boosting]]:
    """The --hotword/--hotwords phrases and their settings (None, None: no boosting)."""
    phrases = parse_hotword_lines(args.hotword, "--hotword")
    if args.hotwords:
        with open(args.hotwords, encoding="utf-8") as f:
            phrases += parse_hotword_lines(f.read().splitlines(), args.hotwords)
    if not phrases:
        return None, None
    return phrases, Boosting(alpha=args.hotword_alpha)


def _add_endpoint_options(parser: argparse.ArgumentParser) -> None:
    defaults = Endpointing()
    parser.add_argument("--silence", type=_SECONDS, default=defaults.silence, metavar="SECONDS",
                        help=f"silence after speech that ends an utterance (default: {defaults.silence})")
    parser.add_argument("--min-utterance", type=_SECONDS_OR_ZERO, default=defaults.min_utterance, metavar="SECONDS",
                        help=f"shortest utterance the silence may end (default: {defaults.min_utterance})")
    parser.add_argument("--reset-decoder", action="store_true",
                        help="start the prediction network over at each endpoint, decoding each utterance on its "
                             "own (NeMo carries it through the whole stream)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nemotron-cpp",
        description="Run NVIDIA's nemotron-speech-streaming recognizer on a C++/ggml engine.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    info = sub.add_parser("info", help="describe a model file, or this system without one",
                          description="Describe a model file, or without one the engine build and this system.")
    info.add_argument("model_file", nargs="?", metavar="MODEL",
                      help="a GGUF model file of either layout, or a known model name (see download)")
    _add_model_options(info, model_help="the model file, the same as MODEL")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.add_argument("--vocab", action="store_true", help="also list the vocabulary")
    info.set_defaults(run=_info)

    transcribe = sub.add_parser(
        "transcribe", help="transcribe audio files",
        description="Transcribe audio files (WAV, FLAC, OGG, MP3 where libsndfile has it; any rate, any channels). "
                    "A file that cannot be read is reported on stderr and the others are still transcribed; the "
                    "exit status is then 1, and with --format json the file's entry is {\"file\", \"error\"}.",
        epilog="example: sox talk.mp3 -t wav - | nemotron-cpp transcribe -")
    transcribe.add_argument("files", nargs="+", metavar="FILE",
                            help="audio files; - reads stdin (a file, or raw 16-bit mono PCM at --rate)")
    _add_model_options(transcribe)
    _add_latency_option(transcribe, None, "attention chunk: 80, 160, 560 or 1120 ms (default: 1120, the most accurate)")
    transcribe.add_argument("--rate", type=_RATE, default=None, metavar="HZ",
                            help="sample rate of raw PCM on stdin (default: 16000; a file carries its own)")
    transcribe.add_argument("-f", "--format", choices=tuple(FORMATS), default="text",
                            help="text (a line per segment), json, srt or vtt (default: text)")
    transcribe.add_argument("-o", "--output-dir", metavar="DIR", help="write FILE's stem + .txt/.json/.srt/.vtt here")
    progress = transcribe.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None,
                          help="show a progress bar on stderr (default: when stderr is a terminal)")
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    _add_endpoint_options(transcribe)
    _add_language_option(transcribe)
    _add_hotword_options(transcribe)
    transcribe.set_defaults(run=_transcribe)

    dataset = sub.add_parser(
        "transcribe-dataset", help="transcribe a corpus on a Ray cluster",
        description="Transcribe every audio file of a folder, a glob or a manifest (JSONL as NeMo writes them, CSV "
                    "or Parquet, with a path or audio_filepath column) with Ray Data: one model per worker, a row per "
                    "file in OUTPUT (text, segments, words, duration, error). A file that cannot be read gets its "
                    "error in its row. Files already in OUTPUT are skipped, so a stopped job resumes. Needs the "
                    "ray extra: pip install \"nemotron-cpp[ray]\".",
        epilog="example: ray start --head; nemotron-cpp transcribe-dataset calls/ --output calls.parquet "
               "--address auto --workers 8")
    dataset.add_argument("input", metavar="INPUT", help="a folder, a glob (quoted) or a manifest")
    dataset.add_argument("--output", required=True, metavar="OUT",
                         help="a .jsonl file (rows appended as they finish) or .parquet file (written at the end)")
    dataset.add_argument("--address", default=None,
                         help="the Ray cluster's address (auto: the one `ray start` runs here; default: a local "
                              "one for this job)")
    dataset.add_argument("--workers", type=_THREADS, default=1, metavar="N", help="model workers (default: 1)")
    dataset.add_argument("--cpus-per-worker", type=_THREADS, default=1, metavar="N",
                         help="CPUs and threads of each worker (default: 1)")
    dataset.add_argument("--batch-size", type=_THREADS, default=8, metavar="N", help="files per batch (default: 8)")
    _add_model_options(dataset)
    _add_latency_option(dataset, None, "attention chunk: 80, 160, 560 or 1120 ms (default: 1120, the most accurate)")
    _add_language_option(dataset)
    dataset.set_defaults(run=_transcribe_dataset)

    stream = sub.add_parser(
        "stream", help="live transcription of stdin or of a file played in real time",
        description="Stream audio through the model: stdin (a WAV stream as it arrives, another audio file, or "
                    "raw 16-bit little-endian mono PCM), or a file paced in real time. Partials are redrawn in "
                    "place on a terminal; each finished utterance is printed on its own line.",
        epilog="example: arecord -q -f S16_LE -r 16000 -c 1 | nemotron-cpp stream -m model.gguf")
    stream.add_argument("file", nargs="?", metavar="FILE", help="an audio file (default: stdin)")
    _add_model_options(stream)
    _add_latency_option(stream, 160, "chunk latency: 80, 160, 560 or 1120 ms (default: 160)")
    stream.add_argument("--rate", type=_RATE, default=16000, metavar="HZ",
                        help="sample rate of raw PCM on stdin (default: 16000; a WAV stream carries its own)")
    stream.add_argument("--no-pace", action="store_true", help="feed FILE as fast as it is recognized")
    _add_endpoint_options(stream)
    _add_language_option(stream)
    _add_hotword_options(stream)
    stream.set_defaults(run=_stream)

    demo = sub.add_parser(
        "demo", help="stream the bundled sample through the demo model, with live partials",
        description="Stream the recording that ships with the package through the built-in demo model (or "
                    "--model), paced in real time, partials redrawn in place; then print the text it should give.")
    _add_model_options(demo)
    _add_latency_option(demo, 160, "chunk latency: 80, 160, 560 or 1120 ms (default: 160)")
    demo.add_argument("--no-pace", action="store_true", help="feed the sample as fast as it is recognized")
    _add_endpoint_options(demo)
    demo.set_defaults(run=_demo, rate=16000, language=None, hotword=[], hotwords=None, hotword_alpha=Boosting().alpha,
                      beam_size=1)

    bench = sub.add_parser(
        "bench", help="measure speed and memory on this machine",
        description="Stream a recording (or generated speech-shaped noise) through a model in chunk-sized pieces "
                    "and print real-time factor, per-chunk compute time, time to first partial, load time and "
                    "peak memory as a markdown table.")
    bench.add_argument("file", nargs="?", metavar="FILE", help="an audio file (default: generated audio)")
    _add_model_options(bench)
    bench.add_argument("--latency", type=_LATENCY, action="append", metavar="MS",
                       help="a latency to measure; repeat for several (default: every one the model has)")
    bench.add_argument("--seconds", type=_SECONDS, default=30.0, help="length of the generated audio (default: 30)")
    bench.set_defaults(run=_bench)

    known = "; ".join(f"{m.name} ({m.size / 1e6:.0f} MB, {m.description})" for m in hub.known_models())
    download = sub.add_parser(
        "download", help="fetch a model file from the Hugging Face Hub and print its path",
        description="Fetch a model file into the Hugging Face cache (unless it is there already) and print its path. "
                    "NAME is a known model, pinned to a revision and checked against its size and sha256; any other "
                    "GGUF file is fetched, unchecked, by REPO_ID --filename FILE. HF_HOME, HF_HUB_CACHE, "
                    "HF_HUB_OFFLINE and HF_TOKEN apply as for any Hub file.",
        epilog=f"known models: {known}")
    download.add_argument("name", metavar="NAME", help="a known model name, or a Hugging Face repo id (owner/name)")
    download.add_argument("--filename", metavar="FILE", help="the file to fetch from REPO_ID")
    download.add_argument("--revision", metavar="REV", help="a branch, tag or commit of REPO_ID (default: main)")
    _add_quiet_option(download)
    download.set_defaults(run=_download)

    rpc = sub.add_parser(
        "rpc-server", help="serve this machine's device to other processes and machines (ggml RPC)",
        description="Serve a device of this machine (its GPU, or its CPU) through ggml's RPC protocol, for models "
                    "loaded elsewhere with --backend rpc://HOST:PORT (or backend=\"rpc://HOST:PORT\"). Serves one client "
                    "at a time until stopped. The protocol has no authentication or encryption: listen on loopback "
                    "or a trusted network only.")
    rpc.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: 127.0.0.1)")
    rpc.add_argument("--port", type=_PORT, default=50052, help="the port to listen on (default: 50052)")
    rpc.add_argument("--backend", type=_SERVED_BACKEND, default="auto",
                     help="the device to serve: auto, cpu, gpu or gpu:N (default: auto)")
    rpc.add_argument("--threads", type=_THREADS, default=None, metavar="N",
                     help="CPU threads, when serving the CPU (default: one per physical core)")
    _add_quiet_option(rpc)
    rpc.set_defaults(run=_rpc_server)

    serve = sub.add_parser(
        "serve", help="serve the model to voice agents: OpenAI HTTP and Realtime APIs, Riva gRPC",
        description="Serve the model over OpenAI's transcription API (POST /v1/audio/transcriptions), OpenAI's "
                    "Realtime API in transcription mode (WebSocket /v1/realtime?intent=transcription) and NVIDIA "
                    "Riva's gRPC speech recognition, batching every session through the model. Needs the server "
                    "extra: pip install \"nemotron-cpp[server]\". SIGINT/SIGTERM finish the work under way "
                    "(up to 10 s) and stop.")
    _add_model_options(serve)
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=_PORT_OR_FREE, default=8000,
                       help="the HTTP/WebSocket port (default: 8000; 0: a free one)")
    grpc = serve.add_mutually_exclusive_group()
    grpc.add_argument("--grpc-port", type=_PORT_OR_FREE, default=50051,
                      help="the Riva gRPC port (default: 50051; 0: a free one)")
    grpc.add_argument("--no-grpc", action="store_true", help="serve no gRPC")
    serve.add_argument("--api-key", metavar="KEY", default=None,
                       help=f"require this key (Authorization: Bearer KEY; gRPC metadata authorization) "
                            f"(default: ${API_KEY_ENV}, else none)")
    _add_latency_option(serve, 160, "the Realtime and Riva streams' default chunk latency: 80, 160, 560 or 1120 ms "
                                    "(default: 160; each session may choose)")
    _add_language_option(serve)
    serve.add_argument("--max-sessions", type=_THREADS, default=64, metavar="N",
                       help="sessions of all protocols at once; more are refused (default: 64)")
    serve.add_argument("--max-upload-mb", type=_SECONDS, default=25.0, metavar="MB",
                       help="largest HTTP request body (default: 25, OpenAI's limit)")
    serve.add_argument("--idle-timeout", type=_SECONDS, default=60.0, metavar="SECONDS",
                       help="close connections that send nothing for this long (default: 60)")
    serve.add_argument("--max-buffer", type=_SECONDS, default=30.0, metavar="SECONDS",
                       help="audio one session may have waiting for the engine (default: 30)")
    serve.set_defaults(run=_serve)

    types = ", ".join(FILE_TYPES)
    convert = sub.add_parser("convert", help="convert a NeMo .nemo checkpoint to GGUF",
                             description="Convert a NeMo .nemo checkpoint (no PyTorch needed) to a GGUF model file.")
    convert.add_argument("src", help="the .nemo file (or the directory it was extracted into)")
    convert.add_argument("dst", help="the GGUF file to write")
    convert.add_argument("--layout", choices=LAYOUTS, default="nemo",
                         help="nemo: the nemotron-asr.cpp port's layout (default); asr: NVIDIA's")
    convert.add_argument("--type", dest="weight_type", choices=tuple(FILE_TYPES), default="f32", metavar="TYPE",
                         help=f"weight type: {types} (default: f32)")
    convert.add_argument("--force", action="store_true", help="overwrite DST if it exists")
    _add_quiet_option(convert)
    convert.set_defaults(run=_convert)

    quantize = sub.add_parser("quantize", help="change the weight type of a GGUF model",
                              description="Write a GGUF model of either layout with its weights in another type.")
    quantize.add_argument("src", help="a GGUF model file of either layout")
    quantize.add_argument("dst", help="the GGUF file to write (not SRC)")
    quantize.add_argument("--type", dest="weight_type", choices=tuple(FILE_TYPES), required=True, metavar="TYPE",
                          help=f"weight type: {types}")
    quantize.add_argument("--force", action="store_true", help="overwrite DST if it exists")
    _add_quiet_option(quantize)
    quantize.set_defaults(run=_quantize)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``nemotron-cpp`` console script."""
    args = _parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        if args.quiet:
            warnings.simplefilter("ignore")
        try:
            status = int(args.run(args))
            sys.stdout.flush()  # here, so that a reader gone away is noticed here
            return status
        except BrokenPipeError:
            # The reader went away (| head): stop quietly, as Unix tools do. Python's own flush of stdout at
            # exit would fail again, so stdout goes to /dev/null.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_BROKEN_PIPE
        except OSError as e:
            # Without "[Errno 2]": the file and what is wrong with it.
            _error(f"{e.filename}: {e.strerror[0].lower()}{e.strerror[1:]}" if e.filename and e.strerror else str(e))
            return 1
        except (NemotronError, ValueError, TypeError, ImportError) as e:
            _error(str(e))
            return 1
        except KeyboardInterrupt:
            return 130


if __name__ == "__main__":
    sys.exit(main())
