"""The binding to the C engine: the only module that touches cffi.

The declarations are read from the engine's public header, shipped beside the library, so
that the binding cannot drift from the C API it calls.
"""

from __future__ import annotations

import ctypes
import errno
import importlib.util
import logging
import os
import re
import sys
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from cffi import FFI

from .errors import BackendError, ModelFileError, NemotronError, UnsupportedModelError

_HERE = Path(__file__).resolve().parent
_LIB_NAMES = {"darwin": "libnemotron-asr.dylib", "win32": "nemotron-asr.dll"}


def _cdef_from_header(text: str) -> str:
    defines = "\n".join(re.findall(r"^#define NEMOTRON_\w+ \d+$", text, flags=re.M))
    body = text.split('extern "C" {\n#endif', 1)[1].rsplit("#ifdef __cplusplus", 1)[0]
    return defines + "\n" + body.replace("NEMOTRON_API ", "")


def _find_library() -> Path:
    override = os.environ.get("NEMOTRON_ASR_LIBRARY")
    if override:
        return Path(override)
    return _HERE / _LIB_NAMES.get(sys.platform, "libnemotron-asr.so")


def _load_cuda_libraries() -> None:
    """ggml's CUDA backend, where it was built in, needs the CUDA runtime and cuBLAS. Where PyPI's nvidia
    packages hold them (scripts/install_cuda.sh installs them), they are loaded first, so that the
    engine finds them without LD_LIBRARY_PATH; elsewhere the system's libraries are used."""
    if not (_HERE.parent / "lib" / "libggml-cuda.so").exists():
        return
    spec = importlib.util.find_spec("nvidia")
    for base in (spec.submodule_search_locations or []) if spec is not None else []:
        for name in ("libcudart.so.13", "libcublasLt.so.13", "libcublas.so.13"):
            path = Path(base) / "cu13" / "lib" / name
            if path.exists():
                ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)


_load_cuda_libraries()
_ffi = FFI()
_ffi.cdef(_cdef_from_header((_HERE / "nemotron-asr.h").read_text(encoding="utf-8")))
_lib: Any = _ffi.dlopen(str(_find_library()))

_BACKENDS = {"auto": _lib.NEMOTRON_BACKEND_AUTO, "cpu": _lib.NEMOTRON_BACKEND_CPU, "gpu": _lib.NEMOTRON_BACKEND_GPU,
             "rpc": _lib.NEMOTRON_BACKEND_RPC}
_LAYOUTS = {_lib.NEMOTRON_LAYOUT_NEMO: "nemo", _lib.NEMOTRON_LAYOUT_ASR: "asr"}
_NORMALIZE = {
    _lib.NEMOTRON_NORMALIZE_NONE: "none",
    _lib.NEMOTRON_NORMALIZE_PER_FEATURE: "per_feature",
    _lib.NEMOTRON_NORMALIZE_ALL: "all_features",
}
_DEVICE_TYPES = {
    _lib.NEMOTRON_DEVICE_CPU: "cpu",
    _lib.NEMOTRON_DEVICE_GPU: "gpu",
    _lib.NEMOTRON_DEVICE_IGPU: "igpu",
    _lib.NEMOTRON_DEVICE_ACCEL: "accel",
}


# The engine's messages, and ggml's during its calls, go to Python logging: libraries speak through
# it, and applications choose what they see (a WARNING and above reach stderr when nothing is set up).
_log = logging.getLogger("nemotron_cpp")
_LOG_LEVELS = {
    _lib.NEMOTRON_LOG_DEBUG: logging.DEBUG,
    _lib.NEMOTRON_LOG_INFO: logging.INFO,
    _lib.NEMOTRON_LOG_WARN: logging.WARNING,
    _lib.NEMOTRON_LOG_ERROR: logging.ERROR,
}


def _log_line(level: int, text: Any, _user_data: Any) -> None:
    python_level = _LOG_LEVELS.get(level, logging.INFO)
    if _log.isEnabledFor(python_level):
        _log.log(python_level, "%s", _ffi.string(text).decode("utf-8", errors="replace"))


# Kept in a module global: the engine holds the pointer for the life of the process.
_log_callback = _ffi.callback("void(nemotron_log_level, const char *, void *)", _log_line, onerror=lambda *_: None)
_lib.nemotron_log_set(_log_callback, _ffi.NULL)


def _string(p: Any) -> str:
    return "" if p == _ffi.NULL else _ffi.string(p).decode("utf-8", errors="replace")


def _check(status: int, path: Optional[str] = None) -> None:
    """Raises the Python exception for a non-zero status, with the engine's message."""
    if status == _lib.NEMOTRON_OK:
        return
    message = _string(_lib.nemotron_last_error())
    if status == _lib.NEMOTRON_ERR_NOT_FOUND:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
    if status == _lib.NEMOTRON_ERR_IO:
        raise OSError(message)
    if status == _lib.NEMOTRON_ERR_INVALID_MODEL:
        raise ModelFileError(message)
    if status == _lib.NEMOTRON_ERR_UNSUPPORTED:
        raise UnsupportedModelError(message)
    if status == _lib.NEMOTRON_ERR_INVALID_ARG:
        raise ValueError(message)
    if status == _lib.NEMOTRON_ERR_BACKEND:
        raise BackendError(message)
    if status == _lib.NEMOTRON_ERR_NO_MEMORY:
        raise MemoryError(message)
    raise NemotronError(message)


class Handle:
    """An engine object that Python code may close (a model's context, a stream): the one place that
    knows whether it, and the model it belongs to, are still open. The engine frees it when it is
    closed or collected; a stream keeps its model's memory alive in the engine either way."""

    def __init__(self, cdata: Any, what: str, model: Optional["Handle"] = None) -> None:
        self._cdata: Any = cdata
        self._what = what
        self._model = model
        self._lock = threading.Lock()

    @property
    def closed(self) -> bool:
        return self._cdata is None

    def belongs_to(self, model: "Handle") -> bool:
        return self._model is model

    def live(self) -> Any:
        """The engine's pointer, or a ValueError saying what was closed."""
        if self._cdata is None:
            raise ValueError(f"the {self._what} is closed")
        if self._model is not None and self._model.closed:
            raise ValueError(f"the {self._what}'s model was closed: a {self._what} cannot be used after model.close()")
        return self._cdata

    def close(self) -> None:
        """Frees the engine object now rather than at garbage collection; closing twice is harmless."""
        with self._lock:
            if self._cdata is not None:
                _ffi.release(self._cdata)
                self._cdata = None


def _sized(ctype: str) -> Any:
    out = _ffi.new(ctype + " *")
    out.struct_size = _ffi.sizeof(ctype)
    return out


# ---- library and system -----------------------------------------------------------------


def version() -> str:
    return _string(_lib.nemotron_version())


def system() -> Dict[str, Any]:
    devices = []
    for i in range(_lib.nemotron_device_count()):
        info = _sized("struct nemotron_device_info")
        _check(_lib.nemotron_device_get_info(i, info))
        device = _struct(info, "struct nemotron_device_info")
        device["type"] = _DEVICE_TYPES.get(device["type"], "accel")
        devices.append(device)
    return {
        "version": version(),
        "ggml_version": _string(_lib.nemotron_ggml_version()),
        "backends": [_string(_lib.nemotron_backend_name(i)) for i in range(_lib.nemotron_backend_count())],
        "devices": devices,
        "cpu_features": _string(_lib.nemotron_cpu_features()),
        "text": _string(_lib.nemotron_print_system_info()),
    }


# ---- models -----------------------------------------------------------------------------


def load(path: str, backend: str, gpu_device: int, n_threads: int, use_mmap: bool,
         rpc_endpoint: Optional[str] = None) -> Handle:
    """Loads a model."""
    params = _ffi.new("struct nemotron_context_params *", _lib.nemotron_context_default_params())
    params.backend = _BACKENDS[backend]
    params.gpu_device = gpu_device
    params.n_threads = n_threads
    params.use_mmap = use_mmap
    endpoint = _ffi.new("char[]", rpc_endpoint.encode()) if rpc_endpoint is not None else _ffi.NULL
    params.rpc_endpoint = endpoint
    out = _ffi.new("struct nemotron_context **")
    _check(_lib.nemotron_context_init_from_file(os.fsencode(path), params, out), path)
    return Handle(_ffi.gc(out[0], _lib.nemotron_context_free), "model")


def rpc_serve(endpoint: str, backend: str, gpu_device: int, n_threads: int) -> None:
    """Serves a device of this machine over ggml's RPC protocol; returns only by raising."""
    _check(_lib.nemotron_rpc_serve(endpoint.encode(), _BACKENDS[backend], gpu_device, n_threads))


def check_hparams(fields: Dict[str, Any]) -> None:
    """Raises UnsupportedModelError or ModelFileError when the engine cannot run a model with these
    hyperparameters (``nemotron_hparams_check``: the table the loader applies); names as in hparams()."""
    hp = _sized("struct nemotron_hparams")
    for name, value in fields.items():
        if name == "att_right_contexts":
            hp.n_att_right_contexts = len(value)
            for i, right in enumerate(value[: _lib.NEMOTRON_MAX_RIGHT_CONTEXTS]):
                hp.att_right_contexts[i] = right
        elif name == "normalize":
            hp.normalize = next(k for k, v in _NORMALIZE.items() if v == value)
        else:
            setattr(hp, name, value)
    _check(_lib.nemotron_hparams_check(hp))


def detokenize(handle: Any, ids: Sequence[int]) -> bytes:
    """The text of token ids as the engine decodes it (``nemotron_context_detokenize``), as UTF-8 bytes."""
    array = _ffi.new("int32_t[]", list(ids))
    n = _lib.nemotron_context_detokenize(handle, array, len(ids), _ffi.NULL, 0)
    out = _ffi.new("char[]", n + 1)
    _lib.nemotron_context_detokenize(handle, array, len(ids), out, n + 1)
    return bytes(_ffi.buffer(out, n))


def hparams(handle: Any) -> Dict[str, Any]:
    hp = _sized("struct nemotron_hparams")
    _check(_lib.nemotron_context_get_hparams(handle, hp))
    fields = _struct(hp, "struct nemotron_hparams")
    n_right = fields.pop("n_att_right_contexts")
    fields["att_right_contexts"] = tuple(fields["att_right_contexts"][:n_right])
    fields["normalize"] = _NORMALIZE[fields["normalize"]]
    return fields


def model_info(handle: Any) -> Dict[str, Any]:
    return {
        "layout": _LAYOUTS[_lib.nemotron_context_layout(handle)],
        "name": _string(_lib.nemotron_context_name(handle)),
        "weight_type": _string(_lib.nemotron_context_weight_type(handle)),
        "file_size": int(_lib.nemotron_context_file_size(handle)),
        "weight_bytes": int(_lib.nemotron_context_weight_bytes(handle)),
        "backend": _string(_lib.nemotron_context_backend(handle)),
        "n_threads": int(_lib.nemotron_context_n_threads(handle)),
        "uses_mmap": bool(_lib.nemotron_context_uses_mmap(handle)),
        "repacked_bytes": int(_lib.nemotron_context_repacked_bytes(handle)),
        "languages": tuple(code for code, _ in languages(handle)),
        "default_language": default_language(handle),
    }


def languages(handle: Any) -> List[Tuple[str, int]]:
    """A multilingual model's languages and their prompt indexes, in the file's order."""
    prompt = _ffi.new("int32_t *")
    out = []
    for i in range(_lib.nemotron_context_n_languages(handle)):
        code = _lib.nemotron_context_language(handle, i, prompt)
        out.append((_ffi.string(code).decode("utf-8"), int(prompt[0])))
    return out


def default_language(handle: Any) -> Optional[str]:
    code = _lib.nemotron_context_default_language(handle)
    return None if code == _ffi.NULL else str(_ffi.string(code).decode("utf-8"))


def pieces(handle: Any) -> List[bytes]:
    length = _ffi.new("size_t *")
    out = []
    for i in range(_lib.nemotron_context_n_pieces(handle)):
        p = _lib.nemotron_context_piece(handle, i, length)
        out.append(bytes(_ffi.buffer(p, length[0])))
    return out


def _struct(cdata: Any, ctype: str) -> Dict[str, Any]:
    """A C info struct as a dict: strings decoded, the struct_size field dropped."""
    out: Dict[str, Any] = {}
    for name, field in _ffi.typeof(ctype).fields:
        value = getattr(cdata, name)
        if field.type.kind == "pointer" and field.type.item.cname == "char":
            value = _string(value)
        elif field.type.kind == "array":
            value = list(value)  # a copy: the struct is freed with its owner
        out[name] = value
    del out["struct_size"]
    return out


def _records(count: Any, get: Any, ctype: str, handle: Any) -> List[Dict[str, Any]]:
    out = []
    for i in range(count(handle)):
        info = _sized(ctype)
        _check(get(handle, i, info))
        out.append(_struct(info, ctype))
    return out


def tensors(handle: Any) -> List[Dict[str, Any]]:
    out = _records(_lib.nemotron_context_n_tensors, _lib.nemotron_context_get_tensor_info, "struct nemotron_tensor_info", handle)
    for t in out:
        t["shape"] = tuple(t.pop("ne")[: t.pop("n_dims")])
    return out


def compute_mel(handle: Any, samples: "np.ndarray", n_mels: int) -> "np.ndarray":
    """Log-mel frames of a whole float32 signal, shaped [n_frames, n_mels]."""
    n_frames = _ffi.new("int64_t *")
    source = _ffi.from_buffer("float[]", samples)
    _check(_lib.nemotron_context_compute_mel(handle, source, len(samples), _ffi.NULL, 0, n_frames))
    out = np.empty((n_frames[0], n_mels), dtype=np.float32)
    _check(_lib.nemotron_context_compute_mel(handle, source, len(samples), _ffi.from_buffer("float[]", out), out.size, n_frames))
    return out


def tensor_data(handle: Any, index: int, n_elements: int) -> bytes:
    """Tensor `index`'s values as float32 bytes, dequantized, in ggml order."""
    out = _ffi.new("float[]", n_elements)
    _check(_lib.nemotron_context_get_tensor_data(handle, index, out, n_elements))
    return bytes(_ffi.buffer(out))


def tensor_groups(handle: Any) -> List[Dict[str, Any]]:
    return _records(_lib.nemotron_context_n_tensor_groups, _lib.nemotron_context_get_tensor_group, "struct nemotron_tensor_group", handle)


def frontend_tables(handle: Any) -> Tuple[bytes, bytes]:
    """The window and the mel filterbank as raw float32 bytes."""
    n = _ffi.new("size_t *")
    window = bytes(_ffi.buffer(_lib.nemotron_context_window(handle, n), n[0] * 4))
    fb = bytes(_ffi.buffer(_lib.nemotron_context_mel_filterbank(handle, n), n[0] * 4))
    return window, fb


# ---- streams ----------------------------------------------------------------------------

_CHUNKING = {
    "stream": _lib.NEMOTRON_CHUNKING_STREAM,
    "stream_padded": _lib.NEMOTRON_CHUNKING_STREAM_PADDED,
    "offline": _lib.NEMOTRON_CHUNKING_OFFLINE,
}


def stream_init(model: Handle, att_right_context: int, chunking: str, keep_encoder_output: bool,
                keep_trace: bool, endpoint_reset: Tuple[int, int] = (0, 0), language: Optional[str] = None,
                beam_size: int = 1) -> Handle:
    params = _ffi.new("struct nemotron_stream_params *", _lib.nemotron_stream_default_params())
    code = _ffi.new("char[]", language.encode("utf-8")) if language is not None else _ffi.NULL
    params.language = code  # `code` outlives the call below, which copies what it needs
    params.att_right_context = att_right_context
    params.chunking = _CHUNKING[chunking]
    params.keep_encoder_output = keep_encoder_output
    params.keep_trace = keep_trace
    params.endpoint_reset_silence_frames, params.endpoint_reset_min_utterance_frames = endpoint_reset
    params.beam_size = beam_size
    out = _ffi.new("struct nemotron_stream **")
    _check(_lib.nemotron_stream_init(model.live(), params, out))
    return Handle(_ffi.gc(out[0], _lib.nemotron_stream_free), "stream", model)


def stream_set_phrases(stream: Any, phrases: Sequence[Sequence[int]], scores: Sequence[float], alpha: float,
                       context_score: float, depth_scaling: float, unk_score: float) -> None:
    """Sets the token-id phrases a stream boosts (none: boosting off) with NeMo's boosting-tree parameters."""
    params = _ffi.new("struct nemotron_boosting_params *", _lib.nemotron_boosting_default_params())
    params.alpha, params.context_score, params.depth_scaling, params.unk_score = (
        alpha, context_score, depth_scaling, unk_score)
    tokens = np.array([t for phrase in phrases for t in phrase], np.int32)
    lengths = np.array([len(phrase) for phrase in phrases], np.int32)
    own = np.array(scores, np.float64)
    _check(_lib.nemotron_stream_set_phrases(stream, _ffi.from_buffer("int32_t[]", tokens),
                                            _ffi.from_buffer("int32_t[]", lengths), _ffi.from_buffer("double[]", own),
                                            len(phrases), params))


def stream_push(stream: Any, samples: "np.ndarray") -> None:
    _check(_lib.nemotron_stream_push(stream, _ffi.from_buffer("float[]", samples), len(samples)))


def stream_end(stream: Any) -> None:
    _check(_lib.nemotron_stream_end(stream))


def stream_run(stream: Any) -> None:
    """Runs every chunk of one stream that is ready (a feed of no new audio)."""
    _check(_lib.nemotron_stream_feed(stream, _ffi.NULL, 0))


def stream_finish(stream: Any) -> None:
    """Runs what remains after the end of the audio, as NeMo does at the end of a stream."""
    _check(_lib.nemotron_stream_finish(stream))


def streams_run(handle: Any, streams: Sequence[Any]) -> None:
    _check(_lib.nemotron_context_run_streams(handle, _ffi.new("struct nemotron_stream *[]", list(streams)), len(streams)))


def stream_reset(stream: Any) -> None:
    _check(_lib.nemotron_stream_reset(stream))


def stream_att_right_context(stream: Any) -> int:
    return int(_lib.nemotron_stream_att_right_context(stream))


def stream_take_tokens(stream: Any) -> Tuple["np.ndarray", "np.ndarray", "np.ndarray"]:
    """The tokens emitted since the last take (ids, the encoder frame of each, each one's confidence);
    the engine hands each token out once."""
    n = _lib.nemotron_stream_n_tokens(stream)
    ids, frames, confidences = np.empty(n, np.int32), np.empty(n, np.int32), np.empty(n, np.float32)
    if n:
        _lib.nemotron_stream_take_tokens(stream, _ffi.from_buffer("int32_t[]", ids), _ffi.from_buffer("int32_t[]", frames),
                                         _ffi.from_buffer("float[]", confidences), n)
    return ids, frames, confidences


def stream_nbest(stream: Any) -> List[Tuple["np.ndarray", float]]:
    """Beam search's hypotheses once the stream has ended, best first: (token ids, score)."""
    out = []
    n, score = _ffi.new("int *"), _ffi.new("float *")
    for i in range(_lib.nemotron_stream_n_hypotheses(stream)):
        ids = _lib.nemotron_stream_hypothesis(stream, i, n, score)
        out.append((np.frombuffer(_ffi.buffer(ids, 4 * n[0]), dtype=np.int32).copy() if n[0] else
                    np.zeros(0, np.int32), float(score[0])))
    return out


def stream_n_frames(stream: Any) -> int:
    return int(_lib.nemotron_stream_n_frames(stream))


def stream_encoder_output(stream: Any, d_model: int) -> Tuple["np.ndarray", "np.ndarray"]:
    """The kept encoder frames [frames, d_model] and the frame count after each chunk."""
    n = _ffi.new("size_t *")
    data = _lib.nemotron_stream_encoder_output(stream, n)
    frames = np.frombuffer(_ffi.buffer(data, 4 * n[0]), dtype=np.float32).reshape(-1, d_model).copy()
    n_chunks = _ffi.new("int *")
    ends = _lib.nemotron_stream_chunk_ends(stream, n_chunks)
    return frames, np.frombuffer(_ffi.buffer(ends, 4 * n_chunks[0]), dtype=np.int32).copy()


TRACE_DTYPE = np.dtype([("frame", np.int32), ("token", np.int32), ("margin", np.float32), ("confidence", np.float32)])


def stream_trace(stream: Any) -> "np.ndarray":
    n = _ffi.new("int *")
    data = _lib.nemotron_stream_trace(stream, n)
    return np.frombuffer(_ffi.buffer(data, TRACE_DTYPE.itemsize * n[0]), dtype=TRACE_DTYPE).copy()
