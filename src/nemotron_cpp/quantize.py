"""The GGUF quantizer: :mod:`nemotron_cpp.gguf.quantize`, under the name it had before the GGUF
tooling moved into :mod:`nemotron_cpp.gguf`, so that existing imports keep working."""

from __future__ import annotations

from .gguf.quantize import RequantizationWarning, quantize_gguf

__all__ = ["RequantizationWarning", "quantize_gguf"]
