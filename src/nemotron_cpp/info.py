"""What a model holds and what the engine was built with, as plain frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from . import _lib

__all__ = ["HParams", "ModelInfo", "TensorInfo", "TensorGroup", "DeviceInfo", "SystemInfo", "system_info"]


@dataclass(frozen=True)
class HParams:
    """Every hyperparameter of a loaded model, whichever GGUF layout it came from.

    Values the file does not carry are inferred from tensor shapes, or else are the model
    family's documented defaults (see README, "Model files").
    """

    # encoder
    n_mels: int
    d_model: int
    n_heads: int
    d_head: int
    d_ff: int
    n_layers: int
    conv_kernel_size: int
    subsampling_factor: int
    subsampling_conv_channels: int
    pos_emb_max_len: int
    xscaling: bool
    use_bias: bool
    att_left_context: int
    att_right_contexts: Tuple[int, ...]  #: the trained right contexts; the first is the default
    # prediction network and joint
    vocab_size: int  #: including the blank
    blank_id: int
    pred_embed_dim: int
    pred_hidden: int
    pred_num_layers: int
    joint_dim: int
    max_symbols_per_step: int
    num_prompts: int
    # log-mel frontend
    sample_rate: int
    n_fft: int
    win_length: int
    hop_length: int
    preemph: float
    log_zero_guard: float
    mag_power: float
    dither: float
    normalize: str  #: "none", "per_feature" or "all_features"


@dataclass(frozen=True)
class ModelInfo:
    """What file a loaded model came from and how the engine holds it, as the engine reports it at load."""

    layout: str  #: "nemo" (the nemotron-asr.cpp port's files) or "asr" (NVIDIA's files)
    name: str  #: the file's ``general.name``, or ""
    weight_type: str  #: the type of the encoder layers' matrices, e.g. "q4_0"
    backend: str  #: the device the model runs on, e.g. "CPU" or "CUDA0"
    n_threads: int  #: CPU threads the engine uses
    file_size: int  #: size of the model file in bytes
    weight_bytes: int  #: bytes of weights the engine holds
    uses_mmap: bool  #: the weights are used in place from the memory-mapped file
    repacked_bytes: int  #: bytes of matrices copied at load into the CPU backend's interleaved layouts
    #: A multilingual model's languages (its prompt dictionary's codes, in the file's order); () otherwise.
    languages: Tuple[str, ...] = ()
    default_language: Optional[str] = None  #: the language of streams that name none ("auto" where there is one)


@dataclass(frozen=True)
class TensorInfo:
    """One weight tensor as the engine holds it; ``shape`` is in ggml order (PyTorch's reversed)."""

    name: str
    group: str
    type: str
    shape: Tuple[int, ...]
    n_bytes: int


@dataclass(frozen=True)
class TensorGroup:
    """A part of the network and the type most of its parameters are stored in."""

    name: str
    type: str
    n_tensors: int
    n_params: int
    n_bytes: int


@dataclass(frozen=True)
class DeviceInfo:
    """A compute device ggml found at run time."""

    name: str
    description: str
    type: str  #: "cpu", "gpu", "igpu" or "accel"
    memory_free: int
    memory_total: int


@dataclass(frozen=True)
class SystemInfo:
    """What the engine was built with and what it found on this machine."""

    version: str
    ggml_version: str
    backends: Tuple[str, ...]
    devices: Tuple[DeviceInfo, ...]
    cpu_features: Dict[str, str]
    text: str

    def __str__(self) -> str:
        return self.text


def system_info() -> SystemInfo:
    """Returns the engine and ggml versions, the backends compiled in, the devices found and
    the CPU features the CPU backend uses.

    >>> import nemotron_cpp
    >>> "CPU" in nemotron_cpp.system_info().backends
    True
    """
    raw = _lib.system()
    features: Dict[str, str] = {}
    for item in raw["cpu_features"].split(" | "):
        if " = " in item:
            key, value = item.split(" = ", 1)
            features[key] = value
    return SystemInfo(
        version=raw["version"],
        ggml_version=raw["ggml_version"],
        backends=tuple(raw["backends"]),
        devices=tuple(DeviceInfo(**d) for d in raw["devices"]),
        cpu_features=features,
        text=raw["text"],
    )
