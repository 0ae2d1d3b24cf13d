#!/usr/bin/env python3
"""Records NVIDIA NeMo's phrase-boosted greedy decoding, as ground truth for the engine's hotwords.

Not part of the installed package; it runs in the NeMo environment of ``scripts/README.md``. It reads
a reference set that ``make_reference.py`` recorded (NeMo's own encoder output of every clip and case,
offline and chunk by chunk in cache-aware streaming) and decodes it again with NeMo 2.7.3's
``greedy_batch`` decoding (the label-looping computer) and a boosting tree, for each phrase set below:

* sets of plain phrases go through NeMo's user path, ``decoding.greedy.boosting_tree`` (a
  ``BoostingTreeModelConfig`` with ``key_phrases_list``) and ``boosting_tree_alpha``, so NeMo's
  tokenizer spells the phrases and ``GPUBoostingTreeModel.from_config`` builds the tree;
* sets with per-phrase weights build NeMo's ``ContextGraph`` with those scores (what the config's
  ``score_per_phrase`` feeds) and ``GPUBoostingTreeModel.from_context_graph``, which replaces the
  tree of the same decoding.

Offline cases decode the whole encoder output at once; streaming cases decode NeMo's chunks in turn,
passing the previous hypotheses on as ``conformer_stream_step`` does (which carries the tree's state).
It also records what NeMo's tokenizer makes of a list of texts, for the engine's tokenizer.

It then records NeMo's batched beam search (``malsd_batch``, beam sizes 2 and 4, without a tree and with
two of the sets) on a subset of the cases: the N-best lists with their scores.

Output: ``OUT`` (default ``REFERENCE/decoding.json.gz``) with the sets (phrases, NeMo's token ids for
them, settings), for every set, clip and case NeMo's token ids, and the beam search's N-best lists.

    /tmp/nemo-venv/bin/python scripts/make_decoding_reference.py --nemo tests/fixtures/tiny-random.nemo \\
        --reference tests/reference/tiny

The demo model (``--gguf``; its ``.nemo`` is not kept) is rebuilt in NeMo from the package's GGUF file:
make_reference.py's architecture at the file's size, holding the weights as the engine reads them
(dequantized from q8_0), with a SentencePiece BPE model of the file's pieces (scores falling with the
id, as a BPE model's do; identity normalization, enough for its lower-case ASCII). NeMo then records
its own encoder outputs of some held-out clips (``DEMO_CLIPS``: rooms and contacts it confuses) with
make_reference.py's recorder, and decodes them as above with the demo's phrase sets (``DEMO_SETS``):
its floor plan and its contacts. The engine compares with the same weights in f32.

    /tmp/nemo-venv/bin/python scripts/make_decoding_reference.py \\
        --gguf src/nemotron_cpp/data/demo.q8_0.gguf --reference tests/reference/demo
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import platform
import re
import shlex
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from make_reference import sha256_file  # this folder's

REPO = Path(__file__).resolve().parents[1]

# Phrase sets: what a user writes. Words of the clips (lower case: the tiny model's pseudo-English
# pieces have no capitals), phrases that share a prefix, one inside another, weights, and settings from
# mild to strong.
SETS: List[Dict[str, Any]] = [
    {"name": "words", "phrases": ["birch canoe", "sea shells", "stella", "lighthouse"], "alpha": 1.0},
    {"name": "shared", "phrases": [["stella", 2.0], "stell", ["sea", 0.5], "sea shore", "the sea"], "alpha": 0.5,
     "context_score": 1.5},
    {"name": "strong", "phrases": ["twelve jumps", "the", "smooth planks", "planks"], "alpha": 2.0,
     "context_score": 2.0, "depth_scaling": 1.0, "unk_score": -0.5},
]
DEFAULTS = {"context_score": 1.0, "depth_scaling": 2.0, "unk_score": 0.0}
# Beam search: these beam sizes, without a tree and with these sets, on these clips and cases (fewer than the
# greedy ones: N-best lists are long); every case decodes its whole encoder output, streaming ones too,
# because NeMo's batched beam search takes no partial hypotheses: a stream's beam carried across its
# chunks is this search over the chunks' frames.
BEAM_SIZES = (2, 4)
BEAM_SETS = (None, "words", "shared")
BEAM_CLIPS = ("speech_a", "speech_b", "speech_noisy", "noise")
BEAM_CONTEXTS = ("70_1", "70_13")
# The demo model: held-out clips of rooms and contacts (several of which it gets wrong: bedroom heard
# as living room or kitchen, bathroom as garden, anna and dad swapped), and what an app would boost.
DEMO_CLIPS = ("heldout_013", "heldout_018", "heldout_032", "heldout_045", "heldout_099", "heldout_122",
              "heldout_139", "heldout_174", "heldout_187", "heldout_197")
DEMO_SETS: List[Dict[str, Any]] = [
    {"name": "house", "phrases": ["bedroom", "bathroom", "office", "garage"], "alpha": 1.0},
    {"name": "contacts", "phrases": [["anna", 2.0], "peter", "dad"], "alpha": 2.0},
    {"name": "strong", "phrases": ["bedroom", "bathroom", "anna"], "alpha": 4.0},
]
DEMO_CONTEXTS = ((70, 1), (70, 13))
TOKENIZER_TEXTS = ["call Stella", "  birch   canoe ", "O'Brien", "naïve café", "Zyrtec", "twelve-quick", "x",
                   "THE SEA", "ＡＢＣ stella"]


def boosting_tree(model: Any, spec: Dict[str, Any]) -> Any:
    """NeMo's tree for a set with per-phrase weights (ContextGraph's `scores`, 0 = the default)."""
    from nemo.collections.asr.parts.context_biasing.boosting_graph_batched import GPUBoostingTreeModel
    from nemo.collections.asr.parts.context_biasing.context_graph_universal import ContextGraph

    settings = {**DEFAULTS, **spec}
    phrases = [p if isinstance(p, str) else p[0] for p in spec["phrases"]]
    scores = [0.0 if isinstance(p, str) else float(p[1]) for p in spec["phrases"]]
    graph = ContextGraph(context_score=settings["context_score"], depth_scaling=settings["depth_scaling"])
    graph.build(token_ids=[model.tokenizer.text_to_ids(p) for p in phrases], phrases=phrases, scores=scores,
                uniform_weights=False)
    return GPUBoostingTreeModel.from_context_graph(graph, vocab_size=model.tokenizer.vocab_size,
                                                   unk_score=settings["unk_score"], final_eos_score=0.0,
                                                   use_triton=False, uniform_weights=False)


def set_decoding(model: Any, spec: Optional[Dict[str, Any]], beam_size: int = 1) -> None:
    """greedy_batch as the model's config has it, or malsd_batch with this beam size returning N-best
    lists, with the set's boosting tree (none: no tree)."""
    from omegaconf import OmegaConf

    cfg = copy.deepcopy(model.cfg.decoding)
    OmegaConf.set_struct(cfg, False)
    if beam_size == 1:
        cfg.strategy = "greedy_batch"
        cfg.greedy.loop_labels = True
        cfg.greedy.use_cuda_graph_decoder = False
        section = cfg.greedy
    else:
        cfg.strategy = "malsd_batch"
        cfg.beam = {"beam_size": beam_size, "return_best_hypothesis": False, "score_norm": True,
                    "allow_cuda_graphs": False, "max_symbols": model.cfg.decoding.greedy.max_symbols}
        section = cfg.beam
    if spec is None:
        section.boosting_tree = None
        section.boosting_tree_alpha = 0.0
    else:
        settings = {**DEFAULTS, **spec}
        section.boosting_tree = {"key_phrases_list": [p if isinstance(p, str) else p[0] for p in spec["phrases"]],
                                 "context_score": settings["context_score"],
                                 "depth_scaling": settings["depth_scaling"], "unk_score": settings["unk_score"],
                                 "use_triton": False}
        section.boosting_tree_alpha = spec["alpha"]
    model.change_decoding_strategy(cfg, verbose=False)
    if spec is not None and any(not isinstance(p, str) for p in spec["phrases"]):
        computer = (model.decoding.decoding.decoding_computer if beam_size == 1
                    else model.decoding.decoding._decoding_computer)
        assert len(computer.fusion_models) == 1, "the decoding should hold one fusion model, the tree"
        computer.fusion_models[0] = boosting_tree(model, spec)


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32 fields are ten-byte varints
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def _varint_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _fixed32(number: int, value: float) -> bytes:
    return _varint(number << 3 | 5) + struct.pack("<f", value)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def model_from_gguf(path: Path, work: Path) -> Any:
    """A NeMo model holding a GGUF file's weights as the engine reads them (see the module's docstring)."""
    import torch
    from omegaconf import OmegaConf
    from nemo.collections.asr.models import EncDecRNNTBPEModel
    from nemotron_cpp import NemotronModel

    import make_reference as mr

    with NemotronModel(path, n_threads=1) as engine:
        hp = engine.hparams
        # sentencepiece_model.proto's fields, written directly (its generated module needs a newer protobuf).
        pieces = b"".join(_field(1, _field(1, p.encode()) + _fixed32(2, -float(i)) + _varint_field(3, 2 if p == "<unk>" else 1))
                          for i, p in enumerate(engine.vocabulary))
        trainer = (_varint_field(3, 2) + _varint_field(4, len(engine.vocabulary)) + _varint_field(40, 0)
                   + _varint_field(41, -1) + _varint_field(42, -1) + _varint_field(43, -1))  # BPE; unk 0; no bos/eos/pad
        normalizer = _field(1, b"identity") + _varint_field(3, 1) + _varint_field(4, 1) + _varint_field(5, 1)
        proto = pieces + _field(2, trainer) + _field(3, normalizer)
        tokenizer = work / "tokenizer"
        tokenizer.mkdir(parents=True, exist_ok=True)
        (tokenizer / "tokenizer.model").write_bytes(proto)
        vocab = [p[1:] or p if p.startswith("\u2581") else f"##{p}" for p in engine.vocabulary if p != "<unk>"]
        (tokenizer / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
        if hp.d_ff != 4 * hp.d_model or hp.pred_num_layers != 2 or hp.conv_kernel_size != 9:
            raise SystemExit(f"{path}: not make_reference.py's architecture ({hp})")
        size = mr.Size(hp.n_layers, hp.d_model, hp.n_heads, hp.subsampling_conv_channels, hp.pred_hidden, hp.joint_dim,
                       hp.vocab_size - 1, 0.0)
        model = EncDecRNNTBPEModel(cfg=OmegaConf.create(mr.model_config(size, tokenizer)))
        for text in ("call anna", "turn on the bedroom lights", "set the bathroom heater to thirty degrees"):
            if model.tokenizer.text_to_ids(text) != engine.tokenize(text):
                raise SystemExit(f"the rebuilt tokenizer spells {text!r} otherwise than the engine")
        target = model.state_dict()
        state = {t.name: torch.from_numpy(engine.get_tensor(t.name)).reshape(target[t.name].shape)
                 for t in engine.tensors}
    missing, unexpected = model.load_state_dict(state, strict=False)
    computed = [k for k in missing if not k.startswith(("preprocessor.", "encoder.pos_enc."))]
    if computed or unexpected:
        raise SystemExit(f"{path}: weights the file lacks {computed} or NeMo lacks {unexpected}")
    model.eval()
    model.preprocessor.featurizer.dither = 0.0
    model.preprocessor.featurizer.pad_to = 0
    return model


def record_clips(model: Any, reference: Path, names: Sequence[str], work: Path) -> Dict[str, Any]:
    """NeMo's encoder outputs and greedy tokens of these clips (FLAC in `reference`), offline and in both
    streaming modes, by make_reference.py's recorder (which checks its trace against NeMo's tokens)."""
    import soundfile

    import make_reference as mr

    recorder = mr.Recorder(model, check_transcribe=False)
    clips = {}
    for name in names:
        samples, rate = soundfile.read(reference / f"{name}.flac", dtype="int16")
        wav = work / f"{name}.wav"
        mr.write_wav_int16(wav, samples)
        arrays, info = recorder.clip(wav, DEMO_CONTEXTS, list(mr.STREAM_MODES))
        clips[name] = ({"name": name, "cases": info["cases"]}, arrays)
    return clips


def decode(model: Any, enc: np.ndarray, chunk_frames: Optional[Sequence[int]]) -> List[int]:
    """NeMo's tokens for encoder frames [T, D]: at once, or chunk by chunk as conformer_stream_step decodes."""
    import torch

    pieces = [enc] if chunk_frames is None else np.split(enc, np.cumsum(chunk_frames)[:-1])
    hypotheses = None
    for piece in pieces:
        x = torch.from_numpy(np.ascontiguousarray(piece.T))[None]
        hypotheses = model.decoding.rnnt_decoder_predictions_tensor(
            encoder_output=x, encoded_lengths=torch.tensor([piece.shape[0]]), return_hypotheses=True,
            partial_hypotheses=hypotheses if chunk_frames is not None else None)
    seq = hypotheses[0].y_sequence
    return [int(t) for t in (seq.tolist() if hasattr(seq, "tolist") else seq)]


def nbest(model: Any, enc: np.ndarray) -> List[Dict[str, Any]]:
    """NeMo's N-best list for encoder frames [T, D], best first: token ids and score."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(enc.T))[None]
    result = model.decoding.rnnt_decoder_predictions_tensor(encoder_output=x, encoded_lengths=torch.tensor([enc.shape[0]]),
                                                            return_hypotheses=True)
    hypotheses = result[0]  # the N-best list of the one utterance, as Hypothesis objects
    return [{"tokens": [int(t) for t in h.y_sequence.tolist()], "score": float(h.score)} for h in hypotheses]


def compact(text: str) -> str:
    """JSON with its lists of numbers on one line each."""
    return re.sub(r"\[\s+([-\d.e,\s]+?)\s+\]", lambda m: "[" + ", ".join(m.group(1).split()).replace(",,", ",") + "]",
                  text)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--nemo", type=Path, help="the reference set's .nemo model")
    source.add_argument("--gguf", type=Path, help="a GGUF model to rebuild in NeMo, with --reference the folder of "
                                                  "its clips (the demo model's)")
    parser.add_argument("--reference", type=Path, required=True, help="a make_reference.py output directory, or "
                                                                      "with --gguf the folder of the clips")
    parser.add_argument("--out", type=Path, help="output JSON (default REFERENCE/decoding.json.gz)")
    args = parser.parse_args(argv)
    out = args.out or args.reference / "decoding.json.gz"

    import torch
    import nemo
    from nemo.collections.asr.models import EncDecRNNTBPEModel

    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    t0 = time.time()
    work = Path(tempfile.mkdtemp())
    if args.gguf is not None:
        model = model_from_gguf(args.gguf, work)
        clips = record_clips(model, args.reference, DEMO_CLIPS, work)
        phrase_sets, beam_sets, beam_clips = DEMO_SETS, (None, "house", "contacts"), DEMO_CLIPS
        beam_contexts = tuple(f"{left}_{right}" for left, right in DEMO_CONTEXTS)
        source = {"gguf": args.gguf.name, "sha256": sha256_file(args.gguf),
                  "rebuilt": "in NeMo from the file's weights as the engine reads them (dequantized to f32)"}
    else:
        manifest = json.loads((args.reference / "manifest.json").read_text())
        model = EncDecRNNTBPEModel.restore_from(str(args.nemo), map_location="cpu")
        model.eval()
        clips = {c["name"]: (c, np.load(args.reference / c["npz"])) for c in manifest["clips"]}
        phrase_sets, beam_sets, beam_clips, beam_contexts = SETS, BEAM_SETS, BEAM_CLIPS, BEAM_CONTEXTS
        source = {"nemo": args.nemo.name, "sha256": sha256_file(args.nemo)}
    # NeMo's own decoding without a tree must give the recorded tokens, or the encoder outputs are not these.
    set_decoding(model, None)
    plain: Dict[str, Dict[str, List[int]]] = {}
    for name, (clip, arrays) in clips.items():
        plain[name] = {case: arrays[f"{case}__tokens"].tolist() for case in clip["cases"]}
        for case in clip["cases"]:
            frames = arrays.get(f"{case}__chunk_enc_frames")
            if decode(model, arrays[f"{case}__enc"], frames) != plain[name][case]:
                raise SystemExit(f"{name} {case}: plain greedy decoding does not give the recorded tokens")

    sets = []
    results: Dict[str, Dict[str, Dict[str, List[int]]]] = {}
    with torch.inference_mode():
        for spec in phrase_sets:
            set_decoding(model, spec)
            phrases = [p if isinstance(p, str) else p[0] for p in spec["phrases"]]
            sets.append({**DEFAULTS, **spec, "phrase_tokens": [model.tokenizer.text_to_ids(p) for p in phrases],
                         "tree": "ContextGraph with scores + GPUBoostingTreeModel.from_context_graph"
                         if any(not isinstance(p, str) for p in spec["phrases"])
                         else "BoostingTreeModelConfig(key_phrases_list) + GPUBoostingTreeModel.from_config"})
            changed = total = 0
            per_clip: Dict[str, Dict[str, List[int]]] = {}
            for name, (clip, arrays) in clips.items():
                per_clip[name] = {}
                for case in clip["cases"]:
                    tokens = decode(model, arrays[f"{case}__enc"], arrays.get(f"{case}__chunk_enc_frames"))
                    per_clip[name][case] = tokens
                    changed += tokens != plain[name][case]
                    total += 1
            results[spec["name"]] = per_clip
            print(f"{spec['name']}: {changed} of {total} cases decode differently with the tree")
            if changed == 0:
                raise SystemExit(f"set {spec['name']} changes nothing; it proves nothing")

    beams: Dict[str, Dict[str, Dict[str, List[Dict[str, Any]]]]] = {}
    with torch.inference_mode():
        for beam_size in BEAM_SIZES:
            for set_name in beam_sets:
                spec = next((x for x in phrase_sets if x["name"] == set_name), None)
                set_decoding(model, spec, beam_size)
                key = f"beam{beam_size}" + (f"_{set_name}" if set_name else "")
                beams[key] = {}
                differs = 0
                for name in beam_clips:
                    clip, arrays = clips[name]
                    beams[key][name] = {}
                    for case in clip["cases"]:
                        if "_".join(case.rsplit("_", 2)[-2:]) not in beam_contexts:
                            continue
                        hyps = nbest(model, arrays[f"{case}__enc"])
                        beams[key][name][case] = hyps
                        greedy = results[set_name][name][case] if set_name else plain[name][case]
                        differs += hyps[0]["tokens"] != greedy
                print(f"{key}: the best hypothesis differs from greedy decoding in {differs} cases")

    record = {
        "generator": "scripts/make_decoding_reference.py",
        "command": shlex.join(["python", "scripts/make_decoding_reference.py", *(sys.argv[1:] if argv is None else argv)]),
        "versions": {"nemo": nemo.__version__, "torch": torch.__version__, "python": platform.python_version()},
        "machine": platform.platform(),
        "seconds": round(time.time() - t0, 1),
        "model": source,
        "decoding": "greedy_batch (label looping, max_symbols from the model's config) with a boosting tree",
        "tokenizer": {text: model.tokenizer.text_to_ids(text) for text in TOKENIZER_TEXTS},
        "sets": sets,
        "plain": plain if args.gguf is not None else "the reference set's <case>__tokens",
        "tokens": results,
        "beam": {"decoding": "malsd_batch (return_best_hypothesis False, score_norm True, NeMo's defaults otherwise: "
                             "pruning_mode late, blank_lm_score_mode lm_weighted_full), on each case's whole encoder "
                             "output", "beam_sizes": list(BEAM_SIZES),
                 "sets": [s for s in beam_sets if s], "nbest": beams},
    }
    # Gzipped: the N-best lists are long and repetitive (25 kB instead of 700 kB).
    with gzip.open(out, "wt", encoding="utf-8", compresslevel=9) as f:
        f.write(compact(json.dumps(record, indent=1, ensure_ascii=False)) + "\n")
    print(f"wrote {out} in {record['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
