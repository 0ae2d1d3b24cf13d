"""Change the weight type of a GGUF model file of either layout.

>>> from nemotron_cpp.gguf.quantize import quantize_gguf
>>> quantize_gguf("model.f32.gguf", "model.q4_0.gguf", weight_type="q4_0")  # doctest: +SKIP

The tensors the layout's converter gives the file's weight type (the nemo layout: the conformer layers'
matrices; the asr layout: every Linear weight) are decoded and stored again in the new type, F16 where their
rows are not whole blocks of it; every other tensor is copied byte for byte, and so is every metadata
key except ``general.file_type``, which records the new type. Any type the writer supports can go to any
other; a tensor already of the target type is copied, not quantized again. Quantizing weights that
are already quantized (q8_0 to q4_0, say) warns with a :class:`RequantizationWarning`.

Needs the ``gguf`` package (``pip install 'nemotron-cpp[convert]'``).
"""

from __future__ import annotations

import errno
import os
import warnings
from pathlib import Path
from typing import Any, Dict, List, Set, Union

import numpy as np

from ..errors import ModelFileError, UnsupportedModelError
from .layout import FILE_TYPES, KV, FileTensor, check_output, import_gguf, tensor_type, weight_tensor, write_gguf

__all__ = ["RequantizationWarning", "quantize_gguf"]

PathLike = Union[str, "os.PathLike[str]"]

_PLANAR = "tensor_planar_v1"

# Weight types that hold the trained values (to their precision): quantizing from them is the first rounding.
_UNQUANTIZED = ("F32", "F16", "BF16")


class RequantizationWarning(UserWarning):
    """Already quantized weights are being quantized again: the result carries the rounding error of
    both types, more than quantizing the f32/f16/bf16 model to the target type once."""


def _field_value(gguf: Any, field: Any) -> KV:
    """A metadata field as (value, type, element type), such that writing it gives the same bytes."""
    vtype = gguf.GGUFValueType
    types = [vtype(t) for t in field.types]
    if types[0] == vtype.ARRAY:
        if len(types) != 2:
            raise UnsupportedModelError(f"metadata key {field.name!r} is a nested array, which cannot be copied")
        if not field.data:
            raise UnsupportedModelError(f"metadata key {field.name!r} is an empty array, which cannot be copied")
        if types[1] == vtype.STRING:
            return [bytes(field.parts[i]) for i in field.data], types[0], types[1]
        return [field.parts[i].tolist()[0] for i in field.data], types[0], types[1]
    if types[0] == vtype.STRING:
        # Bytes, not text: the nemo layout's legacy vocabulary is a NUL-padded blob.
        return bytes(field.parts[field.data[0]]), types[0], None
    return field.parts[field.data[0]].tolist()[0], types[0], None


def _string(kv: Dict[str, KV], key: str) -> str:
    value = kv.get(key, (b"",))[0]
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def quantize_gguf(src: PathLike, dst: PathLike, *, weight_type: str, force: bool = False) -> Path:
    """Write ``src`` (a GGUF model of either layout) to ``dst`` with its weights in ``weight_type``.

    Parameters
    ----------
    src:
        The input GGUF file, of the nemo or the asr layout, of any weight type.
    dst:
        The output; it may not be ``src``. It is written to a temporary file beside it and renamed at
        the end, so an interrupted run leaves no partial output and an existing ``dst`` untouched.
    weight_type:
        One of :data:`~nemotron_cpp.gguf.layout.FILE_TYPES` (``f32``, ``f16``, ``bf16``, ``q8_0``,
        ``q4_0``, ``q4_1``, ``q5_0``, ``q5_1``, ``q4_k``, ``q5_k``, ``q6_k``).
    force:
        Overwrite an existing ``dst``.

    Raises
    ------
    FileNotFoundError
        ``src`` does not exist.
    FileExistsError
        ``dst`` exists and ``force`` is false.
    ModelFileError
        ``src`` is not a readable GGUF file.
    UnsupportedModelError
        ``src`` is not a model of either layout, or is in NVIDIA's CUDA-only planar q8 layout.
    ValueError
        An unknown weight type, or ``dst`` is ``src``.
    """
    src, dst = Path(src), Path(dst)
    if weight_type not in FILE_TYPES:
        raise ValueError(f"weight type must be one of {', '.join(FILE_TYPES)}, not {weight_type!r}")
    if not src.exists():
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(src))
    check_output(src, dst, force)
    gguf = import_gguf()
    try:
        reader = gguf.GGUFReader(src)
    except (ValueError, OSError, IndexError, KeyError) as exc:
        raise ModelFileError(f"{src.name} is not a readable GGUF file: {exc}") from None

    kv = {name: _field_value(gguf, f) for name, f in reader.fields.items() if not name.startswith("GGUF.")}
    architecture = _string(kv, "general.architecture")
    layout = {"nemo": "nemo", "asr": "asr"}.get(architecture)
    if layout is None:
        raise UnsupportedModelError(
            f"{src.name} has general.architecture {architecture!r}; only 'nemo' and 'asr' models are quantized"
        )
    for key in ("asr.encoder.q8_layout", "asr.encoder.qkv_q8_layout"):
        if _string(kv, key) == _PLANAR:
            raise UnsupportedModelError(
                f"{src.name} uses NVIDIA's CUDA-only planar q8 layout ({key} = {_PLANAR}), which cannot be re-quantized"
            )
    if "general.file_type" in kv or layout == "asr":
        kv["general.file_type"] = (FILE_TYPES[weight_type], gguf.GGUFValueType.UINT32, None)

    target = gguf.GGMLQuantizationType[weight_type.upper()]
    plan: List[FileTensor] = []
    requantized: Set[str] = set()
    for t in reader.tensors:
        shape = tuple(int(n) for n in reversed(t.shape.tolist()))  # PyTorch order
        qtype = t.tensor_type
        if weight_tensor(layout, t.name, shape):
            qtype = tensor_type(gguf, layout, t.name, shape, target)
        entry = FileTensor(t.name, shape, None, qtype=qtype)
        if qtype == t.tensor_type:
            entry.raw = np.asarray(t.data)
        else:
            entry.make = lambda t=t, shape=shape: _decode(gguf, t, shape)
            if t.tensor_type.name not in _UNQUANTIZED and qtype.name not in _UNQUANTIZED:
                requantized.add(t.tensor_type.name.lower())
        plan.append(entry)
    if requantized:
        warnings.warn(RequantizationWarning(
            f"{src.name}'s weights are already quantized ({', '.join(sorted(requantized))}): quantizing them to "
            f"{weight_type} decodes and rounds them again, so the result carries both types' error; quantize "
            f"the f32, f16 or bf16 model to {weight_type} for the best {weight_type} file"), stacklevel=2)
    return write_gguf(dst, kv, plan)


def _decode(gguf: Any, tensor: Any, shape: Any) -> np.ndarray:
    try:
        values = gguf.quants.dequantize(np.asarray(tensor.data), tensor.tensor_type)
    except NotImplementedError:
        raise UnsupportedModelError(
            f"tensor {tensor.name!r} has type {tensor.tensor_type.name}, which cannot be decoded"
        ) from None
    return np.asarray(values, dtype=np.float32).reshape(shape)
