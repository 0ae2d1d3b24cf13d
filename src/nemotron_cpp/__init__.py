"""nemotron_cpp: NVIDIA's streaming speech recognizer nemotron-speech-streaming on a C++/ggml
engine, without PyTorch or NeMo."""

from __future__ import annotations

from .errors import BackendError, ModelFileError, NemotronError, UnsupportedModelError
from .info import DeviceInfo, HParams, SystemInfo, TensorGroup, TensorInfo, system_info
from .model import NemotronModel
from .results import Token, Transcript
from .stream import Stream, StreamUpdate
from .text import detokenize

__version__ = "0.1.0"

__all__ = [
    "NemotronModel",
    "Stream",
    "StreamUpdate",
    "Token",
    "Transcript",
    "detokenize",
    "HParams",
    "TensorInfo",
    "TensorGroup",
    "DeviceInfo",
    "SystemInfo",
    "system_info",
    "NemotronError",
    "ModelFileError",
    "UnsupportedModelError",
    "BackendError",
    "__version__",
]
