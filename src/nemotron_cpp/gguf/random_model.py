"""Random-weight test models in either GGUF layout.

The test suite and the benchmarks need model files without downloading the real checkpoint: tiny ones in
CI, full-size ones to measure speed and memory. This module makes them from seeded random weights, in
the two GGUF layouts in circulation:

* ``layout="nemo"``: what the C++ port's ``scripts/convert_to_gguf.py`` writes
  (``general.architecture = "nemo"``).
* ``layout="asr"``: what NVIDIA's NeMo-Speech.cpp converter (``conversion/asr.py``) writes
  (``general.architecture = "asr"``).

Both are checked against real files written by the two converters. What each layout holds (names,
shapes, dtypes, metadata) and the writer live in :mod:`nemotron_cpp.gguf.layout`, shared with the
converter and the quantizer. The weights follow the
initialisation recipe of the project's NeMo references (N(0, 1/fan_in) weights, LayerNorm gamma near 1,
zero blank embedding row), so a model computes something non-degenerate, but they are not the tuned
reference model: a file from here exercises loaders and engines, not transcription quality.

:func:`write_model` also has hooks that write deliberately broken files (missing or mistyped metadata,
missing tensors, wrong shapes or dtypes) for loader error tests.

A random joint emits a token on every step. :func:`tune_joint` reshapes it to emit a chosen rate,
decoding with the numpy reference decoder here (:func:`predict`, :func:`joint_encoder`,
:func:`joint_argmax`, :func:`greedy_decode`), which emits the engine's tokens; the tests replay the
engine's decisions with it too.

Writing needs the optional ``gguf`` package (``pip install 'nemotron-cpp[convert]'``); it is imported
only when a file is written.

The command line (:func:`main`) writes one file::

    python -m nemotron_cpp.testing OUT.gguf [--layout nemo|asr] [--type q8_0] [--size tiny|full] [--seed 0]
"""

from __future__ import annotations

import argparse
import base64
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..text import WORD_START
from .layout import (
    FILE_TYPES,
    KV,
    LAYOUTS,
    LEGACY_RECORD,
    FileTensor,
    ModelSize,
    hann_window,
    import_gguf,
    layout_metadata,
    layout_plan,
    mel_filterbank,
    state_dict_spec,
    tensor_type,
    write_gguf,
)

__all__ = [
    "FULL",
    "LAYOUTS",
    "TINY",
    "WEIGHT_TYPES",
    "LstmState",
    "ModelSize",
    "TunedJoint",
    "greedy_decode",
    "joint_argmax",
    "joint_encoder",
    "predict",
    "random_state_dict",
    "start_state",
    "tune_joint",
    "vocab_pieces",
    "write_model",
]

#: Accepted ``weight_type`` values, with the llama-style ``general.file_type`` that the asr layout records: the
#: types of :data:`~nemotron_cpp.gguf.layout.FILE_TYPES` but the k-quants (q4_k, q5_k, q6_k). Their blocks
#: hold 256 values, so they do not divide the tiny models' 128-wide rows: nearly every matrix of a tiny
#: "q4_k" model would fall back to F16, and the engine would call it an f16 model. The converter and the
#: quantizer write every type.
WEIGHT_TYPES: Dict[str, int] = {
    name: FILE_TYPES[name] for name in ("f32", "f16", "q4_0", "q4_1", "q8_0", "q5_0", "q5_1", "bf16")
}

# Any base64 text satisfies the asr layout's loader; a real one would be a SentencePiece model proto.
_SPM_PLACEHOLDER = base64.b64encode(b"random-test-model").decode("ascii")

#: The size used in CI: 2 layers, d_model 128; the same structure as the tiny NeMo fixture.
TINY = ModelSize(
    n_layers=2, d_model=128, n_heads=4, d_ff=512, subsampling_channels=32, pred_hidden=128, joint_dim=128, vocab=128
)
#: The size of nemotron-speech-streaming-en-0.6b (about 618 M parameters).
FULL = ModelSize(n_layers=24, d_model=1024, n_heads=8, d_ff=4096, subsampling_channels=256)


# ---------------------------------------------------------------------------------------------------
# Vocabulary


def vocab_pieces(n: int, seed: int = 0, *, max_bytes: int = LEGACY_RECORD - 1) -> List[str]:
    """Return ``n`` distinct SentencePiece-like pieces, deterministic for a given ``seed``.

    Id 0 is ``"<unk>"`` (as in NeMo's tokenizers); the rest are a random mix of word starts (``"▁"``,
    U+2581, followed by lowercase letters) and continuation pieces (lowercase letters only). Every piece
    uses at most ``max_bytes`` UTF-8 bytes; the default 7 lets the nemo layout's legacy 8-byte-record vocabulary
    be written. A larger ``max_bytes`` gives some longer pieces, as in the multilingual vocabulary.
    """
    if n < 1:
        raise ValueError(f"a vocabulary needs at least <unk>, got n={n}")
    if max_bytes < 2:
        raise ValueError(f"max_bytes must be at least 2, not {max_bytes}")
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    prefix_bytes = len(WORD_START.encode("utf-8"))
    max_start = max_bytes - prefix_bytes  # letters that fit after the word-start mark
    capacity = sum(26**k for k in range(2, max_bytes + 1)) + sum(26**k for k in range(1, max_start + 1))
    # Rejection sampling slows down as the space fills; half of it is far beyond any real vocabulary.
    if n - 1 > capacity // 2:
        raise ValueError(f"cannot make {n} distinct pieces of at most {max_bytes} bytes")
    rng = np.random.default_rng(seed)
    pieces = ["<unk>"]
    seen = set(pieces)
    while len(pieces) < n:
        if max_start >= 1 and rng.random() < 0.5:
            k = int(rng.integers(1, max_start + 1))
            piece = WORD_START + "".join(letters[rng.integers(0, 26, size=k)])
        else:
            # Continuations of one letter would be only 26; start at two like most BPE merges.
            k = int(rng.integers(2, max_bytes + 1))
            piece = "".join(letters[rng.integers(0, 26, size=k)])
        if piece not in seen:
            seen.add(piece)
            pieces.append(piece)
    return pieces


# ---------------------------------------------------------------------------------------------------
# Random state dict


@dataclass(frozen=True)
class _Param:
    name: str
    shape: Tuple[int, ...]
    kind: str  # "normal", "layernorm_weight", "embedding", "window" or "fb"
    scale: float = 1.0


# Standard deviations of the roles of layout.state_dict_spec that are plain N(0, scale^2) draws.
_ROLE_SCALE = {"bias": 0.05, "norm_bias": 0.05, "pos_bias": 0.1}


def _param_specs(size: ModelSize) -> List[_Param]:
    """Every state-dict entry of the model, in NeMo's state-dict order, with its initialisation."""
    specs = []
    for entry in state_dict_spec(size):
        if entry.role == "weight":
            fan_in = int(np.prod(entry.shape[1:]))  # in_features, or in_channels / groups * kernel size
            specs.append(_Param(entry.name, entry.shape, "normal", fan_in**-0.5))
        elif entry.role == "norm_weight":
            specs.append(_Param(entry.name, entry.shape, "layernorm_weight", 0.1))
        elif entry.role in _ROLE_SCALE:
            specs.append(_Param(entry.name, entry.shape, "normal", _ROLE_SCALE[entry.role]))
        else:
            specs.append(_Param(entry.name, entry.shape, entry.role))
    return specs


def _generate(size: ModelSize, seed: int) -> Iterator[Tuple[str, np.ndarray]]:
    """Yield the random state dict one tensor at a time, so a full-size file never holds all of it."""
    rng = np.random.default_rng(seed)
    for p in _param_specs(size):
        if p.kind == "window":
            yield p.name, hann_window(p.shape[0])
            continue
        if p.kind == "fb":
            yield p.name, mel_filterbank(size.n_mels)[None]
            continue
        # float32 draws are about twice as fast as float64 ones and need no conversion afterwards.
        x = rng.standard_normal(p.shape, dtype=np.float32)
        if p.scale != 1.0:
            x *= np.float32(p.scale)
        if p.kind == "layernorm_weight":
            x += np.float32(1.0)
        elif p.kind == "embedding":
            # blank_as_pad: the blank (last) row is the padding row, zero in a trained model too.
            x[-1] = 0.0
        yield p.name, x


def random_state_dict(size: ModelSize, seed: int = 0) -> Dict[str, np.ndarray]:
    """Return a random state dict: NeMo names and PyTorch shapes, float32, in NeMo's state-dict order.

    Weights of Linear and conv layers are N(0, 1/fan_in), biases 0.05 N, LayerNorm gamma 1 + 0.1 N and
    beta 0.05 N, ``pos_bias_u/v`` 0.1 N, LSTM weights N(0, 1/H), the embedding N(0, 1) with a zero blank
    (last) row. The encoder has no Linear biases (``use_bias: false``). ``preprocessor.featurizer.window``
    is the symmetric 400-point Hann window and ``preprocessor.featurizer.fb`` the Slaney mel filterbank,
    both as NeMo builds them. The same ``seed`` always gives the same arrays, and :func:`write_model` with
    that seed writes exactly these values (before any quantization).
    """
    return dict(_generate(size, seed))


# ---------------------------------------------------------------------------------------------------
# Hooks for broken files


def _qtype_from(gguf: Any, spec: Any) -> Any:
    if isinstance(spec, gguf.GGMLQuantizationType):
        return spec
    try:
        return gguf.GGMLQuantizationType[str(spec).upper()]
    except KeyError:
        raise ValueError(f"unknown tensor type {spec!r}") from None


def _value_type(gguf: Any, spec: Any) -> Any:
    if isinstance(spec, gguf.GGUFValueType):
        return spec
    try:
        return gguf.GGUFValueType[str(spec).upper()]
    except KeyError:
        raise ValueError(f"unknown GGUF value type {spec!r}") from None


def _parse_set_key(gguf: Any, key: str, spec: Any) -> KV:
    if not isinstance(spec, tuple) or len(spec) not in (2, 3):
        raise TypeError(f"set_keys[{key!r}] must be (value, type) or (values, 'ARRAY', sub_type), not {spec!r}")
    value, vtype = spec[0], _value_type(gguf, spec[1])
    sub = _value_type(gguf, spec[2]) if len(spec) == 3 else None
    if vtype == gguf.GGUFValueType.ARRAY:
        if sub is None:
            raise ValueError(f"set_keys[{key!r}]: an ARRAY needs its element type: (values, 'ARRAY', 'INT32')")
        value = list(value)  # the gguf writer accepts sequences only, not numpy arrays
    elif sub is not None:
        raise ValueError(f"set_keys[{key!r}]: only an ARRAY takes an element type")
    return value, vtype, sub


# ---------------------------------------------------------------------------------------------------
# Writer


class _Source:
    """Hands out state-dict tensors by name, drawing random ones lazily and in order.

    Random tensors must be drawn in state-dict order from one generator for a seed to mean the same
    weights everywhere; holding the whole full-size model (2.4 GB in float32) just to write it would
    not be reasonable, so only tensors asked for later than they were drawn are kept.
    """

    def __init__(self, state_dict: Optional[Mapping[str, Any]], size: ModelSize, seed: int, wanted: Iterable[str]):
        self._dict = state_dict
        self._iter = None if state_dict is not None else _generate(size, seed)
        self._wanted = set(wanted)
        self._held: Dict[str, np.ndarray] = {}

    def take(self, name: str) -> np.ndarray:
        if self._dict is not None:
            return np.asarray(self._dict[name], dtype=np.float32)
        while name not in self._held:
            assert self._iter is not None
            drawn, array = next(self._iter)
            if drawn in self._wanted:
                self._held[drawn] = array
        self._wanted.discard(name)
        return self._held.pop(name)


def write_model(
    path: "str | os.PathLike[str]",
    *,
    size: ModelSize = TINY,
    layout: str = "nemo",
    weight_type: str = "f32",
    seed: int = 0,
    state_dict: Optional[Mapping[str, Any]] = None,
    vocab: Optional[Sequence[str]] = None,
    extended_metadata: bool = True,
    legacy_vocab: Optional[bool] = None,
    drop_keys: Iterable[str] = (),
    set_keys: Mapping[str, Tuple[Any, ...]] = {},  # noqa: B006 - never mutated
    drop_tensors: Iterable[str] = (),
    tensor_overrides: Mapping[str, Any] = {},  # noqa: B006 - never mutated
    tensor_types: Mapping[str, Any] = {},  # noqa: B006 - never mutated
    name: str = "random-test-model",
) -> Path:
    """Write a random-weight (or given-weight) model as a GGUF file in either layout; return its path.

    Parameters
    ----------
    path:
        Output file. It is written to a temporary file in the same directory and renamed at the end, so
        a reader never sees a half-written model.
    size:
        Model hyperparameters; :data:`TINY` or :data:`FULL`, or any :class:`ModelSize`.
    layout:
        ``"nemo"``: as the C++ port's ``convert_to_gguf.py`` writes it (UINT32 hyperparameters,
        ``tokenizer.vocab_list`` plus the legacy ``tokenizer.vocab`` blob, depthwise conv as F32 [C, k],
        preprocessor window and 3-D filterbank; with a quantized ``weight_type`` only the encoder layer
        matrices are quantized; like that converter, no padding after the last tensor's data). ``"asr"``: as NVIDIA's ``conversion/asr.py`` writes it (the
        ``asr.*`` keys, ``encoder.pos_enc.pe``, 2-D ``preprocessor.fb``, LSTM tensors renamed
        ``lstm.ih_l0.weight``, depthwise conv F16 [k, 1, C]; every Linear weight gets ``weight_type``,
        convolutions and the embedding F16).
    weight_type:
        One of :data:`WEIGHT_TYPES`: ``f32``, ``f16``, ``bf16``, ``q8_0``, ``q4_0``, ``q4_1``, ``q5_0``,
        ``q5_1``. A tensor selected for a block type whose rows (ggml ``ne[0]``) are not whole blocks is
        stored F16 instead, as ggml's converters do. Quantization is gguf's port of ggml's reference
        quantizers.
    seed:
        Seed of the random weights; the values are those of ``random_state_dict(size, seed)``.
    state_dict:
        Weights to write instead of random ones: NeMo names, PyTorch shapes (as
        :func:`random_state_dict` returns them), described by ``size``.
    vocab:
        Real tokens in id order (no blank); default ``vocab_pieces(size.vocab, seed)``. Written as given,
        without checking its length against ``size.vocab``.
    extended_metadata:
        Also write this project's extension keys (right contexts, max symbols, preprocessor settings)
        that the original converters do not write. With ``False`` the key set is exactly the converter's.
    legacy_vocab:
        The nemo layout's 8-byte-record ``tokenizer.vocab``: ``None`` writes it when every piece fits in 7 bytes
        (as the converter does), ``False`` never, ``True`` always (``ValueError`` if a piece is too long).

    The remaining parameters make deliberately broken or unusual files:

    drop_keys:
        Metadata keys to leave out (``general.architecture`` included).
    set_keys:
        Keys to add or replace, ``{key: (value, type)}`` where type is a ``gguf.GGUFValueType`` or its
        name (``"UINT32"``, ``"INT32"``, ``"FLOAT32"``, ``"BOOL"``, ``"STRING"``, ...); an array is
        ``(values, "ARRAY", element_type)``. A STRING value may be ``bytes`` (written raw). A replaced
        key keeps its position; a new one goes at the end.
    drop_tensors:
        Tensors to leave out, by their name in the file (after the layout's renaming).
    tensor_overrides:
        ``{file name: array}`` replacing a tensor's values before its dtype is chosen; the array has the
        file's shape in PyTorch order (so ``ne`` is its shape reversed) and may have any shape. A name
        that is not in the file adds a tensor at the end.
    tensor_types:
        ``{file name: type}`` forcing a tensor's dtype: a ``gguf.GGMLQuantizationType`` or its name
        (``"f32"``, ``"F16"``, ``"q8_0"``, ``"i32"``, ...).
    name:
        Value of ``general.name``.

    Names in ``drop_keys``, ``drop_tensors`` and ``tensor_types`` must exist in the file the call would
    otherwise write (``KeyError`` if not), so a typo cannot silently give a valid file.

    Example
    -------
    >>> from nemotron_cpp.testing import write_model
    >>> p = write_model(tmp_path / "tiny.gguf", layout="asr", weight_type="q8_0")  # doctest: +SKIP
    """
    gguf = import_gguf()
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    if weight_type not in WEIGHT_TYPES:
        raise ValueError(f"weight_type must be one of {tuple(WEIGHT_TYPES)}, not {weight_type!r}")
    weight_qtype = gguf.GGMLQuantizationType[weight_type.upper()]
    pieces = list(vocab) if vocab is not None else vocab_pieces(size.vocab, seed)

    # --- metadata
    kv = layout_metadata(
        gguf,
        layout,
        size,
        pieces,
        name=name,
        weight_type=weight_type,
        extended=extended_metadata,
        legacy_vocab=legacy_vocab,
        spm_model=_SPM_PLACEHOLDER,
    )
    for key in drop_keys:
        if key not in kv:
            raise KeyError(f"drop_keys: {key!r} is not among the keys this file would have")
        del kv[key]
    for key, spec in set_keys.items():
        kv[key] = _parse_set_key(gguf, key, spec)

    # --- tensor plan
    if state_dict is not None:
        params = [(n, tuple(np.shape(a))) for n, a in state_dict.items()]
    else:
        params = [(p.name, p.shape) for p in _param_specs(size)]
    plan = layout_plan(layout, params, size)
    by_name = {t.name: t for t in plan}
    for tensor_name in drop_tensors:
        if tensor_name not in by_name:
            raise KeyError(f"drop_tensors: {tensor_name!r} is not a tensor of this file")
        plan.remove(by_name.pop(tensor_name))
    for tensor_name, array in tensor_overrides.items():
        array = np.asarray(array, dtype=np.float32)
        entry = by_name.get(tensor_name)
        if entry is None:
            entry = FileTensor(tensor_name, (), None)
            plan.append(entry)
            by_name[tensor_name] = entry
        entry.override, entry.shape = array, tuple(array.shape)
    for tensor_name in tensor_types:
        if tensor_name not in by_name:
            raise KeyError(f"tensor_types: {tensor_name!r} is not a tensor of this file")
    for entry in plan:
        forced = tensor_types.get(entry.name)
        if forced is not None:
            entry.qtype = _qtype_from(gguf, forced)
        else:
            entry.qtype = tensor_type(gguf, layout, entry.name, entry.shape, weight_qtype)

    # --- write
    needed = [t.source for t in plan if t.override is None and t.source is not None]
    source = _Source(state_dict, size, seed, needed)
    # The C++ port's converter pads between tensors but not after the last one; trimming makes the file
    # byte-identical to the converter's (and keeps the quirk: the data section is shorter than the sum of
    # padded tensor sizes ggml computes).
    return write_gguf(path, kv, plan, source.take, trim_final_padding=layout == "nemo")


# ---------------------------------------------------------------------------------------------------
# Reference decoder: the prediction network, the joint and greedy decoding in numpy

_EMBED = "decoder.prediction.embed.weight"
_LSTM = "decoder.prediction.dec_rnn.lstm."
_JOINT_OUT = "joint.joint_net.2."  # the joint's output layer

#: The prediction network's state: the hidden and the cell vector of each LSTM layer.
LstmState = Tuple[List[np.ndarray], List[np.ndarray]]


def start_state(w: Mapping[str, np.ndarray]) -> LstmState:
    """The prediction network's state before its first step: zeros in every layer.

    ``w`` holds the decoder's and the joint's weights under their NeMo names, in PyTorch shapes, as
    :func:`random_state_dict` and ``NemotronModel.get_tensor`` give them."""
    layers = sum(1 for name in w if name.startswith(_LSTM + "weight_hh_l"))
    zeros = [np.zeros(w[_LSTM + "weight_hh_l0"].shape[1], np.float32)] * layers
    return zeros, list(zeros)


def predict(
    w: Mapping[str, np.ndarray], token: int, h: List[np.ndarray], c: List[np.ndarray]
) -> Tuple[np.ndarray, List[np.ndarray], List[np.ndarray]]:
    """One step of the prediction network from state ``h``, ``c``: ``token`` (-1: the start, a zero
    input) through the LSTM layers; returns the joint's projection of the output and the new state."""
    x = w[_EMBED][token] if token >= 0 else np.zeros(w[_EMBED].shape[1], np.float32)
    h, c = list(h), list(c)
    for k in range(len(h)):
        gates = (w[f"{_LSTM}weight_ih_l{k}"] @ x + w[f"{_LSTM}bias_ih_l{k}"]
                 + w[f"{_LSTM}weight_hh_l{k}"] @ h[k] + w[f"{_LSTM}bias_hh_l{k}"])
        i, f, g, o = np.split(gates, 4)
        c[k] = c[k] / (1 + np.exp(-f)) + np.tanh(g) / (1 + np.exp(-i))
        h[k] = x = np.tanh(c[k]) / (1 + np.exp(-o))
    return w["joint.pred.weight"] @ x + w["joint.pred.bias"], h, c


def joint_encoder(w: Mapping[str, np.ndarray], enc: np.ndarray) -> np.ndarray:
    """The joint's projection of encoder frames ``enc`` ``[frames, d_model]``: ``[frames, joint_dim]``."""
    projected: np.ndarray = enc @ w["joint.enc.weight"].T + w["joint.enc.bias"]  # numpy's stubs: Any
    return projected


def joint_argmax(w: Mapping[str, np.ndarray], frame: np.ndarray, pred: np.ndarray) -> int:
    """The joint's choice for a projected encoder frame and a prediction output: a token id, or the
    blank (the last id)."""
    return int(np.argmax(w[_JOINT_OUT + "weight"] @ np.maximum(frame + pred, 0) + w[_JOINT_OUT + "bias"]))


def greedy_decode(w: Mapping[str, np.ndarray], enc: np.ndarray, max_symbols: int,
                  endpoint_reset: Tuple[int, int] = (0, 0)) -> List[int]:
    """Greedy RNN-T decoding of encoder output ``enc`` ``[frames, d_model]``, at most ``max_symbols``
    tokens per frame: the token ids, those the engine emits from the same encoder output and weights.

    ``endpoint_reset`` (silence frames, minimum utterance frames; silence 0: never) is the engine's
    endpoint reset (``Endpointing.reset_decoder``): the prediction network starts over once that many
    frames pass with no token after an utterance at least that long."""
    blank = w[_JOINT_OUT + "weight"].shape[0] - 1
    silence, min_utterance = endpoint_reset
    pred, h, c = predict(w, -1, *start_state(w))
    tokens = []
    first = last = -1  # frames of the utterance's first and last tokens
    for t, frame in enumerate(joint_encoder(w, enc)):
        if silence > 0 and last >= 0 and t - last - 1 >= silence and last + 1 - first >= min_utterance:
            pred, h, c = predict(w, -1, *start_state(w))
            first = last = -1
        for _ in range(max_symbols):
            k = joint_argmax(w, frame, pred)
            if k == blank:
                break
            pred, h, c = predict(w, k, h, c)
            tokens.append(k)
            first, last = (t if first < 0 else first), t
    return tokens


@dataclass(frozen=True)
class TunedJoint:
    """What :func:`tune_joint` found."""

    tensors: Dict[str, np.ndarray]  #: the joint's changed tensors, to replace the random ones
    blank_bias: float  #: the bias of the blank's output row it chose
    tokens_per_frame: float  #: the median over the tuning decodes


def tune_joint(
    state: Mapping[str, np.ndarray], size: ModelSize, encs: Sequence[np.ndarray], target: float
) -> TunedJoint:
    """Reshapes the random joint of ``state`` so that greedy decoding of the encoder outputs ``encs``
    emits about ``target`` tokens per frame (median over ``encs``) instead of a token on every step.

    The one recipe for random joints: ``scripts/make_reference.py`` shapes its NeMo reference models
    with it (on NeMo's own encoder outputs) and ``bench/run.py`` its benchmark models. Returns the
    joint's tensors that changed; ``state`` is left as it is."""
    w = {k: v.copy() for k, v in state.items() if k.startswith(("decoder.", "joint."))}
    # A deep random encoder's output is nearly one vector per utterance, so every frame would get the
    # same answer and the rate would jump from none to all as the blank's bias moves: the joint loses
    # its response to each decode's mean and is scaled to unit spread over frames.
    means = np.linalg.qr(np.stack([e.mean(0) for e in encs]).T)[0]
    w["joint.enc.weight"] -= (w["joint.enc.weight"] @ means) @ means.T
    proj = np.concatenate([e @ w["joint.enc.weight"].T for e in encs])
    spread = (proj - proj.mean(0)).std()
    w["joint.enc.weight"] /= spread
    proj /= spread
    # The same spread over decoder states, so that the tokens emitted so far matter.
    start = start_state(w)
    tokens = np.random.default_rng(0).integers(0, size.vocab, 64)
    preds = np.stack([predict(w, int(t), *start)[0] for t in tokens])
    w["joint.pred.weight"] /= (preds - preds.mean(0)).std()
    # Token rows lose their part along the mean hidden vector and the blank's row points along it,
    # so the blank's bias sets how often a token wins.
    hidden = np.maximum(proj + w["joint.enc.bias"] + predict(w, -1, *start)[0], 0)
    mu = hidden.mean(0) / np.linalg.norm(hidden.mean(0))
    rows = 3 * w[_JOINT_OUT + "weight"]
    rows -= np.outer(rows @ mu, mu)
    rows[size.vocab] = 3 * mu
    w[_JOINT_OUT + "weight"] = rows.astype(np.float32)
    # The rate falls as the bias rises, still in steps: bisect, keep the bias whose median is closest.
    lo, hi, best = -128.0, 128.0, (np.inf, 0.0, 0.0)
    for _ in range(20):
        mid = (lo + hi) / 2
        w[_JOINT_OUT + "bias"][size.vocab] = mid
        rate = float(np.median([len(greedy_decode(w, e, size.max_symbols)) / len(e) for e in encs]))
        best = min(best, (abs(rate - target), mid, rate))
        if best[0] <= 0.02:
            break
        lo, hi = (mid, hi) if rate > target else (lo, mid)
    w[_JOINT_OUT + "bias"][size.vocab] = best[1]
    tensors = {k: w[k] for k in ("joint.enc.weight", "joint.pred.weight", _JOINT_OUT + "weight", _JOINT_OUT + "bias")}
    return TunedJoint(tensors, blank_bias=best[1], tokens_per_frame=best[2])


# ---------------------------------------------------------------------------------------------------
# Command line


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line ``python -m nemotron_cpp.testing``: writes one model and prints its path and size."""
    parser = argparse.ArgumentParser(
        prog="python -m nemotron_cpp.testing", description="Write a random-weight nemotron test model as GGUF."
    )
    parser.add_argument("output", type=Path, help="GGUF file to write")
    parser.add_argument("--layout", choices=LAYOUTS, default="nemo", help="nemo: the C++ port's; asr: NVIDIA's")
    parser.add_argument("--type", dest="weight_type", choices=tuple(WEIGHT_TYPES), default="f32")
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    size = TINY if args.size == "tiny" else FULL
    out = write_model(args.output, size=size, layout=args.layout, weight_type=args.weight_type, seed=args.seed)
    print(f"{out} {out.stat().st_size} bytes")
    return 0

