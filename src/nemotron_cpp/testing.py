"""Random-weight test models: :mod:`nemotron_cpp.gguf.random_model`, under the name this module kept
before the GGUF tooling moved into :mod:`nemotron_cpp.gguf`, so that existing imports and the command

    python -m nemotron_cpp.testing OUT.gguf [--layout nemo|asr] [--type q8_0] [--size tiny|full] [--seed 0]

keep working.
"""

from __future__ import annotations

import sys

from .gguf import random_model
from .gguf.random_model import *  # noqa: F401,F403  (the names of random_model.__all__)

__all__ = random_model.__all__

if __name__ == "__main__":
    sys.exit(random_model.main())
