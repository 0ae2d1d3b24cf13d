"""The ``nemotron-cpp`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import List, Optional

from . import __version__
from .errors import NemotronError
from .gguf_layout import FILE_TYPES, LAYOUTS
from .info import system_info
from .model import NemotronModel


def _format_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _info(args: argparse.Namespace) -> int:
    if args.model is None:
        info = system_info()
        if args.json:
            print(json.dumps(dataclasses.asdict(info), indent=2))
        else:
            print(info)
        return 0
    with NemotronModel(args.model, backend=args.backend, n_threads=args.threads) as model:
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
                "hparams": dataclasses.asdict(hp),
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
              f"{', used in place from the mapped file' if model.uses_mmap else ''}")
        print(f"backend      {model.backend}, {model.n_threads} threads")
        print(f"encoder      {hp.n_layers} conformer layers, d_model {hp.d_model}, {hp.n_heads} heads, "
              f"d_ff {hp.d_ff}, conv kernel {hp.conv_kernel_size}, subsampling x{hp.subsampling_factor}")
        print(f"streaming    left context {hp.att_left_context}, right contexts "
              f"{', '.join(map(str, hp.att_right_contexts))}")
        print(f"decoder      {hp.pred_num_layers}-layer LSTM {hp.pred_hidden}, joint {hp.joint_dim}, "
              f"vocabulary {hp.vocab_size - 1} + blank, at most {hp.max_symbols_per_step} symbols per frame")
        print(f"frontend     {hp.sample_rate} Hz, {hp.n_mels} mels, window {hp.win_length}, hop {hp.hop_length}, "
              f"n_fft {hp.n_fft}")
        print("tensors")
        for g in model.tensor_groups:
            print(f"  {g.name:<13} {g.type:<5} {g.n_tensors:4d} tensors {g.n_params:>13,} params "
                  f"{_format_bytes(g.n_bytes):>10}")
        if args.vocab:
            for i, piece in enumerate(model.vocabulary):
                print(f"{i}\t{piece}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    # Imported here: converting needs the optional gguf and PyYAML packages, the rest of the CLI does not.
    from .convert import convert_nemo

    out = convert_nemo(args.src, args.dst, layout=args.layout, weight_type=args.weight_type, force=args.force)
    print(f"wrote {out} ({_format_bytes(out.stat().st_size)}, layout {args.layout}, {args.weight_type})")
    return 0


def _quantize(args: argparse.Namespace) -> int:
    from .quantize import quantize_gguf

    out = quantize_gguf(args.src, args.dst, weight_type=args.weight_type, force=args.force)
    print(f"wrote {out} ({_format_bytes(out.stat().st_size)}, {args.weight_type})")
    return 0


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
    info.add_argument("model", nargs="?", help="a GGUF model file of either layout")
    info.add_argument("--backend", default="auto", help="auto, cpu, gpu or gpu:N (default: auto)")
    info.add_argument("--threads", type=int, default=None, help="CPU threads (default: one per physical core)")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.add_argument("--vocab", action="store_true", help="also list the vocabulary")
    info.set_defaults(run=_info)

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
    convert.set_defaults(run=_convert)

    quantize = sub.add_parser("quantize", help="change the weight type of a GGUF model",
                              description="Write a GGUF model of either layout with its weights in another type.")
    quantize.add_argument("src", help="a GGUF model file of either layout")
    quantize.add_argument("dst", help="the GGUF file to write (not SRC)")
    quantize.add_argument("--type", dest="weight_type", choices=tuple(FILE_TYPES), required=True, metavar="TYPE",
                          help=f"weight type: {types}")
    quantize.add_argument("--force", action="store_true", help="overwrite DST if it exists")
    quantize.set_defaults(run=_quantize)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``nemotron-cpp`` console script."""
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (OSError, NemotronError, ValueError, ImportError) as e:
        print(f"nemotron-cpp: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
