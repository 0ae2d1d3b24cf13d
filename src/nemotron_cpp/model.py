"""NemotronModel: a loaded model file."""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
from typing import Any, AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _lib, chunking as geometry, hub
from .audio import AudioInput, iter_audio, to_mono_float
from .boosting import Boosting, Hotwords, compile_hotwords
from .demo import demo_model_path
from .info import HParams, ModelInfo, TensorGroup, TensorInfo
from .results import Segment, Transcript
from .segmenter import Endpointing, transcript_of
from .stream import PCM, Stream, StreamUpdate, run_together
from .text import Tokenizer

__all__ = ["NemotronModel"]

PathLike = Union[str, "os.PathLike[str]"]

#: Called as audio is read with the seconds done and the total (None where the file does not say).
ProgressCallback = Callable[[float, Optional[float]], None]


def _endpointing(value: Union[bool, Endpointing]) -> Optional[Endpointing]:
    if isinstance(value, Endpointing):
        return value
    if isinstance(value, bool):
        return Endpointing() if value else None
    raise TypeError(f"endpointing must be True, False or an Endpointing, not {value!r}")


def _parse_backend(backend: str) -> Tuple[str, int, Optional[str]]:
    """(kind, device index, RPC endpoint) of a backend's text."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, not {type(backend).__name__}")
    if backend.lower().startswith("rpc://"):
        endpoint = backend[len("rpc://"):]
        host, _, port = endpoint.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"an RPC backend is 'rpc://HOST:PORT', not {backend!r}")
        return "rpc", 0, endpoint
    name, _, index = backend.lower().partition(":")
    if name not in ("auto", "cpu", "gpu") or (index and (name != "gpu" or not index.isdigit())):
        raise ValueError(f"backend must be 'auto', 'cpu', 'gpu', 'gpu:N' or 'rpc://HOST:PORT', not {backend!r}")
    return name, int(index) if index else 0, None


class NemotronModel:
    """A cache-aware FastConformer RNN-T model loaded from a GGUF file of either layout.

    Parameters
    ----------
    path:
        A GGUF file: the nemotron-asr.cpp port's layout (``general.architecture = "nemo"``) or
        NVIDIA's (``"asr"``), in f32, f16, q8_0, q4_0 or another ggml type. A registered model name
        (``nemotron_cpp.hub.known_models()``, e.g. ``"nemotron-speech-streaming-en-0.6b.q8_0"``) that
        is not also a file here is fetched from the Hugging Face Hub, as :meth:`from_pretrained`
        does. ``None`` loads the small demo model that ships in the package (a ``DemoModelWarning``
        says so: it knows only a narrow domain of voice commands, see ``nemotron_cpp.demo``).
    backend:
        ``"auto"`` (a GPU if the build has one and one is found, else the CPU), ``"cpu"``,
        ``"gpu"`` or ``"gpu:N"``, or ``"rpc://HOST:PORT"``: the device that ``nemotron-cpp
        rpc-server`` (or ggml's ``rpc-server``) serves there, in a build with ggml's RPC backend
        (see README, "GPUs and other devices").
    n_threads:
        CPU threads; ``None`` uses one per physical core.
    use_mmap:
        Map the file and use the weights in place (the default): loading is fast and the
        weights are not held twice in memory. Matrices the CPU backend multiplies faster in its
        own interleaved layout (q4_0 on x86, for one) are copied into it at load instead, and
        their pages of the file are given back (see ``repacked_bytes``).

    Raises
    ------
    FileNotFoundError
        The file does not exist (and the text is not a registered model name).
    DownloadError
        A registered model is not in the cache and cannot be fetched; ``ChecksumError``, a subclass,
        when the fetched file is not the registered one.
    ModelFileError
        The file is not a usable model; the message says why.
    UnsupportedModelError
        A valid file of a model this engine cannot run (a subclass of ModelFileError).
    BackendError
        The requested device does not exist (the message names the devices found), no RPC
        server answers at the endpoint, or the build lacks the backend.

    Examples
    --------
    >>> from nemotron_cpp import NemotronModel
    >>> with NemotronModel(tiny_model_path) as model:
    ...     print(model.layout, model.hparams.n_layers, model.hparams.d_model, len(model.vocabulary))
    nemo 2 128 128
    """

    def __init__(
        self,
        path: Optional[PathLike] = None,
        *,
        backend: str = "auto",
        n_threads: Optional[int] = None,
        use_mmap: bool = True,
    ) -> None:
        if path is None:
            path = demo_model_path()
        elif isinstance(path, str) and not os.path.exists(path) and not hub.looks_like_path(path):
            # A bare word that is not a file here: a registered model's name, or a mistake to explain.
            if not hub.is_known(path):
                names = ", ".join(m.name for m in hub.known_models())
                raise FileNotFoundError(errno.ENOENT, f"no such file, and not a known model name ({names})", path)
            path = hub.download(path)
        self.path = os.fspath(path)
        kind, index, endpoint = _parse_backend(backend)
        if n_threads is not None and (not isinstance(n_threads, int) or n_threads < 1):
            raise ValueError(f"n_threads must be a positive integer or None, not {n_threads!r}")
        self._handle = _lib.load(self.path, kind, index, n_threads or 0, use_mmap, endpoint)
        engine = self._handle.live()
        self._info = ModelInfo(**_lib.model_info(engine))
        self._hparams = HParams(**_lib.hparams(engine))
        self._vocabulary = tuple(p.decode("utf-8", errors="replace") for p in _lib.pieces(engine))
        self._tokenizer = Tokenizer(self._vocabulary)
        self._tensors = tuple(TensorInfo(**t) for t in _lib.tensors(engine))
        self._groups = tuple(TensorGroup(**g) for g in _lib.tensor_groups(engine))

    @classmethod
    def from_pretrained(
        cls,
        name_or_repo: str,
        filename: Optional[str] = None,
        revision: Optional[str] = None,
        **model_kwargs: Any,
    ) -> "NemotronModel":
        """Loads a model file from the Hugging Face Hub, fetching it into the Hugging Face cache first
        unless it is there already (``HF_HOME``, ``HF_HUB_OFFLINE`` and ``HF_TOKEN`` apply as for any
        Hub file).

        ``name_or_repo`` is a registered name, e.g. ``"nemotron-speech-streaming-en-0.6b.q8_0"``
        (NVIDIA's own GGUF file at a pinned revision, checked against its size and sha256), or a repo
        id with ``filename`` and optionally ``revision`` for any other GGUF file, e.g.
        ``NemotronModel.from_pretrained("m1el/nemotron-speech-streaming-0.6B-gguf",
        filename="nemotron-speech-streaming-0.6B-v0.1.Q8_0.gguf")``. ``model_kwargs`` are the
        constructor's (``backend``, ``n_threads``, ``use_mmap``). Raises what
        :func:`nemotron_cpp.hub.download` and the constructor raise.
        """
        return cls(hub.download(name_or_repo, filename, revision), **model_kwargs)

    # ---- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        """Frees the engine's memory and unmaps the file. Closing twice is harmless.

        The model's streams stop working (their methods raise ``ValueError``); the engine keeps
        the memory they read until the last of them is closed or collected, so no stream ever
        reads freed memory."""
        self._handle.close()

    @property
    def closed(self) -> bool:
        """True once close() was called."""
        return self._handle.closed

    def __enter__(self) -> "NemotronModel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- what the model is ------------------------------------------------------------------

    @property
    def hparams(self) -> HParams:
        """Every hyperparameter, read from the file or inferred from it."""
        return self._hparams

    @property
    def vocabulary(self) -> Tuple[str, ...]:
        """The SentencePiece pieces in id order; the blank (id ``hparams.blank_id``) is not included."""
        return self._vocabulary

    @property
    def info(self) -> ModelInfo:
        """What file the model came from and how the engine holds it; the properties below read it."""
        return self._info

    @property
    def layout(self) -> str:
        """``"nemo"`` (the nemotron-asr.cpp port's files) or ``"asr"`` (NVIDIA's files)."""
        return self._info.layout

    @property
    def name(self) -> str:
        """The file's ``general.name``, or ``""``."""
        return self._info.name

    @property
    def weight_type(self) -> str:
        """The type of the encoder layers' matrices, e.g. ``"q4_0"``."""
        return self._info.weight_type

    @property
    def backend(self) -> str:
        """The device the model runs on, e.g. ``"CPU"`` or ``"CUDA0"``."""
        return self._info.backend

    @property
    def n_threads(self) -> int:
        """CPU threads the engine uses."""
        return self._info.n_threads

    @property
    def file_size(self) -> int:
        """Size of the model file in bytes."""
        return self._info.file_size

    @property
    def weight_bytes(self) -> int:
        """Bytes of weights the engine holds."""
        return self._info.weight_bytes

    @property
    def uses_mmap(self) -> bool:
        """True when the weights are used in place from the memory-mapped file."""
        return self._info.uses_mmap

    @property
    def repacked_bytes(self) -> int:
        """Bytes of matrices copied at load into the CPU backend's interleaved layouts, whose
        kernels are faster (q4_0 on x86, for one); the rest stay in place in the mapped file."""
        return self._info.repacked_bytes

    @property
    def tensors(self) -> Tuple[TensorInfo, ...]:
        """Every weight tensor, under its NeMo name, as the engine holds it."""
        return self._tensors

    @property
    def languages(self) -> Tuple[str, ...]:
        """A multilingual model's languages (the codes of its prompt dictionary, e.g. ``"de-DE"``,
        and ``"auto"`` where it detects the language itself); ``()`` for a model of one language."""
        return self._info.languages

    @property
    def default_language(self) -> Optional[str]:
        """The language of streams that name none: ``"auto"`` where the model has it, else
        ``"en-US"``, else its first; None for a model of one language."""
        return self._info.default_language

    @property
    def frame_seconds(self) -> float:
        """Seconds of audio per encoder frame (0.08 for this model family)."""
        return geometry.frame_seconds(self._hparams)

    @property
    def latencies_ms(self) -> Tuple[int, ...]:
        """The chunk latencies the model was trained for, from its right contexts."""
        return geometry.latencies_ms(self._hparams)

    def stream(
        self,
        latency_ms: Optional[int] = None,
        *,
        sample_rate: Optional[int] = None,
        endpointing: Union[bool, Endpointing] = True,
        att_right_context: Optional[int] = None,
        chunking: str = "stream",
        keep_encoder_output: bool = False,
        keep_trace: bool = False,
        language: Optional[str] = None,
        hotwords: Optional[Hotwords] = None,
        boosting: Optional[Boosting] = None,
        beam_size: int = 1,
    ) -> Stream:
        """A new live stream; see :class:`nemotron_cpp.Stream`.

        ``latency_ms`` is the chunk length (80, 160, 560 or 1120 for this model; default: the
        model's first trained value, 1120); ``att_right_context`` says the same in encoder
        frames (latency = (right context + 1) x 80 ms). ``sample_rate`` is the rate of the audio
        that will be fed (default: the model's, 16 kHz); other rates are resampled. ``endpointing``
        splits the text into utterances: ``True`` uses :class:`Endpointing`'s defaults (0.8 s of
        silence, utterances of at least 0.3 s), an ``Endpointing`` sets them, ``False`` never ends
        an utterance before ``finalize()``. ``chunking`` is ``"stream"`` (NeMo's cache-aware
        streaming), ``"stream_padded"`` (NeMo's ``pad_and_drop_preencoded=True``) or ``"offline"``
        (NeMo's full-utterance path). ``language`` is the language of the audio for a multilingual
        model (one of :attr:`languages`; default :attr:`default_language`); a model of one language
        takes only None. ``hotwords`` are phrases to boost (``["Stella", ("Zyrtec", 2.0)]``: a phrase,
        or a phrase with its weight), scored as ``boosting`` says (default :class:`Boosting`); see
        :meth:`Stream.set_hotwords`, which changes them between utterances. ``beam_size`` > 1 decodes
        with NeMo's beam search (``malsd_batch``) instead of greedily; see :attr:`Stream.nbest`.
        """
        return Stream(self._handle, self._hparams, self._vocabulary,
                      att_right_context=geometry.att_right_context(self._hparams, latency_ms, att_right_context),
                      chunking=chunking, sample_rate=sample_rate, endpointing=_endpointing(endpointing),
                      keep_encoder_output=keep_encoder_output, keep_trace=keep_trace, language=language,
                      hotwords=hotwords, boosting=boosting, tokenizer=self._tokenizer, beam_size=beam_size)

    def step(self, streams: Sequence[Stream], *, final: Union[bool, Sequence[bool]] = False) -> List[StreamUpdate]:
        """Runs many streams together: batched decoding for servers and multi-channel audio.

        Give each stream its audio with :meth:`Stream.push`, then call ``step``: every chunk that
        is ready runs, and the chunks of streams with the same latency go through the encoder as
        one batch, which reads each weight once for all of them. ``final=True`` ends every
        stream's audio first, as :meth:`Stream.finalize` does; a list of bools, one per stream,
        ends only the streams marked (a server ends each connection's audio when that ends).
        Returns one update per stream, in order; the results are exactly those of feeding each stream alone. The computation uses
        this model's threads; the streams must not be fed on other threads meanwhile.
        """
        return run_together(self._handle, streams, final)

    def segments(
        self,
        audio: AudioInput,
        *,
        sample_rate: Optional[int] = None,
        latency_ms: Optional[int] = None,
        att_right_context: Optional[int] = None,
        endpointing: Union[bool, Endpointing] = True,
        progress: Optional[ProgressCallback] = None,
        language: Optional[str] = None,
        hotwords: Optional[Hotwords] = None,
        boosting: Optional[Boosting] = None,
        beam_size: int = 1,
    ) -> Iterator[Segment]:
        """Recognizes ``audio`` lazily, yielding each utterance as soon as it has ended; a long file is
        read, resampled and recognized a block at a time, so memory stays bounded. The arguments
        are :meth:`transcribe`'s. The input is opened and checked before this returns."""
        return self._offline(audio, sample_rate, latency_ms, att_right_context, endpointing, progress, language,
                             hotwords, boosting, beam_size)[1]

    def _offline(self, audio: AudioInput, sample_rate: Optional[int], latency_ms: Optional[int],
                 att_right_context: Optional[int], endpointing: Union[bool, Endpointing],
                 progress: Optional[ProgressCallback], language: Optional[str], hotwords: Optional[Hotwords],
                 boosting: Optional[Boosting], beam_size: int) -> Tuple[Stream, Iterator[Segment]]:
        endpoint = _endpointing(endpointing)
        right = geometry.att_right_context(self._hparams, latency_ms, att_right_context)
        blocks = iter_audio(audio, sample_rate, self._hparams.sample_rate)
        first = next(blocks)  # opens and checks the input now, not at the first segment
        stream = Stream(self._handle, self._hparams, self._vocabulary, att_right_context=right,
                        chunking="offline", endpointing=endpoint, language=language, hotwords=hotwords,
                        boosting=boosting, tokenizer=self._tokenizer, beam_size=beam_size)
        return stream, self._recognize(stream, itertools.chain([first], blocks), progress)

    @staticmethod
    def _recognize(stream: Stream, blocks: Iterable[Tuple[np.ndarray, float, Optional[float]]],
                   progress: Optional[ProgressCallback]) -> Iterator[Segment]:
        with stream:
            for block, done, total in blocks:
                update = stream.feed(block)
                if progress is not None:
                    progress(done, total)
                yield from update.segments
            yield from stream.finalize().segments

    def transcribe(
        self,
        audio: AudioInput,
        *,
        sample_rate: Optional[int] = None,
        latency_ms: Optional[int] = None,
        att_right_context: Optional[int] = None,
        endpointing: Union[bool, Endpointing] = True,
        progress: Optional[ProgressCallback] = None,
        language: Optional[str] = None,
        hotwords: Optional[Hotwords] = None,
        boosting: Optional[Boosting] = None,
        beam_size: int = 1,
    ) -> Transcript:
        """Recognizes a whole recording as NeMo's ``transcribe()`` does: the full-utterance encoder
        under the chunked attention mask of ``latency_ms`` (default: the model's first, 1120 ms),
        then greedy decoding; computed chunk by chunk, so memory stays bounded.

        ``audio`` is a path (any format libsndfile reads), a binary file-like object, the bytes of
        an encoded file or of raw 16-bit mono PCM, or a numpy array (``(frames,)`` or
        ``(frames, channels)``; float32/float64 in [-1, 1], int16 or int32). ``sample_rate`` is
        the rate of an array or raw PCM (default: the model's 16 kHz); anything not at 16 kHz mono
        is mixed down and resampled. ``endpointing`` splits the result into segments (see
        :meth:`stream`). ``progress(seconds_done, total_seconds)`` is called after each block.
        ``language``: a multilingual model's language; ``hotwords`` and ``boosting``: phrases to boost
        (see :meth:`stream`). ``beam_size`` > 1: NeMo's beam search, whose N best the result's ``nbest``
        lists.
        """
        stream, recognized = self._offline(audio, sample_rate, latency_ms, att_right_context, endpointing, progress,
                                           language, hotwords, boosting, beam_size)
        segments = tuple(recognized)
        return transcript_of(self._vocabulary, segments, stream.seconds, stream.nbest)

    async def astream(
        self,
        source: Union[AudioInput, Iterable[PCM], AsyncIterable[PCM]],
        *,
        sample_rate: Optional[int] = None,
        latency_ms: Optional[int] = None,
        endpointing: Union[bool, Endpointing] = True,
    ) -> AsyncIterator[StreamUpdate]:
        """Streams ``source`` for asyncio code: ``async for update in model.astream(source): ...``.

        ``source`` is an async or plain iterable of PCM pieces (numpy arrays, or bytes of 16-bit
        mono PCM) at ``sample_rate``, or any audio :meth:`transcribe` takes, read in chunk-sized
        pieces. The recognition runs in a worker thread, so the event loop stays free. Yields one
        update per piece and the last one from ``finalize()``.
        """
        loop = asyncio.get_running_loop()
        whole = isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview, np.ndarray)) or hasattr(source, "read")
        # Whole recordings are read (and resampled) here in chunk-sized pieces, at the model's rate.
        with self.stream(latency_ms, sample_rate=None if whole else sample_rate, endpointing=endpointing) as stream:
            if hasattr(source, "__aiter__"):
                async for piece in source:
                    yield await loop.run_in_executor(None, stream.feed, piece)
            else:
                if whole:
                    seconds = stream.chunk_samples / self._hparams.sample_rate
                    pieces: Iterator[PCM] = (block for block, _, _ in iter_audio(
                        source, sample_rate, self._hparams.sample_rate, block_seconds=seconds))  # type: ignore[arg-type]
                else:
                    pieces = iter(source)  # type: ignore[arg-type]
                while True:
                    piece = await loop.run_in_executor(None, next, pieces, None)
                    if piece is None:
                        break
                    yield await loop.run_in_executor(None, stream.feed, piece)
            yield await loop.run_in_executor(None, stream.finalize)

    def check_hotwords(self, hotwords: Hotwords) -> Tuple[Tuple[str, float], ...]:
        """Checks phrases as :meth:`stream` would take them, without a stream: returns them as
        ``(phrase, weight)`` pairs (weight 0.0: the default), or raises what ``stream`` raises (a
        ``ValueError`` naming the phrase and the characters this model cannot spell, for one)."""
        return tuple(compile_hotwords(self._tokenizer, hotwords)[0])

    def tokenize(self, text: str) -> List[int]:
        """The token ids of ``text`` as NeMo's SentencePiece tokenizer encodes it (how hotwords are
        spelled for the decoder); characters the vocabulary cannot spell become ``<unk>`` (id 0).

        >>> model = NemotronModel(tiny_model_path)
        >>> model.tokenize("the birch") == model.tokenize("  the   birch ")
        True
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a string, not {type(text).__name__}")
        return self._tokenizer.encode(text)

    def log_mel(self, samples: np.ndarray) -> np.ndarray:
        """The log-mel features of a whole signal, as NeMo's preprocessor computes them.

        ``samples`` is mono float audio in [-1, 1) at ``hparams.sample_rate``. Returns float32
        ``[n_mels, 1 + len(samples) // hop_length]``; like NeMo, the last frame is zero.
        """
        audio = to_mono_float(samples)
        if audio.size == 0:
            raise ValueError("the audio is empty")
        return _lib.compute_mel(self._handle.live(), audio, self._hparams.n_mels).T.copy()

    def get_tensor(self, name: str) -> np.ndarray:
        """A weight tensor's values as the engine holds them, dequantized to float32.

        The array has PyTorch's dimension order (ggml's ``shape`` reversed); LSTM tensors use
        PyTorch's names in either layout, and the depthwise convolution kernels are held as
        ``(d_model, kernel)``.

        >>> model = NemotronModel(tiny_model_path)
        >>> model.get_tensor("joint.enc.weight").shape
        (128, 128)
        """
        for index, info in enumerate(self._tensors):
            if info.name == name:
                count = int(np.prod(info.shape))
                data = _lib.tensor_data(self._handle.live(), index, count)
                return np.frombuffer(data, dtype=np.float32).reshape(info.shape[::-1]).copy()
        raise KeyError(f"the model has no tensor {name!r}")

    @property
    def tensor_groups(self) -> Tuple[TensorGroup, ...]:
        """Parts of the network with their weight types and sizes."""
        return self._groups

    @property
    def window(self) -> np.ndarray:
        """The STFT window the frontend uses, float32 ``[win_length]``."""
        window, _ = _lib.frontend_tables(self._handle.live())
        return np.frombuffer(window, dtype=np.float32).copy()

    @property
    def mel_filterbank(self) -> np.ndarray:
        """The mel filterbank the frontend uses, float32 ``[n_mels, n_fft // 2 + 1]``."""
        _, fb = _lib.frontend_tables(self._handle.live())
        hp = self._hparams
        return np.frombuffer(fb, dtype=np.float32).reshape(hp.n_mels, hp.n_fft // 2 + 1).copy()

    def __repr__(self) -> str:
        hp = self._hparams
        state = "closed" if self.closed else f"on {self.backend}"
        return (
            f"NemotronModel({self.path!r}, layout={self.layout!r}, weight_type={self.weight_type!r}, "
            f"{hp.n_layers} layers x d_model {hp.d_model}, vocab {hp.vocab_size}, {state})"
        )
