"""Read a NeMo ``.nemo`` archive without PyTorch: its config, its weights and its tokenizer pieces.

A ``.nemo`` file is a tar archive holding ``model_config.yaml``, ``model_weights.ckpt`` and the tokenizer
files. The checkpoint is what ``torch.save`` writes: a zip archive with a pickle (``data.pkl``) that
describes the tensors and one raw record per storage (``data/<key>``). The pickle is read by an unpickler
that knows only what a state dict is made of (an ordered dict of tensors): any other object in it is
refused, so no code from the file ever runs. Tensors come back as numpy arrays; where the archive
stores the checkpoint uncompressed (as NeMo does) they are read-only views of the memory-mapped file,
so even the full-size model is not read into memory at once.

An already-extracted ``.nemo`` (a directory holding the same files) is read the same way.
"""

from __future__ import annotations

import errno
import io
import mmap
import os
import pickle
import struct
import tarfile
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from ..errors import ModelFileError

__all__ = ["NemoCheckpoint", "read_nemo", "read_torch_state_dict", "sentencepiece_pieces"]

PathLike = Union[str, "os.PathLike[str]"]

_CONFIG = "model_config.yaml"
_WEIGHTS = "model_weights.ckpt"
_YAML_MISSING = "reading a .nemo config needs PyYAML: pip install 'nemotron-cpp[convert]'"

# Storage classes a torch checkpoint names, with the dtype of their elements. bfloat16 has no numpy
# dtype: its records are read as 16-bit integers and widened to float32.
_STORAGE_DTYPES: Dict[str, str] = {
    "FloatStorage": "f4",
    "DoubleStorage": "f8",
    "HalfStorage": "f2",
    "BFloat16Storage": "u2",
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "b1",
}


@dataclass
class NemoCheckpoint:
    """What a ``.nemo`` archive holds.

    ``state_dict`` maps NeMo parameter names to numpy arrays in PyTorch shapes, in the checkpoint's
    order (read-only; bfloat16 tensors widened to float32). ``vocabulary`` lists the tokenizer pieces in
    id order, without the blank. ``spm_model`` is the SentencePiece model proto when the archive has one.
    """

    path: Path
    config: Dict[str, Any]
    state_dict: Dict[str, np.ndarray]
    vocabulary: List[str]
    spm_model: Optional[bytes]


def read_nemo(path: PathLike) -> NemoCheckpoint:
    """Read a ``.nemo`` archive, or a directory it was extracted into.

    Raises ``FileNotFoundError`` for a missing path and :class:`~nemotron_cpp.ModelFileError` for
    anything that is not a readable NeMo archive; the message names the problem.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
    archive: _Archive = _Directory(path) if path.is_dir() else _Tar(path)
    try:
        config = _parse_config(archive.read(archive.find(_CONFIG)), path)
        weights = archive.find(_WEIGHTS)
        state_dict = read_torch_state_dict(archive.buffer(weights), name=f"{path.name}: {weights}")
        spm_model = _tokenizer_file(archive, config, "model_path", "tokenizer.model")
        vocabulary = _vocabulary(archive, config, spm_model, path)
    finally:
        archive.close()
    return NemoCheckpoint(path, config, state_dict, vocabulary, spm_model)


# ---------------------------------------------------------------------------------------------------
# Archives


class _Archive:
    """Files of a .nemo, by their name relative to its root."""

    path: Path

    def names(self) -> List[str]:
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        raise NotImplementedError

    def buffer(self, name: str) -> Any:
        """The file's bytes as a buffer: a memory map where possible."""
        return self.read(name)

    def close(self) -> None:
        """Release open files; buffers already handed out stay valid."""

    def find(self, name: str) -> str:
        if name in self.names():
            return name
        nested = [n for n in self.names() if PurePosixPath(n).name == name]
        if any(n.startswith("mp_rank_") for n in nested):
            raise ModelFileError(f"{self.path.name}: model-parallel checkpoints ({nested[0]}) are not supported")
        if len(nested) == 1:
            return nested[0]
        raise ModelFileError(f"{self.path.name} is not a NeMo archive: it has no {name}")


def _member_name(name: str) -> str:
    # NeMo writes members as "./model_config.yaml"; compare names without that prefix.
    return str(PurePosixPath(name)).lstrip("/")


class _Tar(_Archive):
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            # "r:" first: an uncompressed archive (what NeMo writes) lets the checkpoint be memory-mapped.
            self._tar = tarfile.open(path, "r:")
            self._compressed = False
        except tarfile.ReadError:
            try:
                self._tar = tarfile.open(path, "r:*")
            except (tarfile.ReadError, EOFError, OSError):
                raise ModelFileError(f"{path.name} is not a .nemo file (not a tar archive)") from None
            self._compressed = True
        try:
            members = self._tar.getmembers()
        except (tarfile.TarError, EOFError):
            self._tar.close()
            raise ModelFileError(f"{path.name} is a damaged or truncated archive") from None
        self._members = {_member_name(m.name): m for m in members if m.isfile()}

    def names(self) -> List[str]:
        return list(self._members)

    def read(self, name: str) -> bytes:
        stream = self._tar.extractfile(self._members[name])
        assert stream is not None  # regular files always have a stream
        with stream:
            return stream.read()

    def buffer(self, name: str) -> Any:
        member = self._members[name]
        if self._compressed or member.sparse is not None or member.size == 0:
            return self.read(name)
        with open(self.path, "rb") as f:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        end = member.offset_data + member.size
        if end > len(mapped):
            raise ModelFileError(f"{self.path.name} is truncated: {name} ends at byte {end} of {len(mapped)}")
        return memoryview(mapped)[member.offset_data : end]

    def close(self) -> None:
        self._tar.close()


class _Directory(_Archive):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._names = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())

    def names(self) -> List[str]:
        return self._names

    def read(self, name: str) -> bytes:
        return (self.path / name).read_bytes()

    def buffer(self, name: str) -> Any:
        with open(self.path / name, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                return b""
            return memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))


# ---------------------------------------------------------------------------------------------------
# Config and tokenizer


def _parse_config(text: bytes, path: Path) -> Dict[str, Any]:
    try:
        import yaml
    except ImportError as exc:
        raise ImportError(_YAML_MISSING) from exc
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ModelFileError(f"{path.name}: {_CONFIG} is not valid YAML: {exc}") from None
    if not isinstance(config, dict):
        raise ModelFileError(f"{path.name}: {_CONFIG} is not a mapping")
    return config


def _tokenizer_file(archive: _Archive, config: Dict[str, Any], key: str, suffix: str) -> Optional[bytes]:
    """The tokenizer file the config names under ``tokenizer.<key>`` (``nemo:<file>``), else the one
    whose name ends with ``suffix``."""
    tokenizer = config.get("tokenizer") or {}
    ref = tokenizer.get(key) if isinstance(tokenizer, dict) else None
    names = archive.names()
    if isinstance(ref, str) and ref:
        wanted = PurePosixPath(ref[len("nemo:") :] if ref.startswith("nemo:") else ref).name
        found = [n for n in names if PurePosixPath(n).name == wanted]
    else:
        found = [n for n in names if n.endswith(suffix)]
    return archive.read(found[0]) if len(found) == 1 else None


def _vocabulary(archive: _Archive, config: Dict[str, Any], spm_model: Optional[bytes], path: Path) -> List[str]:
    joint = config.get("joint") or {}
    pieces = joint.get("vocabulary") if isinstance(joint, dict) else None
    if isinstance(pieces, list) and pieces and all(isinstance(p, str) for p in pieces):
        return list(pieces)
    if spm_model is not None:
        return sentencepiece_pieces(spm_model)
    # The SentencePiece .vocab file has "piece<TAB>score" lines in id order; vocab.txt one piece a line.
    for key, suffix in (("spe_tokenizer_vocab", "tokenizer.vocab"), ("vocab_path", "vocab.txt")):
        data = _tokenizer_file(archive, config, key, suffix)
        if data is not None:
            return [line.split("\t")[0] for line in data.decode("utf-8").splitlines()]
    raise ModelFileError(
        f"{path.name} has no vocabulary: no joint.vocabulary in its config, no tokenizer model, no vocab file"
    )


def _varint(data: bytes, pos: int) -> Tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _proto_fields(data: bytes) -> List[Tuple[int, Any]]:
    """Top-level fields of a protobuf message: (field number, int or bytes)."""
    fields = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: Union[int, bytes]
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(data):
            raise ValueError("truncated protobuf message")
        fields.append((number, value))
    return fields


def sentencepiece_pieces(model_proto: bytes) -> List[str]:
    """The pieces of a SentencePiece model (its ``.model`` file) in id order.

    The file is a ``ModelProto`` whose field 1 repeats ``SentencePiece {string piece = 1; ...}``.
    """
    try:
        pieces = []
        for number, value in _proto_fields(model_proto):
            if number == 1 and isinstance(value, bytes):
                piece = [v for n, v in _proto_fields(value) if n == 1 and isinstance(v, bytes)]
                pieces.append(piece[0].decode("utf-8") if piece else "")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"not a SentencePiece model: {exc}") from None
    if not pieces:
        raise ModelFileError("not a SentencePiece model: it has no pieces")
    return pieces


# ---------------------------------------------------------------------------------------------------
# torch checkpoints


class _StorageType:
    """Stands for a torch storage class (``torch.FloatStorage``...) in the pickle."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.code = _STORAGE_DTYPES[name]


@dataclass
class _Storage:
    values: np.ndarray  # 1-D, in the record's dtype
    bfloat16: bool


def _rebuild_tensor(
    storage: _Storage, offset: int, size: Tuple[int, ...], stride: Tuple[int, ...], *_: Any
) -> np.ndarray:
    """torch._utils._rebuild_tensor_v2: a strided view of a storage, made contiguous."""
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("a tensor without a storage")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    values = storage.values
    if len(size) != len(stride) or any(s < 0 for s in size + stride) or offset < 0:
        raise pickle.UnpicklingError(f"invalid tensor geometry: size {size}, stride {stride}, offset {offset}")
    extent = 0 if 0 in size else 1 + sum((n - 1) * s for n, s in zip(size, stride))
    if offset + extent > values.size:
        raise pickle.UnpicklingError(
            f"a tensor of size {size}, stride {stride} at offset {offset} overruns its storage of {values.size}"
        )
    item = values.itemsize
    view = np.lib.stride_tricks.as_strided(values[offset:], shape=size, strides=[s * item for s in stride])
    # Not np.ascontiguousarray: it turns a 0-d tensor (a scalar) into a 1-d array.
    array = view if view.flags.c_contiguous else view.copy(order="C")
    if storage.bfloat16:
        # bfloat16 is the upper half of a float32.
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def _rebuild_parameter(data: np.ndarray, *_: Any) -> np.ndarray:
    """torch._utils._rebuild_parameter(_with_state): a Parameter is its tensor."""
    return data


_REBUILDERS = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


class _StateDictUnpickler(pickle.Unpickler):
    """Rebuilds ordered dicts of tensors and nothing else."""

    def __init__(self, data: bytes, load_storage: Any) -> None:
        super().__init__(io.BytesIO(data))
        self._load_storage = load_storage

    def find_class(self, module: str, name: str) -> Any:
        found = _REBUILDERS.get((module, name))
        if found is not None:
            return found
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(
            f"it refers to {module}.{name}; only tensors and dicts of tensors are read (no code in a checkpoint is run)"
        )

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel = pid
        return self._load_storage(storage_type, str(key), int(numel))


class _ZipRegion(io.RawIOBase):
    """A read-only, seekable file over a buffer, for zipfile."""

    def __init__(self, buffer: Any) -> None:
        self._buf = memoryview(buffer).cast("B")
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._buf)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, b: Any) -> int:
        chunk = self._buf[self._pos : self._pos + len(b)]
        n = len(chunk)
        memoryview(b).cast("B")[:n] = chunk
        self._pos += n
        return n


def _stored_offset(buf: memoryview, info: zipfile.ZipInfo) -> int:
    """Where an uncompressed zip entry's bytes start: after its local header (whose extra field may
    differ in length from the central directory's)."""
    start = info.header_offset
    header = bytes(buf[start : start + 30])
    if len(header) < 30 or header[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"bad local header for {info.filename}")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return int(start + 30 + name_len + extra_len)


def read_torch_state_dict(source: Any, *, name: str = "checkpoint") -> Dict[str, np.ndarray]:
    """Read a state dict saved by ``torch.save`` (the zip format of PyTorch >= 1.6) without PyTorch.

    ``source`` is a path or a buffer (bytes, memoryview, mmap). Tensors of uncompressed records are
    read-only views of the buffer. Raises :class:`~nemotron_cpp.ModelFileError` when the data is not
    such a checkpoint or holds anything but (ordered) dicts of tensors; ``name`` appears in messages.
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise ModelFileError(f"{name} is empty")
            source = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    buf = memoryview(source).cast("B")
    region = _ZipRegion(buf)
    if not zipfile.is_zipfile(region):
        if bytes(buf[:1]) == b"\x80":  # a pickle: torch.save's format before the zip one
            raise ModelFileError(
                f"{name} uses PyTorch's legacy (before 1.6) serialization, which is not supported; "
                "re-save it with a current PyTorch: torch.save(torch.load(f), f)"
            )
        raise ModelFileError(f"{name} is not a PyTorch checkpoint (not a zip archive)")
    try:
        with zipfile.ZipFile(region) as archive:
            infos = {info.filename: info for info in archive.infolist()}
            pickles = [n for n in infos if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pickles) != 1:
                raise ModelFileError(f"{name} is not a PyTorch checkpoint: it has no single <name>/data.pkl")
            prefix = pickles[0][: -len("data.pkl")]
            order = "<"
            if prefix + "byteorder" in infos:
                order = {b"little": "<", b"big": ">"}.get(archive.read(prefix + "byteorder").strip(), "")
                if not order:
                    raise ModelFileError(f"{name}: unknown byte order {archive.read(prefix + 'byteorder')!r}")
            storages: Dict[str, _Storage] = {}

            def load_storage(storage_type: _StorageType, key: str, numel: int) -> _Storage:
                if key in storages:
                    return storages[key]
                info = infos.get(f"{prefix}data/{key}")
                if info is None:
                    raise ModelFileError(f"{name}: storage record data/{key} is missing")
                dtype = np.dtype(order + storage_type.code) if storage_type.code != "b1" else np.dtype(bool)
                if numel * dtype.itemsize > info.file_size:
                    raise ModelFileError(
                        f"{name}: storage data/{key} holds {info.file_size} bytes, "
                        f"{numel} x {storage_type.name} need {numel * dtype.itemsize}"
                    )
                if info.compress_type == zipfile.ZIP_STORED:
                    values = np.frombuffer(buf, dtype=dtype, count=numel, offset=_stored_offset(buf, info))
                else:
                    values = np.frombuffer(archive.read(info), dtype=dtype, count=numel)
                storages[key] = _Storage(values, storage_type.name == "BFloat16Storage")
                return storages[key]

            try:
                obj = _StateDictUnpickler(archive.read(pickles[0]), load_storage).load()
            except ModelFileError:
                raise
            except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, IndexError) as exc:
                raise ModelFileError(f"{name} cannot be read as a state dict: {exc}") from None
    except zipfile.BadZipFile as exc:
        raise ModelFileError(f"{name} is a damaged zip archive: {exc}") from None
    # Lightning checkpoints wrap the weights; NeMo's model_weights.ckpt is the state dict itself.
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items()):
        raise ModelFileError(f"{name} does not hold a state dict (a dict of tensors by name)")
    return dict(obj)
