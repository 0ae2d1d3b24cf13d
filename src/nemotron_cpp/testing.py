"""Random-weight test models in either GGUF layout.

The test suite and the benchmarks need model files without downloading the real checkpoint: tiny ones in
CI, full-size ones to measure speed and memory. This module makes them from seeded random weights, in
the two GGUF layouts in circulation:

* ``layout="nemo"`` (layout A): what the C++ port's ``scripts/convert_to_gguf.py`` writes
  (``general.architecture = "nemo"``).
* ``layout="asr"`` (layout B): what NVIDIA's NeMo-Speech.cpp converter (``conversion/asr.py``) writes
  (``general.architecture = "asr"``).

Both are checked against real files written by the two converters. The weights follow the
initialisation recipe of the project's NeMo references (N(0, 1/fan_in) weights, LayerNorm gamma near 1,
zero blank embedding row), so a model computes something non-degenerate, but they are not the tuned
reference model: a file from here exercises loaders and engines, not transcription quality.

:func:`write_model` also has hooks that write deliberately broken files (missing or mistyped metadata,
missing tensors, wrong shapes or dtypes) for loader error tests.

Writing needs the optional ``gguf`` package (``pip install 'nemotron-cpp[convert]'``); it is imported
only when a file is written.

Run as a script to write one file::

    python -m nemotron_cpp.testing OUT.gguf [--layout nemo|asr] [--type q8_0] [--size tiny|full] [--seed 0]
"""

from __future__ import annotations

import argparse
import base64
import math
import os
import re
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "FULL",
    "LAYOUTS",
    "TINY",
    "WEIGHT_TYPES",
    "ModelSize",
    "random_state_dict",
    "vocab_pieces",
    "write_model",
]

_GGUF_MISSING = "writing GGUF files needs the 'gguf' package: pip install 'nemotron-cpp[convert]'"

#: The two layouts :func:`write_model` can write: ``"nemo"`` (the C++ port's) and ``"asr"`` (NVIDIA's).
LAYOUTS: Tuple[str, ...] = ("nemo", "asr")

#: Accepted ``weight_type`` values, with the llama-style ``general.file_type`` that layout B records.
WEIGHT_TYPES: Dict[str, int] = {
    "f32": 0,
    "f16": 1,
    "q4_0": 2,
    "q4_1": 3,
    "q8_0": 7,
    "q5_0": 8,
    "q5_1": 9,
    "bf16": 32,
}

# Preprocessor constants of this model family (NeMo config; the C++ port hard-codes the same values).
_SAMPLE_RATE = 16000
_N_FFT = 512
_WIN_LENGTH = 400  # 25 ms at 16 kHz
_FMAX = 8000.0
_LOG_ZERO_GUARD = 2.0**-24
# NVIDIA's converter writes its sinusoidal table for this many positions (asr.encoder.pos_emb_max_len).
_POS_EMB_MAX_LEN = 5000
# Layout A's legacy vocabulary: fixed 8-byte records, so a piece may use at most 7 bytes plus a NUL.
_LEGACY_RECORD = 8
_WORD_START = "\u2581"  # SentencePiece's word-boundary mark, 3 bytes in UTF-8
# Any base64 text satisfies layout B's loader; a real one would be a SentencePiece model proto.
_SPM_PLACEHOLDER = base64.b64encode(b"random-test-model").decode("ascii")

# Layout A converter's default --pattern for the tensors it quantizes (gguf-formats.md A2.2).
_A_QUANTIZABLE = re.compile(r"encoder\.layers\.\d+\.(feed_forward\d+|self_attn|conv)\.[^.]+\.weight$")
_POINTWISE = re.compile(r"encoder\.layers\.\d+\.conv\.pointwise_conv\d+\.weight$")
_DEPTHWISE = re.compile(r"encoder\.layers\.\d+\.conv\.depthwise_conv\.weight$")
_LSTM_TORCH = re.compile(r"^(.*\.lstm)\.(weight|bias)_(ih|hh)_l(\d+)$")
# Layout B: "Linear" weights get the chosen outtype, convolutions and the embedding F16 (B1.2).
_B_LINEAR = re.compile(
    r"^(encoder\.pre_encode\.out\.weight"
    r"|encoder\.layers\.\d+\.(feed_forward\d+\.linear\d+|self_attn\.linear_[a-z]+|conv\.pointwise_conv\d+)\.weight"
    r"|decoder\.prediction\.dec_rnn\.lstm\.(ih|hh)_l\d+\.weight"
    r"|joint\.(enc|pred|joint_net\.\d+)\.weight)$"
)
_B_HALF = re.compile(
    r"^(encoder\.pre_encode\.conv\.\d+\.weight"
    r"|encoder\.layers\.\d+\.conv\.depthwise_conv\.weight"
    r"|decoder\.prediction\.embed\.weight)$"
)


@dataclass(frozen=True)
class ModelSize:
    """Hyperparameters of one cache-aware FastConformer RNN-T model.

    ``vocab`` counts the real tokens; the blank is one more id, the last. ``att_left`` and ``att_right``
    are the attention context options ``[[att_left, r] for r in att_right]``; the first right context is
    the default. The remaining defaults are those of nemotron-speech-streaming-en-0.6b.
    """

    n_layers: int
    d_model: int
    n_heads: int
    d_ff: int
    subsampling_channels: int
    n_mels: int = 128
    conv_kernel: int = 9
    subsampling_factor: int = 8
    pred_hidden: int = 640
    pred_layers: int = 2
    joint_dim: int = 640
    vocab: int = 1024
    att_left: int = 70
    att_right: Tuple[int, ...] = (13, 6, 1, 0)
    max_symbols: int = 10

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not a multiple of n_heads {self.n_heads}")
        f = self.subsampling_factor
        if f < 2 or f & (f - 1):
            raise ValueError(f"subsampling_factor must be a power of two >= 2, not {f}")
        if not self.att_right:
            raise ValueError("att_right needs at least one right context")
        # A list would make the frozen dataclass unhashable; accept it and store a tuple.
        object.__setattr__(self, "att_right", tuple(int(r) for r in self.att_right))

    @property
    def d_head(self) -> int:
        """Attention head width, d_model / n_heads."""
        return self.d_model // self.n_heads

    @property
    def vocab_size(self) -> int:
        """Number of output classes: the real tokens plus the blank."""
        return self.vocab + 1

    @property
    def subsampling_stages(self) -> int:
        """Number of stride-2 convolution stages in the subsampling stack."""
        return int(math.log2(self.subsampling_factor))

    @property
    def subsampled_freq(self) -> int:
        """Frequency bins left after subsampling; each causal stride-2 stage maps x to x // 2 + 1."""
        f = self.n_mels
        for _ in range(self.subsampling_stages):
            f = f // 2 + 1
        return f


#: The size used in CI: 2 layers, d_model 128; the same structure as the tiny NeMo fixture.
TINY = ModelSize(
    n_layers=2, d_model=128, n_heads=4, d_ff=512, subsampling_channels=32, pred_hidden=128, joint_dim=128, vocab=128
)
#: The size of nemotron-speech-streaming-en-0.6b (about 618 M parameters).
FULL = ModelSize(n_layers=24, d_model=1024, n_heads=8, d_ff=4096, subsampling_channels=256)


# ---------------------------------------------------------------------------------------------------
# Vocabulary


def vocab_pieces(n: int, seed: int = 0, *, max_bytes: int = _LEGACY_RECORD - 1) -> List[str]:
    """Return ``n`` distinct SentencePiece-like pieces, deterministic for a given ``seed``.

    Id 0 is ``"<unk>"`` (as in NeMo's tokenizers); the rest are a random mix of word starts (``"▁"``,
    U+2581, followed by lowercase letters) and continuation pieces (lowercase letters only). Every piece
    uses at most ``max_bytes`` UTF-8 bytes; the default 7 lets layout A's legacy 8-byte-record vocabulary
    be written. A larger ``max_bytes`` gives some longer pieces, as in the multilingual vocabulary.
    """
    if n < 1:
        raise ValueError(f"a vocabulary needs at least <unk>, got n={n}")
    if max_bytes < 2:
        raise ValueError(f"max_bytes must be at least 2, not {max_bytes}")
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    prefix_bytes = len(_WORD_START.encode("utf-8"))
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
            piece = _WORD_START + "".join(letters[rng.integers(0, 26, size=k)])
        else:
            # Continuations of one letter would be only 26; start at two like most BPE merges.
            k = int(rng.integers(2, max_bytes + 1))
            piece = "".join(letters[rng.integers(0, 26, size=k)])
        if piece not in seen:
            seen.add(piece)
            pieces.append(piece)
    return pieces


# ---------------------------------------------------------------------------------------------------
# Deterministic buffers


def _hann_window() -> np.ndarray:
    # NeMo uses torch.hann_window(400, periodic=False); np.hanning is the same symmetric window (torch's
    # float32 arithmetic differs from it by at most 2e-7).
    return np.hanning(_WIN_LENGTH).astype(np.float32)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    # Slaney's scale (librosa's default, htk=False): linear below 1 kHz, logarithmic above.
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    hz = np.asarray(hz, dtype=np.float64)
    return np.where(
        hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep, hz / f_sp
    )


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def _mel_filterbank(n_mels: int) -> np.ndarray:
    """Slaney-normalised mel filterbank (n_mels, n_fft // 2 + 1), float32, as librosa.filters.mel builds it."""
    fft_freqs = np.linspace(0.0, _SAMPLE_RATE / 2, _N_FFT // 2 + 1)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(_FMAX), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    # librosa stores the triangles in float32 before scaling them; rounding twice like it does makes the
    # result bit-identical to the filterbank in real checkpoints.
    weights = np.maximum(0.0, np.minimum(lower, upper)).astype(np.float32)
    enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])
    return (weights * enorm[:, None]).astype(np.float32)


def _relative_pe(d_model: int, max_len: int = _POS_EMB_MAX_LEN) -> np.ndarray:
    """Sinusoidal table (2 * max_len - 1, d_model) for positions max_len - 1 down to -(max_len - 1)."""
    positions = np.arange(max_len - 1, -max_len, -1, dtype=np.float64)
    inv_freq = 10000.0 ** (-np.arange(0, d_model, 2, dtype=np.float64) / d_model)
    angles = positions[:, None] * inv_freq[None, :]
    pe = np.empty((positions.size, d_model), dtype=np.float32)
    pe[:, 0::2] = np.sin(angles)
    pe[:, 1::2] = np.cos(angles[:, : d_model // 2])
    return pe


# ---------------------------------------------------------------------------------------------------
# Random state dict


@dataclass(frozen=True)
class _Param:
    name: str
    shape: Tuple[int, ...]
    kind: str  # "normal", "layernorm_weight", "embedding", "window" or "fb"
    scale: float = 1.0


def _param_specs(size: ModelSize) -> List[_Param]:
    """Every state-dict entry of the model, in NeMo's state-dict order, with its initialisation."""
    d, c, h = size.d_model, size.subsampling_channels, size.pred_hidden
    specs: List[_Param] = [
        _Param("preprocessor.featurizer.window", (_WIN_LENGTH,), "window"),
        _Param("preprocessor.featurizer.fb", (1, size.n_mels, _N_FFT // 2 + 1), "fb"),
    ]

    def linear(name: str, out_f: int, in_f: int) -> None:
        specs.append(_Param(name, (out_f, in_f), "normal", in_f**-0.5))

    def conv(name: str, shape: Tuple[int, ...], bias: bool) -> None:
        fan_in = int(np.prod(shape[1:]))  # in_channels / groups * kernel size
        specs.append(_Param(name + ".weight", shape, "normal", fan_in**-0.5))
        if bias:
            specs.append(_Param(name + ".bias", (shape[0],), "normal", 0.05))

    def layer_norm(name: str) -> None:
        specs.append(_Param(name + ".weight", (d,), "layernorm_weight", 0.1))
        specs.append(_Param(name + ".bias", (d,), "normal", 0.05))

    # NeMo registers pre_encode.out before pre_encode.conv, so it comes first in the state dict.
    linear("encoder.pre_encode.out.weight", d, c * size.subsampled_freq)
    specs.append(_Param("encoder.pre_encode.out.bias", (d,), "normal", 0.05))
    conv("encoder.pre_encode.conv.0", (c, 1, 3, 3), bias=True)
    for s in range(1, size.subsampling_stages):
        # Sequential indices: stage s is [depthwise, pointwise, ReLU] at 3s-1, 3s, 3s+1.
        conv(f"encoder.pre_encode.conv.{3 * s - 1}", (c, 1, 3, 3), bias=True)
        conv(f"encoder.pre_encode.conv.{3 * s}", (c, c, 1, 1), bias=True)

    for i in range(size.n_layers):
        p = f"encoder.layers.{i}."
        layer_norm(p + "norm_feed_forward1")
        linear(p + "feed_forward1.linear1.weight", size.d_ff, d)
        linear(p + "feed_forward1.linear2.weight", d, size.d_ff)
        layer_norm(p + "norm_conv")
        conv(p + "conv.pointwise_conv1", (2 * d, d, 1), bias=False)
        conv(p + "conv.depthwise_conv", (d, 1, size.conv_kernel), bias=False)
        layer_norm(p + "conv.batch_norm")  # a LayerNorm despite the name (conv_norm_type layer_norm)
        conv(p + "conv.pointwise_conv2", (d, d, 1), bias=False)
        layer_norm(p + "norm_self_att")
        for b in ("u", "v"):
            specs.append(_Param(p + f"self_attn.pos_bias_{b}", (size.n_heads, size.d_head), "normal", 0.1))
        for proj in ("q", "k", "v", "out", "pos"):
            linear(p + f"self_attn.linear_{proj}.weight", d, d)
        layer_norm(p + "norm_feed_forward2")
        linear(p + "feed_forward2.linear1.weight", size.d_ff, d)
        linear(p + "feed_forward2.linear2.weight", d, size.d_ff)
        layer_norm(p + "norm_out")

    specs.append(_Param("decoder.prediction.embed.weight", (size.vocab_size, h), "embedding"))
    for layer in range(size.pred_layers):
        lstm = "decoder.prediction.dec_rnn.lstm."
        for w in ("ih", "hh"):
            specs.append(_Param(f"{lstm}weight_{w}_l{layer}", (4 * h, h), "normal", h**-0.5))
        for w in ("ih", "hh"):
            specs.append(_Param(f"{lstm}bias_{w}_l{layer}", (4 * h,), "normal", 0.05))

    linear("joint.pred.weight", size.joint_dim, h)
    specs.append(_Param("joint.pred.bias", (size.joint_dim,), "normal", 0.05))
    linear("joint.enc.weight", size.joint_dim, d)
    specs.append(_Param("joint.enc.bias", (size.joint_dim,), "normal", 0.05))
    linear("joint.joint_net.2.weight", size.vocab_size, size.joint_dim)
    specs.append(_Param("joint.joint_net.2.bias", (size.vocab_size,), "normal", 0.05))
    return specs


def _generate(size: ModelSize, seed: int) -> Iterator[Tuple[str, np.ndarray]]:
    """Yield the random state dict one tensor at a time, so a full-size file never holds all of it."""
    rng = np.random.default_rng(seed)
    for p in _param_specs(size):
        if p.kind == "window":
            yield p.name, _hann_window()
            continue
        if p.kind == "fb":
            yield p.name, _mel_filterbank(size.n_mels)[None]
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
# Layouts


@dataclass
class _FileTensor:
    name: str  # as written in the file
    shape: Tuple[int, ...]  # PyTorch order, after the layout's transform
    source: Optional[str]  # state-dict name it is made from; None for tensors computed here
    transform: Optional[Callable[[np.ndarray], np.ndarray]] = None
    make: Optional[Callable[[], np.ndarray]] = None  # for tensors without a source
    override: Optional[np.ndarray] = field(default=None, repr=False)
    qtype: Any = None  # gguf.GGMLQuantizationType once chosen


def _squeeze_last(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[:-1])


def _depthwise_to_a(x: np.ndarray) -> np.ndarray:
    # (C, 1, k) -> (k, C): layout A's engine multiplies shifted frames by rows of a [C, k] ggml tensor.
    return np.ascontiguousarray(x[:, 0, :].T)


def _layout_plan(layout: str, params: Sequence[Tuple[str, Tuple[int, ...]]], size: ModelSize) -> List[_FileTensor]:
    """Map state-dict entries to the tensors the chosen converter would write, in its order."""
    plan: List[_FileTensor] = []
    if layout == "asr":
        plan.append(
            _FileTensor(
                "encoder.pos_enc.pe",
                (2 * _POS_EMB_MAX_LEN - 1, size.d_model),
                None,
                make=lambda: _relative_pe(size.d_model),
            )
        )
        fb_shape = dict(params).get("preprocessor.featurizer.fb")
        if fb_shape is not None:
            plan.append(_FileTensor("preprocessor.fb", tuple(fb_shape[-2:]), "preprocessor.featurizer.fb", _fb_to_2d))
        else:
            # NVIDIA's converter builds the filterbank itself rather than taking it from the checkpoint.
            n_fb = (size.n_mels, _N_FFT // 2 + 1)
            plan.append(_FileTensor("preprocessor.fb", n_fb, None, make=lambda: _mel_filterbank(size.n_mels)))

    for name, shape in params:
        shape = tuple(int(s) for s in shape)
        file_name, transform = name, None
        if name.startswith("preprocessor."):
            if layout == "asr":
                continue  # dropped by NVIDIA's converter; fb was handled above
        elif _POINTWISE.search(name) and len(shape) == 3 and shape[-1] == 1:
            transform, shape = _squeeze_last, shape[:-1]
        elif _DEPTHWISE.search(name) and len(shape) == 3 and layout == "nemo":
            transform, shape = _depthwise_to_a, (shape[2], shape[0])
        elif layout == "asr":
            m = _LSTM_TORCH.match(name)
            if m:
                file_name = f"{m.group(1)}.{m.group(3)}_l{m.group(4)}.{m.group(2)}"
        plan.append(_FileTensor(file_name, shape, name, transform))
    return plan


def _fb_to_2d(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[-2:])


def _default_qtype(gguf: Any, layout: str, name: str, shape: Tuple[int, ...], weight_qtype: Any) -> Any:
    """The dtype the layout's converter gives a tensor, with ggml's block-size fallback to F16."""
    q = gguf.GGMLQuantizationType
    n_elements = int(np.prod(shape)) if shape else 1
    if layout == "nemo":
        selected = bool(_A_QUANTIZABLE.search(name)) and len(shape) >= 2 and n_elements >= 256
        selected = selected and not _DEPTHWISE.search(name)
        qtype = weight_qtype if selected else q.F32
    elif _B_LINEAR.match(name):
        qtype = weight_qtype
    elif _B_HALF.match(name):
        qtype = q.F16
    else:
        qtype = q.F32
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    # A row (ggml ne[0], the last PyTorch dim) must hold whole blocks; ggml's converters keep F16 otherwise.
    if block > 1 and (not shape or shape[-1] % block):
        return q.F16
    return qtype


# ggml types stored as plain numpy arrays; everything else goes through gguf's block quantizers.
_PLAIN_NUMPY = {
    "F32": np.float32,
    "F16": np.float16,
    "F64": np.float64,
    "I8": np.int8,
    "I16": np.int16,
    "I32": np.int32,
    "I64": np.int64,
}


def _encode(gguf: Any, x: np.ndarray, qtype: Any) -> np.ndarray:
    """Return the bytes of ``x`` (float32, final shape) stored as ``qtype``, as a numpy array."""
    plain = _PLAIN_NUMPY.get(qtype.name)
    if plain is not None:
        return np.ascontiguousarray(x, dtype=plain)
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if x.ndim == 0 or x.shape[-1] % block:
        raise ValueError(f"cannot store shape {x.shape} as {qtype.name}: rows must be multiples of {block}")
    return gguf.quants.quantize(np.ascontiguousarray(x, dtype=np.float32), qtype)


def _qtype_from(gguf: Any, spec: Any) -> Any:
    if isinstance(spec, gguf.GGMLQuantizationType):
        return spec
    try:
        return gguf.GGMLQuantizationType[str(spec).upper()]
    except KeyError:
        raise ValueError(f"unknown tensor type {spec!r}") from None


# ---------------------------------------------------------------------------------------------------
# Metadata

_KV = Tuple[Any, Any, Any]  # (value, GGUFValueType, array sub-type or None)


def _metadata_nemo(
    gguf: Any, size: ModelSize, vocab: List[str], name: str, extended: bool, legacy_vocab: Optional[bool]
) -> Dict[str, _KV]:
    t = gguf.GGUFValueType
    kv: Dict[str, _KV] = {
        "general.architecture": ("nemo", t.STRING, None),
        "general.name": (name, t.STRING, None),
        "tokenizer.vocab_list": (list(vocab), t.ARRAY, t.STRING),
    }
    encoded = [piece.encode("utf-8") for piece in vocab]
    fits = all(len(b) < _LEGACY_RECORD for b in encoded)
    if legacy_vocab and not fits:
        longest = max(encoded, key=len)
        raise ValueError(f"legacy vocab records hold at most 7 bytes; {longest.decode('utf-8')!r} has {len(longest)}")
    if fits and legacy_vocab is not False:
        # One GGUF STRING whose payload is NUL-padded records; passed as bytes so the NULs survive.
        blob = b"".join(b.ljust(_LEGACY_RECORD, b"\0") for b in encoded)
        kv["tokenizer.vocab"] = (blob, t.STRING, None)
    # The C++ port reads every hyperparameter with ggml's UINT32 getter, which asserts the type.
    for key, value in (
        ("n_mels", size.n_mels),
        ("d_model", size.d_model),
        ("n_heads", size.n_heads),
        ("d_head", size.d_head),
        ("d_ff", size.d_ff),
        ("n_layers", size.n_layers),
        ("kernel_size", size.conv_kernel),
        ("vocab_size", size.vocab_size),
        ("decoder_dim", size.pred_hidden),
        ("joint_dim", size.joint_dim),
        ("subsampling_factor", size.subsampling_factor),
        ("att_left_context", size.att_left),
        ("num_prompts", 0),
    ):
        kv["nemo." + key] = (value, t.UINT32, None)
    if extended:
        # This project's own keys: what layout A otherwise leaves to compiled-in defaults.
        kv.update(
            {
                "nemo.att_context_right": (list(size.att_right), t.ARRAY, t.INT32),
                "nemo.max_symbols_per_step": (size.max_symbols, t.UINT32, None),
                "nemo.subsampling_conv_channels": (size.subsampling_channels, t.UINT32, None),
                "nemo.pred_num_layers": (size.pred_layers, t.UINT32, None),
                "nemo.xscaling": (False, t.BOOL, None),
                "nemo.preprocessor.sample_rate": (_SAMPLE_RATE, t.UINT32, None),
                "nemo.preprocessor.window_size": (0.025, t.FLOAT32, None),
                "nemo.preprocessor.window_stride": (0.01, t.FLOAT32, None),
                "nemo.preprocessor.n_fft": (_N_FFT, t.UINT32, None),
                "nemo.preprocessor.preemph": (0.97, t.FLOAT32, None),
                "nemo.preprocessor.normalize": ("NA", t.STRING, None),
                "nemo.preprocessor.log_zero_guard_value": (_LOG_ZERO_GUARD, t.FLOAT32, None),
                "nemo.preprocessor.mag_power": (2.0, t.FLOAT32, None),
                "nemo.preprocessor.dither": (0.0, t.FLOAT32, None),
            }
        )
    return kv


def _metadata_asr(
    gguf: Any, size: ModelSize, vocab: List[str], name: str, extended: bool, weight_type: str
) -> Dict[str, _KV]:
    t = gguf.GGUFValueType
    u32, f32, s, b = t.UINT32, t.FLOAT32, t.STRING, t.BOOL
    # Key order and types as NVIDIA's conversion/asr.py writes them.
    kv: Dict[str, _KV] = {
        "general.architecture": ("asr", s, None),
        "general.name": (name, s, None),
        "asr.head_type": ("rnnt", s, None),
        "general.file_type": (WEIGHT_TYPES[weight_type], u32, None),
        "asr.encoder.d_model": (size.d_model, u32, None),
        "asr.encoder.n_layers": (size.n_layers, u32, None),
        "asr.encoder.n_heads": (size.n_heads, u32, None),
        "asr.encoder.d_ff": (size.d_ff, u32, None),
        "asr.encoder.conv_kernel_size": (size.conv_kernel, u32, None),
        "asr.encoder.subsampling_factor": (size.subsampling_factor, u32, None),
        "asr.encoder.subsampling_conv_channels": (size.subsampling_channels, u32, None),
        "asr.encoder.feat_in": (size.n_mels, u32, None),
        "asr.encoder.xscaling": (False, b, None),
        "asr.encoder.use_bias": (False, b, None),
        "asr.encoder.q8_layout": ("block_q8_0", s, None),
        "asr.encoder.qkv_q8_layout": ("block_q8_0", s, None),
        "asr.encoder.pos_emb_max_len": (_POS_EMB_MAX_LEN, u32, None),
        "asr.encoder.cache_supported": (True, b, None),
        "asr.encoder.train_left_ctx": (size.att_left, u32, None),
        "asr.encoder.train_right_ctx": (size.att_right[0], u32, None),
        "asr.encoder.offline_left_ctx": (size.att_left, t.INT32, None),
        "asr.encoder.offline_right_ctx": (size.att_right[0], t.INT32, None),
        "asr.encoder.conv_norm": ("layer_norm", s, None),
        "asr.encoder.conv_context": ("causal", s, None),
        "asr.encoder.att_context_style": ("chunked_limited", s, None),
        "asr.preprocessor.sample_rate": (_SAMPLE_RATE, u32, None),
        "asr.preprocessor.window_size": (0.025, f32, None),
        "asr.preprocessor.window_stride": (0.01, f32, None),
        "asr.preprocessor.n_fft": (_N_FFT, u32, None),
        "asr.preprocessor.features": (size.n_mels, u32, None),
        "asr.preprocessor.normalize": ("NA", s, None),
        "asr.preprocessor.preemph": (0.97, f32, None),
        "asr.preprocessor.dither": (0.0, f32, None),
        "asr.preprocessor.stft_center_window": (True, b, None),
        "asr.preprocessor.hann_periodic": (False, b, None),
        "asr.preprocessor.mask_invalid_frames": (True, b, None),
        "asr.rnnt.vocab_size": (size.vocab_size, u32, None),
        "asr.rnnt.blank_id": (size.vocab_size - 1, u32, None),
        "asr.rnnt.pred_embed_dim": (size.pred_hidden, u32, None),
        "asr.rnnt.pred_hidden": (size.pred_hidden, u32, None),
        "asr.rnnt.pred_num_layers": (size.pred_layers, u32, None),
        "asr.rnnt.joint_dim": (size.joint_dim, u32, None),
        "asr.rnnt.max_symbols_per_step": (size.max_symbols, u32, None),
        "asr.rnnt.num_prompts": (0, u32, None),
        "asr.tokenizer.type": ("sentencepiece_bpe", s, None),
        "asr.tokenizer.vocab": (list(vocab), t.ARRAY, s),
        "asr.tokenizer.spm_model": (_SPM_PLACEHOLDER, s, None),
    }
    if extended:
        kv.update(
            {
                "asr.encoder.att_context_right": (list(size.att_right), t.ARRAY, t.INT32),
                "asr.preprocessor.log_zero_guard_value": (_LOG_ZERO_GUARD, f32, None),
                "asr.preprocessor.mag_power": (2.0, f32, None),
            }
        )
    return kv


def _value_type(gguf: Any, spec: Any) -> Any:
    if isinstance(spec, gguf.GGUFValueType):
        return spec
    try:
        return gguf.GGUFValueType[str(spec).upper()]
    except KeyError:
        raise ValueError(f"unknown GGUF value type {spec!r}") from None


def _parse_set_key(gguf: Any, key: str, spec: Any) -> _KV:
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


def _import_gguf() -> Any:
    try:
        import gguf
    except ImportError as exc:
        raise ImportError(_GGUF_MISSING) from exc
    return gguf


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
            drawn, array = next(self._iter)  # type: ignore[call-overload]
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
        ``"nemo"``: layout A, as the C++ port's ``convert_to_gguf.py`` writes it (UINT32 hyperparameters,
        ``tokenizer.vocab_list`` plus the legacy ``tokenizer.vocab`` blob, depthwise conv as F32 [C, k],
        preprocessor window and 3-D filterbank; with a quantized ``weight_type`` only the encoder layer
        matrices are quantized; like that converter, no padding after the last tensor's data). ``"asr"``: layout B, as NVIDIA's ``conversion/asr.py`` writes it (the
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
        Layout A's 8-byte-record ``tokenizer.vocab``: ``None`` writes it when every piece fits in 7 bytes
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
    gguf = _import_gguf()
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    if weight_type not in WEIGHT_TYPES:
        raise ValueError(f"weight_type must be one of {tuple(WEIGHT_TYPES)}, not {weight_type!r}")
    weight_qtype = gguf.GGMLQuantizationType[weight_type.upper()]
    path = Path(path)
    pieces = list(vocab) if vocab is not None else vocab_pieces(size.vocab, seed)

    # --- metadata
    if layout == "nemo":
        kv = _metadata_nemo(gguf, size, pieces, name, extended_metadata, legacy_vocab)
    else:
        kv = _metadata_asr(gguf, size, pieces, name, extended_metadata, weight_type)
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
    plan = _layout_plan(layout, params, size)
    by_name = {t.name: t for t in plan}
    for tensor_name in drop_tensors:
        if tensor_name not in by_name:
            raise KeyError(f"drop_tensors: {tensor_name!r} is not a tensor of this file")
        plan.remove(by_name.pop(tensor_name))
    for tensor_name, array in tensor_overrides.items():
        array = np.asarray(array, dtype=np.float32)
        entry = by_name.get(tensor_name)
        if entry is None:
            entry = _FileTensor(tensor_name, (), None)
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
            entry.qtype = _default_qtype(gguf, layout, entry.name, entry.shape, weight_qtype)

    # --- write
    needed = [t.source for t in plan if t.override is None and t.source is not None]
    source = _Source(state_dict, size, seed, needed)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkstemp: its files are mode 0600, and the model should get the usual umask mode.
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    writer = None
    try:
        writer = gguf.GGUFWriter(tmp, arch=layout)
        # The writer pre-adds general.architecture; start from an empty table so order and drops are ours.
        writer.kv_data[0].clear()
        for key, (value, vtype, sub) in kv.items():
            writer.add_key_value(key, value, vtype, sub_type=sub)
        for entry in plan:
            block, type_size = gguf.GGML_QUANT_SIZES[entry.qtype]
            n_elements = int(np.prod(entry.shape)) if entry.shape else 1
            if n_elements % block:
                raise ValueError(f"{entry.name}: {n_elements} elements are not whole {entry.qtype.name} blocks")
            nbytes = n_elements // block * type_size
            writer.add_tensor_info(entry.name, entry.shape, np.dtype(np.float32), nbytes, raw_dtype=entry.qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for entry in plan:
            if entry.override is not None:
                array = entry.override
            elif entry.source is not None:
                array = source.take(entry.source)
                if entry.transform is not None:
                    array = entry.transform(array)
            else:
                assert entry.make is not None
                array = entry.make()
            if tuple(array.shape) != entry.shape:
                raise ValueError(f"{entry.name}: expected shape {entry.shape}, got {tuple(array.shape)}")
            data = _encode(gguf, array, entry.qtype)
            writer.write_tensor_data(data)
            del array
        writer.close()
        if layout == "nemo" and plan:
            # The C++ port's converter pads between tensors but not after the last one; gguf's writer
            # pads it too. Trimming makes the file byte-identical to the converter's (and keeps the quirk:
            # the data section is shorter than the sum of padded tensor sizes ggml computes).
            pad = -data.nbytes % writer.data_alignment
            if pad:
                os.truncate(tmp, tmp.stat().st_size - pad)
        os.replace(tmp, path)
    except BaseException:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------------------------------------------
# Command line


def _main(argv: Optional[Sequence[str]] = None) -> int:
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


if __name__ == "__main__":
    sys.exit(_main())
