"""nemotron_cpp: NVIDIA's streaming speech recognizer nemotron-speech-streaming on a C++/ggml
engine, without PyTorch or NeMo."""

from __future__ import annotations

from .audio import AudioLevelWarning, TruncatedAudioWarning, decode_audio
from .boosting import Boosting
from .demo import DemoModelWarning
from .errors import (AudioError, BackendError, ChecksumError, DownloadError, ModelFileError, NemotronError,
                     UnsupportedModelError)
from .info import DeviceInfo, HParams, ModelInfo, SystemInfo, TensorGroup, TensorInfo, system_info
from .model import NemotronModel
from .results import Hypothesis, Segment, Token, Transcript, Word
from .segmenter import Endpointing
from .stream import Stream, StreamUpdate
from .text import detokenize

__version__ = "0.1.0"

__all__ = [
    "NemotronModel",
    "Stream",
    "StreamUpdate",
    "Endpointing",
    "Boosting",
    "Transcript",
    "Segment",
    "Word",
    "Token",
    "Hypothesis",
    "decode_audio",
    "detokenize",
    "HParams",
    "ModelInfo",
    "TensorInfo",
    "TensorGroup",
    "DeviceInfo",
    "SystemInfo",
    "system_info",
    "NemotronError",
    "ModelFileError",
    "UnsupportedModelError",
    "BackendError",
    "AudioError",
    "DownloadError",
    "ChecksumError",
    "DemoModelWarning",
    "AudioLevelWarning",
    "TruncatedAudioWarning",
    "__version__",
]
