"""Exceptions raised by nemotron_cpp."""

from __future__ import annotations

__all__ = ["NemotronError", "ModelFileError", "UnsupportedModelError", "BackendError", "AudioError", "DownloadError",
           "ChecksumError"]


class NemotronError(Exception):
    """Base class of the errors the engine reports."""


class ModelFileError(NemotronError, ValueError):
    """A model file that cannot be loaded: not GGUF, corrupt, truncated, or inconsistent.

    The message names the problem, e.g. which tensor has which shape and what was expected.
    """


class UnsupportedModelError(ModelFileError):
    """A valid GGUF file of a model or variant the engine cannot run (another architecture,
    a CTC head, NVIDIA's CUDA-only planar q8 layout, ...)."""


class BackendError(NemotronError, RuntimeError):
    """The requested device does not exist or its backend failed."""


class AudioError(NemotronError, ValueError):
    """An audio file or buffer that cannot be read or decoded; the message names it and says why."""


class DownloadError(NemotronError, OSError):
    """A model file could not be fetched from the Hugging Face Hub: it is not in the cache while offline,
    the repository, revision or file does not exist or needs a token, or the transfer failed. The
    message names the file and says what to do."""


class ChecksumError(DownloadError):
    """A fetched file is not the one the registry names: its size or sha256 differ (the message gives
    both values). The file has been deleted from the cache, so it is never used."""
