"""The ``.nemo`` converter: :mod:`nemotron_cpp.gguf.convert`, under the name it had before the GGUF
tooling moved into :mod:`nemotron_cpp.gguf`, so that existing imports keep working."""

from __future__ import annotations

from .gguf.convert import convert_nemo, model_config

__all__ = ["convert_nemo", "model_config"]
