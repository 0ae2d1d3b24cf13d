"""Random-weight test models: :mod:`nemotron_cpp.gguf.random_model`, under the name this module kept
before the GGUF tooling moved into :mod:`nemotron_cpp.gguf`, so that existing imports and the command

    python -m nemotron_cpp.testing OUT.gguf [--layout nemo|asr] [--type q8_0] [--size tiny|full] [--seed 0]

keep working.
"""

from __future__ import annotations

import sys

from .gguf.random_model import (
    FULL,
    LAYOUTS,
    TINY,
    WEIGHT_TYPES,
    LstmState,
    ModelSize,
    TunedJoint,
    greedy_decode,
    joint_argmax,
    joint_encoder,
    main,
    predict,
    random_state_dict,
    start_state,
    tune_joint,
    vocab_pieces,
    write_model,
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

if __name__ == "__main__":
    sys.exit(main())
