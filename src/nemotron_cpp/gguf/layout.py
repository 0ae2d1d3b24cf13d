"""The two GGUF layouts of the model, and the one writer that produces both.

A NeMo state dict (names and PyTorch shapes of ``EncDecRNNTBPEModel``) becomes a GGUF file in either
layout:

* ``"nemo"``: what the C++ port's ``scripts/convert_to_gguf.py`` writes.
* ``"asr"``: what NVIDIA's NeMo-Speech.cpp converter (``conversion/asr.py``) writes.

This module says which tensors each layout holds, under which names, in which shapes and dtypes, and
with which metadata; :func:`write_gguf` writes any such file atomically. The converter
(:mod:`~nemotron_cpp.gguf.convert`), the quantizer (:mod:`~nemotron_cpp.gguf.quantize`) and the random
test models (:mod:`~nemotron_cpp.gguf.random_model`) all write through it.

Writing needs the optional ``gguf`` package (``pip install 'nemotron-cpp[convert]'``), imported only
when a file is written.
"""

from __future__ import annotations

import ctypes
import errno
import math
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "FILE_TYPES",
    "KV",
    "LAYOUTS",
    "LEGACY_RECORD",
    "FileTensor",
    "ModelSize",
    "Preprocessor",
    "StateEntry",
    "check_output",
    "encode",
    "hann_window",
    "import_gguf",
    "layout_metadata",
    "layout_plan",
    "mel_filterbank",
    "relative_pe",
    "state_dict_spec",
    "tensor_type",
    "weight_tensor",
    "write_gguf",
]

_GGUF_MISSING = "writing GGUF files needs the 'gguf' package: pip install 'nemotron-cpp[convert]'"

#: The two layouts: ``"nemo"`` (the C++ port's) and ``"asr"`` (NVIDIA's).
LAYOUTS: Tuple[str, ...] = ("nemo", "asr")

#: Every weight type the writer can produce, with the llama-style ``general.file_type`` the asr layout records.
#: The k-quants are stored uniformly, so they are the "S" (small) variants of llama's file types.
FILE_TYPES: Dict[str, int] = {
    "f32": 0,
    "f16": 1,
    "bf16": 32,
    "q8_0": 7,
    "q6_k": 18,
    "q5_k": 16,
    "q5_1": 9,
    "q5_0": 8,
    "q4_k": 14,
    "q4_1": 3,
    "q4_0": 2,
}

# NVIDIA's converter writes its sinusoidal table for this many positions (asr.encoder.pos_emb_max_len).
_POS_EMB_MAX_LEN = 5000
#: The nemo layout's legacy vocabulary (``tokenizer.vocab``) has fixed 8-byte records, so a piece may use at most
#: 7 bytes plus a NUL.
LEGACY_RECORD = 8

# The nemo layout's converter quantizes the tensors its default --pattern names.
_A_QUANTIZABLE = re.compile(r"encoder\.layers\.\d+\.(feed_forward\d+|self_attn|conv)\.[^.]+\.weight$")
_POINTWISE = re.compile(r"encoder\.layers\.\d+\.conv\.pointwise_conv\d+\.weight$")
_DEPTHWISE = re.compile(r"encoder\.layers\.\d+\.conv\.depthwise_conv\.weight$")
_LSTM_TORCH = re.compile(r"^(.*\.lstm)\.(weight|bias)_(ih|hh)_l(\d+)$")
# The asr layout's converter: "Linear" weights get the chosen outtype, convolutions and the embedding F16.
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
    xscaling: bool = False
    use_bias: bool = False  #: Linear and pointwise/depthwise conv biases in the conformer layers
    pos_emb_max_len: int = _POS_EMB_MAX_LEN
    #: Multilingual models (NeMo's ...WithPrompt): the one-hot prompts of the prompt kernel (128 in
    #: Nemotron 3.5) and the prompt dictionary, (language code, prompt index) pairs; 0 and () otherwise.
    num_prompts: int = 0
    languages: Tuple[Tuple[str, int], ...] = ()

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
        languages = tuple((str(code), int(index)) for code, index in dict(self.languages).items())
        object.__setattr__(self, "languages", languages)
        if bool(self.num_prompts) != bool(languages):
            raise ValueError("a multilingual model has both num_prompts and languages; other models neither")
        if len(languages) != len(self.languages) or any(not 0 <= i < self.num_prompts for _, i in languages):
            raise ValueError(f"languages must name each code once with an index below num_prompts "
                             f"{self.num_prompts}: {self.languages!r}")

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


@dataclass(frozen=True)
class Preprocessor:
    """Log-mel frontend settings (NeMo's ``AudioToMelSpectrogramPreprocessor``).

    The defaults are this model family's; ``dither`` is what the file records (NeMo applies none at
    inference).
    """

    sample_rate: int = 16000
    window_size: float = 0.025
    window_stride: float = 0.01
    n_fft: int = 512
    preemph: float = 0.97
    normalize: str = "NA"
    log_zero_guard_value: float = 2.0**-24
    mag_power: float = 2.0
    dither: float = 0.0

    @property
    def win_length(self) -> int:
        """Window length in samples."""
        return int(round(self.window_size * self.sample_rate))


@dataclass(frozen=True)
class StateEntry:
    """One entry of a NeMo state dict: name, PyTorch shape and role.

    ``role`` is ``"weight"`` (Linear, convolution or LSTM weight), ``"bias"``, ``"norm_weight"``,
    ``"norm_bias"``, ``"pos_bias"``, ``"embedding"``, ``"window"`` or ``"fb"``.
    """

    name: str
    shape: Tuple[int, ...]
    role: str


def state_dict_spec(size: ModelSize, preprocessor: Preprocessor = Preprocessor()) -> List[StateEntry]:
    """Every state-dict entry of the model ``size`` describes, in NeMo's state-dict order."""
    d, c, h = size.d_model, size.subsampling_channels, size.pred_hidden
    spec = [
        StateEntry("preprocessor.featurizer.window", (preprocessor.win_length,), "window"),
        StateEntry("preprocessor.featurizer.fb", (1, size.n_mels, preprocessor.n_fft // 2 + 1), "fb"),
    ]

    def add(name: str, shape: Tuple[int, ...], role: str) -> None:
        spec.append(StateEntry(name, shape, role))

    def module(name: str, weight_shape: Tuple[int, ...], bias: bool) -> None:
        add(name + ".weight", weight_shape, "weight")
        if bias:
            add(name + ".bias", (weight_shape[0],), "bias")

    def layer_norm(name: str) -> None:
        add(name + ".weight", (d,), "norm_weight")
        add(name + ".bias", (d,), "norm_bias")

    # NeMo registers pre_encode.out before pre_encode.conv, so it comes first in the state dict.
    module("encoder.pre_encode.out", (d, c * size.subsampled_freq), bias=True)
    module("encoder.pre_encode.conv.0", (c, 1, 3, 3), bias=True)
    for s in range(1, size.subsampling_stages):
        # Sequential indices: stage s is [depthwise, pointwise, ReLU] at 3s-1, 3s, 3s+1.
        module(f"encoder.pre_encode.conv.{3 * s - 1}", (c, 1, 3, 3), bias=True)
        module(f"encoder.pre_encode.conv.{3 * s}", (c, c, 1, 1), bias=True)

    b = size.use_bias
    for i in range(size.n_layers):
        p = f"encoder.layers.{i}."
        layer_norm(p + "norm_feed_forward1")
        module(p + "feed_forward1.linear1", (size.d_ff, d), b)
        module(p + "feed_forward1.linear2", (d, size.d_ff), b)
        layer_norm(p + "norm_conv")
        module(p + "conv.pointwise_conv1", (2 * d, d, 1), b)
        module(p + "conv.depthwise_conv", (d, 1, size.conv_kernel), b)
        layer_norm(p + "conv.batch_norm")  # a LayerNorm despite the name (conv_norm_type layer_norm)
        module(p + "conv.pointwise_conv2", (d, d, 1), b)
        layer_norm(p + "norm_self_att")
        for u in ("u", "v"):
            add(p + f"self_attn.pos_bias_{u}", (size.n_heads, size.d_head), "pos_bias")
        for proj in ("q", "k", "v", "out"):
            module(p + f"self_attn.linear_{proj}", (d, d), b)
        module(p + "self_attn.linear_pos", (d, d), bias=False)  # NeMo never gives it a bias
        layer_norm(p + "norm_feed_forward2")
        module(p + "feed_forward2.linear1", (size.d_ff, d), b)
        module(p + "feed_forward2.linear2", (d, size.d_ff), b)
        layer_norm(p + "norm_out")

    add("decoder.prediction.embed.weight", (size.vocab_size, h), "embedding")
    lstm = "decoder.prediction.dec_rnn.lstm."
    for layer in range(size.pred_layers):
        for w in ("ih", "hh"):
            add(f"{lstm}weight_{w}_l{layer}", (4 * h, h), "weight")
        for w in ("ih", "hh"):
            add(f"{lstm}bias_{w}_l{layer}", (4 * h,), "bias")

    module("joint.pred", (size.joint_dim, h), bias=True)
    module("joint.enc", (size.joint_dim, d), bias=True)
    module("joint.joint_net.2", (size.vocab_size, size.joint_dim), bias=True)
    if size.num_prompts:
        # NeMo builds the prompt kernel after the rest of the model: last in its state dict.
        module("prompt_kernel.0", (2 * d, d + size.num_prompts), bias=True)
        module("prompt_kernel.2", (d, 2 * d), bias=True)
    return spec


# ---------------------------------------------------------------------------------------------------
# Deterministic buffers


def hann_window(win_length: int = 400) -> np.ndarray:
    """The symmetric Hann window NeMo uses (``torch.hann_window(win_length, periodic=False)``), float32."""
    # np.hanning is the same symmetric window; torch's float32 arithmetic differs by at most 2e-7.
    return np.hanning(win_length).astype(np.float32)


def _hz_to_mel(hz: Union[float, np.ndarray]) -> np.ndarray:
    # Slaney's scale (librosa's default, htk=False): linear below 1 kHz, logarithmic above.
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    hz = np.asarray(hz, dtype=np.float64)
    return np.asarray(np.where(
        hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep, hz / f_sp
    ))


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def mel_filterbank(n_mels: int, sample_rate: int = 16000, n_fft: int = 512) -> np.ndarray:
    """Slaney-normalised mel filterbank (n_mels, n_fft // 2 + 1), float32, as librosa.filters.mel builds it
    for fmin 0 and fmax sample_rate / 2."""
    fft_freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    # librosa stores the triangles in float32 before scaling them; rounding twice like it does makes the
    # result bit-identical to the filterbank in real checkpoints.
    weights = np.maximum(0.0, np.minimum(lower, upper)).astype(np.float32)
    enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])
    return np.asarray(weights * enorm[:, None], dtype=np.float32)


def relative_pe(d_model: int, max_len: int = _POS_EMB_MAX_LEN) -> np.ndarray:
    """Sinusoidal table (2 * max_len - 1, d_model) for positions max_len - 1 down to -(max_len - 1)."""
    positions = np.arange(max_len - 1, -max_len, -1, dtype=np.float64)
    inv_freq = 10000.0 ** (-np.arange(0, d_model, 2, dtype=np.float64) / d_model)
    angles = positions[:, None] * inv_freq[None, :]
    pe = np.empty((positions.size, d_model), dtype=np.float32)
    pe[:, 0::2] = np.sin(angles)
    pe[:, 1::2] = np.cos(angles[:, : d_model // 2])
    return pe


# ---------------------------------------------------------------------------------------------------
# Tensors of each layout


@dataclass
class FileTensor:
    """One tensor of the file to write and where its values come from.

    Exactly one source applies, checked in this order: ``raw`` (the stored bytes, written as they are),
    ``override`` (values), ``source`` (a state-dict name, passed through ``transform``), ``make``.
    """

    name: str  # as written in the file
    shape: Tuple[int, ...]  # PyTorch order, after the layout's transform
    source: Optional[str]  # state-dict name it is made from; None for tensors computed here
    transform: Optional[Callable[[np.ndarray], np.ndarray]] = None
    make: Optional[Callable[[], np.ndarray]] = None  # for tensors without a source
    override: Optional[np.ndarray] = field(default=None, repr=False)
    raw: Optional[np.ndarray] = field(default=None, repr=False)
    qtype: Any = None  # gguf.GGMLQuantizationType once chosen


def _squeeze_last(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[:-1])


def _depthwise_to_a(x: np.ndarray) -> np.ndarray:
    # (C, 1, k) -> (k, C): the nemo layout's engine multiplies shifted frames by rows of a [C, k] ggml tensor.
    return np.ascontiguousarray(x[:, 0, :].T)


def _fb_to_2d(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[-2:])


def layout_plan(
    layout: str,
    params: Sequence[Tuple[str, Tuple[int, ...]]],
    size: ModelSize,
    preprocessor: Preprocessor = Preprocessor(),
) -> List[FileTensor]:
    """Map state-dict entries ``(name, PyTorch shape)`` to the tensors the layout's converter writes, in
    its order. The dtypes are left for :func:`tensor_type` to choose."""
    plan: List[FileTensor] = []
    if layout == "asr":
        d_model, max_len = size.d_model, size.pos_emb_max_len
        pe_shape = (2 * max_len - 1, d_model)
        plan.append(FileTensor("encoder.pos_enc.pe", pe_shape, None, make=lambda: relative_pe(d_model, max_len)))
        fb_shape = dict(params).get("preprocessor.featurizer.fb")
        if fb_shape is not None:
            plan.append(FileTensor("preprocessor.fb", tuple(fb_shape[-2:]), "preprocessor.featurizer.fb", _fb_to_2d))
        else:
            # NVIDIA's converter builds the filterbank itself rather than taking it from the checkpoint.
            n_mels, sr, n_fft = size.n_mels, preprocessor.sample_rate, preprocessor.n_fft
            plan.append(
                FileTensor(
                    "preprocessor.fb", (n_mels, n_fft // 2 + 1), None, make=lambda: mel_filterbank(n_mels, sr, n_fft)
                )
            )

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
        plan.append(FileTensor(file_name, shape, name, transform))
    return plan


def weight_tensor(layout: str, name: str, shape: Sequence[int]) -> bool:
    """True when the layout stores this file tensor (file name, PyTorch-order shape) in the file's weight
    type; every other tensor has a fixed type."""
    if layout == "nemo":
        n_elements = int(np.prod(shape)) if len(shape) else 1
        matrix = len(shape) >= 2 and n_elements >= 256
        return matrix and bool(_A_QUANTIZABLE.search(name)) and not _DEPTHWISE.search(name)
    return bool(_B_LINEAR.match(name))


def tensor_type(gguf: Any, layout: str, name: str, shape: Sequence[int], weight_qtype: Any) -> Any:
    """The dtype the layout's converter gives a tensor, with ggml's block-size fallback to F16."""
    q = gguf.GGMLQuantizationType
    if weight_tensor(layout, name, shape):
        qtype = weight_qtype
    elif layout == "asr" and _B_HALF.match(name):
        qtype = q.F16
    else:
        qtype = q.F32
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    # A row (ggml ne[0], the last PyTorch dim) must hold whole blocks; ggml's converters keep F16 otherwise.
    if block > 1 and (not shape or shape[-1] % block):
        return q.F16
    return qtype


# ggml types stored as plain numpy arrays; everything else goes through a block quantizer.
_PLAIN_NUMPY = {
    "F32": np.float32,
    "F16": np.float16,
    "F64": np.float64,
    "I8": np.int8,
    "I16": np.int16,
    "I32": np.int32,
    "I64": np.int64,
}


def encode(gguf: Any, x: np.ndarray, qtype: Any) -> np.ndarray:
    """Return the bytes of ``x`` (float32, final shape) stored as ``qtype``, as a numpy array.

    Block types use gguf's ports of ggml's reference quantizers; the types gguf cannot quantize (the
    k-quants) use ggml's own, through the ggml-python package the engine is built with.
    """
    plain = _PLAIN_NUMPY.get(qtype.name)
    if plain is not None:
        return np.ascontiguousarray(x, dtype=plain)
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    if x.ndim == 0 or x.shape[-1] % block:
        raise ValueError(f"cannot store shape {x.shape} as {qtype.name}: rows must be multiples of {block}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    try:
        return np.asarray(gguf.quants.quantize(x, qtype))
    except NotImplementedError:
        pass
    import ggml  # a dependency of this package: the engine links the libraries it installs

    n_per_row = x.shape[-1]
    n_rows = x.size // n_per_row
    out = np.empty((n_rows, n_per_row // block * type_size), dtype=np.uint8)
    src = x.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    written = ggml.ggml_quantize_chunk(int(qtype), src, out.ctypes.data, 0, n_rows, n_per_row, None)
    if written != out.nbytes:
        raise RuntimeError(f"ggml wrote {written} bytes of {qtype.name}, expected {out.nbytes}")
    return out


# ---------------------------------------------------------------------------------------------------
# Metadata

KV = Tuple[Any, Any, Any]  # (value, GGUFValueType, array sub-type or None)


def layout_metadata(
    gguf: Any,
    layout: str,
    size: ModelSize,
    vocab: Sequence[str],
    *,
    name: str,
    weight_type: str,
    preprocessor: Preprocessor = Preprocessor(),
    extended: bool = True,
    legacy_vocab: Optional[bool] = None,
    spm_model: Optional[str] = None,
) -> Dict[str, KV]:
    """The metadata of a file, ``{key: (value, GGUFValueType, array element type or None)}``, in the
    order and with the types the layout's converter writes.

    ``extended`` adds this project's keys that the original converters leave to defaults (right
    contexts, max symbols, preprocessor settings). ``legacy_vocab`` (the nemo layout) controls the 8-byte-record
    ``tokenizer.vocab``: ``None`` writes it when every piece fits, ``False`` never, ``True`` always.
    ``spm_model`` (the asr layout) is the base64 SentencePiece model proto; without it the file says
    ``asr.tokenizer.type = none``.
    """
    if layout == "nemo":
        return _metadata_nemo(gguf, size, list(vocab), name, preprocessor, extended, legacy_vocab)
    return _metadata_asr(gguf, size, list(vocab), name, preprocessor, extended, weight_type, spm_model)


def _metadata_nemo(
    gguf: Any,
    size: ModelSize,
    vocab: List[str],
    name: str,
    pre: Preprocessor,
    extended: bool,
    legacy_vocab: Optional[bool],
) -> Dict[str, KV]:
    t = gguf.GGUFValueType
    kv: Dict[str, KV] = {
        "general.architecture": ("nemo", t.STRING, None),
        "general.name": (name, t.STRING, None),
        "tokenizer.vocab_list": (list(vocab), t.ARRAY, t.STRING),
    }
    encoded = [piece.encode("utf-8") for piece in vocab]
    fits = all(len(b) < LEGACY_RECORD for b in encoded)
    if legacy_vocab and not fits:
        longest = max(encoded, key=len)
        raise ValueError(f"legacy vocab records hold at most {LEGACY_RECORD - 1} bytes; "
                         f"{longest.decode('utf-8')!r} has {len(longest)}")
    if fits and legacy_vocab is not False:
        # One GGUF STRING whose payload is NUL-padded records; passed as bytes so the NULs survive.
        blob = b"".join(b.ljust(LEGACY_RECORD, b"\0") for b in encoded)
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
        ("num_prompts", size.num_prompts),
    ):
        kv["nemo." + key] = (value, t.UINT32, None)
    if size.languages:
        # The C++ port's converter writes the dictionary as parallel arrays, sorted by code.
        ordered = sorted(size.languages)
        kv["nemo.prompt_langs"] = ([code for code, _ in ordered], t.ARRAY, t.STRING)
        kv["nemo.prompt_ids"] = ([index for _, index in ordered], t.ARRAY, t.INT32)
    if extended:
        # This project's own keys: what the nemo layout otherwise leaves to compiled-in defaults.
        kv.update(
            {
                "nemo.att_context_right": (list(size.att_right), t.ARRAY, t.INT32),
                "nemo.max_symbols_per_step": (size.max_symbols, t.UINT32, None),
                "nemo.subsampling_conv_channels": (size.subsampling_channels, t.UINT32, None),
                "nemo.pred_num_layers": (size.pred_layers, t.UINT32, None),
                "nemo.xscaling": (size.xscaling, t.BOOL, None),
                "nemo.preprocessor.sample_rate": (pre.sample_rate, t.UINT32, None),
                "nemo.preprocessor.window_size": (pre.window_size, t.FLOAT32, None),
                "nemo.preprocessor.window_stride": (pre.window_stride, t.FLOAT32, None),
                "nemo.preprocessor.n_fft": (pre.n_fft, t.UINT32, None),
                "nemo.preprocessor.preemph": (pre.preemph, t.FLOAT32, None),
                "nemo.preprocessor.normalize": (pre.normalize, t.STRING, None),
                "nemo.preprocessor.log_zero_guard_value": (pre.log_zero_guard_value, t.FLOAT32, None),
                "nemo.preprocessor.mag_power": (pre.mag_power, t.FLOAT32, None),
                "nemo.preprocessor.dither": (pre.dither, t.FLOAT32, None),
            }
        )
    return kv


def _metadata_asr(
    gguf: Any,
    size: ModelSize,
    vocab: List[str],
    name: str,
    pre: Preprocessor,
    extended: bool,
    weight_type: str,
    spm_model: Optional[str],
) -> Dict[str, KV]:
    t = gguf.GGUFValueType
    u32, f32, s, b = t.UINT32, t.FLOAT32, t.STRING, t.BOOL
    # Key order and types as NVIDIA's conversion/asr.py writes them.
    kv: Dict[str, KV] = {
        "general.architecture": ("asr", s, None),
        "general.name": (name, s, None),
        "asr.head_type": ("rnnt", s, None),
        "general.file_type": (FILE_TYPES[weight_type], u32, None),
        "asr.encoder.d_model": (size.d_model, u32, None),
        "asr.encoder.n_layers": (size.n_layers, u32, None),
        "asr.encoder.n_heads": (size.n_heads, u32, None),
        "asr.encoder.d_ff": (size.d_ff, u32, None),
        "asr.encoder.conv_kernel_size": (size.conv_kernel, u32, None),
        "asr.encoder.subsampling_factor": (size.subsampling_factor, u32, None),
        "asr.encoder.subsampling_conv_channels": (size.subsampling_channels, u32, None),
        "asr.encoder.feat_in": (size.n_mels, u32, None),
        "asr.encoder.xscaling": (size.xscaling, b, None),
        "asr.encoder.use_bias": (size.use_bias, b, None),
        "asr.encoder.q8_layout": ("block_q8_0", s, None),
        "asr.encoder.qkv_q8_layout": ("block_q8_0", s, None),
        "asr.encoder.pos_emb_max_len": (size.pos_emb_max_len, u32, None),
        "asr.encoder.cache_supported": (True, b, None),
        "asr.encoder.train_left_ctx": (size.att_left, u32, None),
        "asr.encoder.train_right_ctx": (size.att_right[0], u32, None),
        "asr.encoder.offline_left_ctx": (size.att_left, t.INT32, None),
        "asr.encoder.offline_right_ctx": (size.att_right[0], t.INT32, None),
        "asr.encoder.conv_norm": ("layer_norm", s, None),
        "asr.encoder.conv_context": ("causal", s, None),
        "asr.encoder.att_context_style": ("chunked_limited", s, None),
        "asr.preprocessor.sample_rate": (pre.sample_rate, u32, None),
        "asr.preprocessor.window_size": (pre.window_size, f32, None),
        "asr.preprocessor.window_stride": (pre.window_stride, f32, None),
        "asr.preprocessor.n_fft": (pre.n_fft, u32, None),
        "asr.preprocessor.features": (size.n_mels, u32, None),
        "asr.preprocessor.normalize": (pre.normalize, s, None),
        "asr.preprocessor.preemph": (pre.preemph, f32, None),
        "asr.preprocessor.dither": (pre.dither, f32, None),
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
        "asr.rnnt.num_prompts": (size.num_prompts, u32, None),
        "asr.tokenizer.type": ("sentencepiece_bpe" if spm_model is not None else "none", s, None),
        "asr.tokenizer.vocab": (list(vocab), t.ARRAY, s),
    }
    if size.languages:
        kv["asr.rnnt.prompt_dictionary"] = ([f"{code}:{index}" for code, index in size.languages], t.ARRAY, s)
    if spm_model is not None:
        kv["asr.tokenizer.spm_model"] = (spm_model, s, None)
    if extended:
        kv.update(
            {
                "asr.encoder.att_context_right": (list(size.att_right), t.ARRAY, t.INT32),
                "asr.preprocessor.log_zero_guard_value": (pre.log_zero_guard_value, f32, None),
                "asr.preprocessor.mag_power": (pre.mag_power, f32, None),
            }
        )
    return kv


# ---------------------------------------------------------------------------------------------------
# Writer


def import_gguf() -> Any:
    """Import the optional ``gguf`` package, or raise ImportError with the install hint."""
    try:
        import gguf
    except ImportError as exc:
        raise ImportError(_GGUF_MISSING) from exc
    return gguf


def check_output(src: Path, dst: Path, force: bool) -> None:
    """Refuse to write over the input ``src``, or over an existing ``dst`` without ``force``."""
    if dst.exists() and (dst.resolve() == src.resolve() or os.path.samefile(dst, src)):
        raise ValueError(f"refusing to overwrite the input {src}: choose another output file")
    if dst.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(dst))
    if dst.exists() and not force:
        raise FileExistsError(errno.EEXIST, f"{os.strerror(errno.EEXIST)} (use --force to overwrite it)", str(dst))


def _tensor_bytes(gguf: Any, entry: FileTensor) -> int:
    block, type_size = gguf.GGML_QUANT_SIZES[entry.qtype]
    n_elements = int(np.prod(entry.shape)) if entry.shape else 1
    if n_elements % block:
        raise ValueError(f"{entry.name}: {n_elements} elements are not whole {entry.qtype.name} blocks")
    return int(n_elements // block * type_size)


def write_gguf(
    path: "str | os.PathLike[str]",
    kv: Mapping[str, KV],
    tensors: Sequence[FileTensor],
    take: Optional[Callable[[str], np.ndarray]] = None,
    *,
    trim_final_padding: bool = False,
) -> Path:
    """Write a GGUF file with the metadata ``kv`` (in order) and ``tensors`` (in order, dtypes chosen).

    ``take(name)`` returns the state-dict array of a tensor's ``source``. The file is written to a
    temporary file beside ``path`` and renamed at the end, so no reader ever sees a half-written file and
    a failure (an exception or an interrupt) leaves ``path`` as it was. ``trim_final_padding`` leaves out
    the padding after the last tensor's data, as the C++ port's converter does.
    """
    gguf = import_gguf()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sizes = [_tensor_bytes(gguf, entry) for entry in tensors]
    # Not tempfile.mkstemp: its files are mode 0600, and the model should get the usual umask mode.
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    writer = None
    try:
        writer = gguf.GGUFWriter(tmp, arch="")
        # The writer pre-adds general.architecture; start from an empty table so order and drops are ours.
        writer.kv_data[0].clear()
        for key, (value, vtype, sub) in kv.items():
            writer.add_key_value(key, value, vtype, sub_type=sub)
        alignment = kv.get("general.alignment")
        if alignment is not None:
            writer.data_alignment = int(alignment[0])
        for entry, nbytes in zip(tensors, sizes):
            writer.add_tensor_info(entry.name, entry.shape, np.dtype(np.float32), nbytes, raw_dtype=entry.qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        data = None
        for entry, nbytes in zip(tensors, sizes):
            if entry.raw is not None:
                data = entry.raw
            else:
                data = encode(gguf, _values(entry, take), entry.qtype)
            if data.nbytes != nbytes:
                raise ValueError(f"{entry.name}: {data.nbytes} bytes of data, expected {nbytes}")
            writer.write_tensor_data(data)
        writer.close()
        if trim_final_padding and data is not None:
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


def _values(entry: FileTensor, take: Optional[Callable[[str], np.ndarray]]) -> np.ndarray:
    if entry.override is not None:
        array = entry.override
    elif entry.source is not None:
        if take is None:
            raise ValueError(f"{entry.name}: no state dict to take {entry.source!r} from")
        array = take(entry.source)
        if entry.transform is not None:
            array = entry.transform(array)
    else:
        assert entry.make is not None
        array = entry.make()
    if tuple(array.shape) != entry.shape:
        raise ValueError(f"{entry.name}: expected shape {entry.shape}, got {tuple(array.shape)}")
    return array

