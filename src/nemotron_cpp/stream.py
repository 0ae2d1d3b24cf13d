"""Streams: cache-aware recognition of audio that arrives in pieces."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _lib, chunking as geometry
from .boosting import Boosting, Hotwords, compile_hotwords
from .audio import LevelCheck, Resampler, check_sample_rate, live_samples
from .info import HParams
from .results import Hypothesis, Segment, Token, Transcript, Word
from .segmenter import Endpointing, Segmenter, hypothesis_of, transcript_of
from .text import Tokenizer

__all__ = ["Stream", "StreamUpdate", "CHUNKINGS", "PCM", "run_together"]

#: ``"stream"``: NeMo's cache-aware streaming; ``"stream_padded"``: NeMo's
#: ``pad_and_drop_preencoded=True`` (what the nemotron-asr.cpp port computes);
#: ``"offline"``: NeMo's full-utterance path, computed chunk by chunk.
CHUNKINGS = ("stream", "stream_padded", "offline")

#: A piece of live audio: a numpy array (frames or frames x channels; float32/float64 in [-1, 1],
#: int16 or int32) or the bytes of 16-bit little-endian mono PCM.
PCM = Union[np.ndarray, bytes, bytearray, memoryview]


@dataclass(frozen=True)
class StreamUpdate:
    """What one ``feed`` or ``finalize`` changed.

    Tokens are never revised once emitted (greedy RNN-T decoding commits each one), so ``text``
    only grows. ``partial`` is the utterance still in progress: show it in place, and when
    ``is_final`` is true move on to a new line, because ``segments`` then holds the utterances
    that just ended and ``partial`` has started afresh.
    """

    text: str  #: everything recognized so far, decoded as NeMo's tokenizer decodes it
    partial: str  #: the utterance in progress
    new_text: str  #: what this update appended to ``text``
    new_tokens: Tuple[Token, ...]
    new_words: Tuple[Word, ...]  #: words finished by this update (a word ends when the next begins)
    is_final: bool  #: an utterance ended in this update
    segments: Tuple[Segment, ...]  #: the utterances that ended in this update
    #: A multilingual model's language as it last said (its last language tag), or None.
    language: Optional[str] = None


class Stream:
    """One live feed on a model: it owns its encoder caches, decoder state and results.

    With beam search (``beam_size`` > 1) the tokens that every hypothesis holds are handed out as they
    come, so text still only grows (it trails greedy decoding's by the frames where the hypotheses
    differ), and ``finalize()`` adds the best hypothesis's rest; :attr:`nbest` then lists the N best.

    Made by :meth:`NemotronModel.stream`. ``feed`` takes audio in pieces of any size; the tokens do
    not depend on how the audio is split. With endpointing on, the stream splits its text into
    utterances and says so with ``is_final``; it carries on into the next utterance by itself.
    """

    def __init__(
        self,
        model: _lib.Handle,
        hparams: HParams,
        vocabulary: Sequence[str],
        *,
        att_right_context: Optional[int] = None,
        chunking: str = "stream",
        sample_rate: Optional[int] = None,
        endpointing: Optional[Endpointing] = None,
        keep_encoder_output: bool = False,
        keep_trace: bool = False,
        language: Optional[str] = None,
        hotwords: Optional[Hotwords] = None,
        boosting: Optional[Boosting] = None,
        tokenizer: Optional[Tokenizer] = None,
        beam_size: int = 1,
    ) -> None:
        """A stream on a model's engine handle, described by its hyperparameters and vocabulary; made
        by :meth:`NemotronModel.stream`."""
        if chunking not in CHUNKINGS:
            raise ValueError(f"chunking must be one of {CHUNKINGS}, not {chunking!r}")
        if att_right_context is not None and att_right_context < 0:
            raise ValueError(f"att_right_context must be >= 0, not {att_right_context}")
        self._hparams = hparams
        self.sample_rate = hparams.sample_rate if sample_rate is None else check_sample_rate(sample_rate)
        frame_seconds = geometry.frame_seconds(hparams)
        reset = endpointing.frames(frame_seconds) if endpointing is not None and endpointing.reset_decoder else (0, 0)
        if language is not None and not isinstance(language, str):
            raise TypeError(f"language must be a language code (a string) or None, not {language!r}")
        if isinstance(beam_size, bool) or not isinstance(beam_size, int) or not 1 <= beam_size <= hparams.vocab_size:
            raise ValueError(f"beam_size must be a whole number from 1 (greedy decoding) to the vocabulary size "
                             f"{hparams.vocab_size}, not {beam_size!r}")
        if beam_size > 1 and reset != (0, 0):
            raise ValueError("Endpointing(reset_decoder=True) works with greedy decoding only, not with beam search")
        #: Hypotheses of the beam search (1: greedy decoding).
        self.beam_size = beam_size
        self._handle = _lib.stream_init(model, -1 if att_right_context is None else att_right_context, chunking,
                                        keep_encoder_output, keep_trace, reset, language, beam_size)
        #: The language the stream recognizes (a multilingual model's code; None for other models).
        self.language = language if language is not None else _lib.default_language(model.live())
        self.chunking = chunking
        self.att_right_context = _lib.stream_att_right_context(self._handle.live())
        self._segmenter = Segmenter(vocabulary, frame_seconds, endpointing)
        self._level = LevelCheck()  # one warning per stream about float audio far outside [-1, 1]
        self._tokenizer = tokenizer
        #: The phrases the stream boosts, each with its weight (0.0: ``boosting.context_score``).
        self.hotwords: Tuple[Tuple[str, float], ...] = ()
        #: The boosting settings of those phrases (None without hotwords).
        self.boosting: Optional[Boosting] = None
        if hotwords is not None:
            self.set_hotwords(hotwords, boosting)
        elif boosting is not None:
            raise ValueError("boosting settings were given without hotwords")
        self._start_over()

    def set_hotwords(self, hotwords: Optional[Hotwords], boosting: Optional[Boosting] = None) -> None:
        """Boosts these phrases from the next decoding step on, replacing the stream's phrases; None or
        an empty list turns boosting off. Hotwords are phrases, or (phrase, weight) pairs whose weight
        replaces ``boosting.context_score`` for that phrase; ``boosting`` defaults to
        :class:`Boosting`'s defaults. Call it between utterances (after ``is_final``) to change what a
        live stream listens for: a phrase under way when it is called loses its bonus.

        Raises ``ValueError`` for an empty phrase, a phrase with characters the model's vocabulary
        cannot spell, or a weight outside (0, 100], and ``TypeError`` for anything but phrases."""
        if boosting is not None and not isinstance(boosting, Boosting):
            raise TypeError(f"boosting must be a nemotron_cpp.Boosting or None, not {boosting!r}")
        if self._tokenizer is None:
            self._tokenizer = Tokenizer(self._segmenter.vocabulary)
        phrases, tokens, weights = compile_hotwords(self._tokenizer, hotwords if hotwords is not None else [])
        settings = boosting or Boosting()
        _lib.stream_set_phrases(self._live(), tokens, weights, settings.alpha, settings.context_score,
                                settings.depth_scaling, settings.unk_score)
        self.hotwords = tuple(phrases)
        self.boosting = settings if phrases else None

    def _start_over(self) -> None:
        self._resampler = Resampler(self.sample_rate, self._hparams.sample_rate)
        self._samples = 0  # at the model's rate
        self._finished = False
        self._segmenter.reset()
        self._text = ""
        self._nbest: Tuple[Hypothesis, ...] = ()

    def feed(self, pcm: PCM, sample_rate: Optional[int] = None) -> StreamUpdate:
        """Adds a piece of audio and runs every chunk that is complete.

        ``sample_rate`` defaults to the stream's (``model.stream(sample_rate=...)``, by default the
        model's 16 kHz); one stream takes one rate. Bytes are 16-bit little-endian mono PCM.
        """
        self.push(pcm, sample_rate)
        _lib.stream_run(self._live())
        return self._update(final=False)

    def push(self, pcm: PCM, sample_rate: Optional[int] = None) -> None:
        """Adds a piece of audio like :meth:`feed` but computes nothing: :meth:`NemotronModel.step`
        then runs many streams together."""
        self._live()
        if self._finished:
            raise ValueError("the stream was finalized; call reset() to start a new one")
        if sample_rate is not None and check_sample_rate(sample_rate) != self.sample_rate:
            raise ValueError(f"this stream takes {self.sample_rate} Hz audio, not {sample_rate} Hz; "
                             f"give the rate to model.stream(sample_rate=...)")
        self._push(self._resampler(self._level(live_samples(pcm))))

    def _push(self, audio: np.ndarray) -> None:
        if audio.size:
            _lib.stream_push(self._live(), audio)
            self._samples += audio.size

    def finalize(self) -> StreamUpdate:
        """Ends the audio: runs what remains, as NeMo does at the end of a stream, and ends the
        last utterance. ``reset()`` then readies the stream for new audio."""
        self._end()
        _lib.stream_finish(self._live())
        return self._update(final=True)

    def _end(self) -> None:
        if self._finished:
            raise ValueError("the stream was already finalized; call reset() to start a new one")
        self._push(self._resampler(np.zeros(0, np.float32), last=True))
        _lib.stream_end(self._live())
        self._finished = True

    def reset(self) -> None:
        """Starts the next utterance: forgets the utterances that have ended (their text, tokens
        and segments) and keeps listening, so nothing is lost: an utterance already under way, the
        audio not yet recognized, the encoder caches and the decoder state carry on, and times keep
        counting from the start of the stream. After ``finalize()`` it readies the stream for new
        audio: empty caches, times from zero.

        With endpointing the stream moves on to the next utterance by itself; ``reset()`` after
        ``is_final`` (as sherpa-onnx users write) frees what has piled up."""
        handle = self._live()
        if self._finished:
            _lib.stream_reset(handle)
            self._start_over()
            return
        self._segmenter.forget_ended()
        self._text = self._segmenter.text

    def close(self) -> None:
        """Frees the stream now rather than when it is garbage-collected."""
        self._handle.close()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _live(self) -> object:
        return self._handle.live()

    def _update(self, final: bool) -> StreamUpdate:
        if final:
            self._nbest = tuple(hypothesis_of(self._segmenter.vocabulary, ids.tolist(), score)
                                for ids, score in _lib.stream_nbest(self._live()))
        ids, frames, confidences = _lib.stream_take_tokens(self._live())
        # Until the end, a frame may be computed before all of its 80 ms have arrived (the subsampling
        # is causal), so times are clipped to the audio only once its length is known.
        tokens, words, segments = self._segmenter.add(ids, frames, confidences, self.n_frames,
                                                      self.seconds if final else float("inf"))
        if final:
            last_words, last = self._segmenter.close()
            words += last_words
            if last is not None:
                segments.append(last)
        if not tokens and not segments and not final:
            return StreamUpdate(text=self._text, partial=self._segmenter.partial, new_text="", new_tokens=(),
                                new_words=(), is_final=False, segments=(), language=self._segmenter.language)
        text = self._segmenter.text
        new_text = text[len(self._text):] if text.startswith(self._text) else text
        self._text = text
        return StreamUpdate(text=text, partial=self._segmenter.partial, new_text=new_text, new_tokens=tuple(tokens),
                            new_words=tuple(words), is_final=bool(segments), segments=tuple(segments),
                            language=self._segmenter.language)

    @property
    def latency_ms(self) -> int:
        """The chunk latency: ``att_right_context + 1`` encoder frames of audio."""
        return geometry.latency_ms(self._hparams, self.att_right_context)

    @property
    def chunk_samples(self) -> int:
        """Samples at the model's rate in one chunk: the piece size that computes a chunk per piece."""
        return geometry.chunk_samples(self._hparams, self.att_right_context)

    @property
    def seconds(self) -> float:
        """Seconds of audio fed so far."""
        return self._samples / self._hparams.sample_rate

    @property
    def segments(self) -> Tuple[Segment, ...]:
        """The utterances that have ended so far."""
        return tuple(self._segmenter.segments)

    def transcript(self) -> Transcript:
        """Everything so far as a :class:`Transcript`; the utterance in progress is its last segment."""
        pending = self._segmenter.pending_segment()
        segments = self.segments + ((pending,) if pending is not None else ())
        return transcript_of(self._segmenter.vocabulary, segments, self.seconds)

    @property
    def nbest(self) -> Tuple[Hypothesis, ...]:
        """Beam search's N best transcripts of the stream once ``finalize()`` has run, best first (the first
        is :attr:`text`, utterances joined); ``()`` before that and for greedy decoding."""
        return self._nbest

    @property
    def tokens(self) -> np.ndarray:
        """The token ids of the text so far (since the stream began, or since the utterances
        before the last ``reset()``); a multilingual model's language tags are not text and are left
        out (``keep_trace`` shows every emitted id)."""
        return np.array([t.id for t in self._segmenter.tokens], np.int32)

    @property
    def token_frames(self) -> np.ndarray:
        """The encoder frame at which each token was emitted."""
        return np.array([t.frame for t in self._segmenter.tokens], np.int32)

    @property
    def token_confidences(self) -> np.ndarray:
        """The softmax probability of each token at the step that emitted it."""
        return np.array([t.confidence for t in self._segmenter.tokens], np.float32)

    @property
    def text(self) -> str:
        """The text so far, decoded from every token at once (as NeMo's tokenizer would)."""
        return self._segmenter.text

    @property
    def n_frames(self) -> int:
        """Encoder frames computed so far."""
        return _lib.stream_n_frames(self._live())

    @property
    def encoder_output(self) -> np.ndarray:
        """Every encoder frame so far, ``[frames, d_model]`` (needs ``keep_encoder_output``)."""
        return _lib.stream_encoder_output(self._live(), self._hparams.d_model)[0]

    @property
    def chunk_ends(self) -> np.ndarray:
        """The encoder frame count after each chunk (needs ``keep_encoder_output``)."""
        return _lib.stream_encoder_output(self._live(), self._hparams.d_model)[1]

    @property
    def trace(self) -> np.ndarray:
        """Every joint step: fields ``frame``, ``token`` (the argmax, blank included), ``margin``
        (top-1 minus top-2 logit) and ``confidence`` (the argmax's softmax probability) (needs ``keep_trace``)."""
        return _lib.stream_trace(self._live())


def run_together(model: _lib.Handle, streams: Sequence[Stream],
                 final: Union[bool, Sequence[bool]]) -> List[StreamUpdate]:
    """Runs the ready chunks of many streams of one model together (see :meth:`NemotronModel.step`)."""
    engine = model.live()
    streams = list(streams)
    if isinstance(final, bool):
        ends = [final] * len(streams)
    else:
        ends = list(final)
        if len(ends) != len(streams) or not all(isinstance(e, bool) for e in ends):
            raise ValueError(f"final must be True, False or one bool per stream ({len(streams)}), not {final!r}")
    for s in streams:
        if not isinstance(s, Stream) or not s._handle.belongs_to(model):
            raise ValueError("step() takes streams made by this model's stream()")
    if len({id(s) for s in streams}) != len(streams):
        raise ValueError("step() got the same stream twice")
    handles = [s._live() for s in streams]
    for s, end in zip(streams, ends):
        if end:
            s._end()
    _lib.streams_run(engine, handles)
    return [s._update(final=end) for s, end in zip(streams, ends)]
