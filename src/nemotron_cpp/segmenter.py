"""Tokens to words and utterances: the endpoint rule shared by streams and ``transcribe``.

An utterance ends (an *endpoint*) when at least ``silence`` seconds of encoder frames have passed
with no token after its last token, provided the utterance already spans ``min_utterance``
seconds; a shorter one waits and joins the speech that follows. The rule looks only at token
frames, so it gives the same utterances however the audio was split into pieces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .results import Hypothesis, Segment, Token, Transcript, Word
from .text import WORD_START, detokenize, language_tag, piece_bytes, text_from_bytes

__all__ = ["Endpointing", "Segmenter", "transcript_of"]


def _ms(seconds: float) -> float:
    """A time rounded to the millisecond: frame counts times 0.08 are not exact in binary, and results
    should read 1.68, not 1.6800000000000002."""
    return round(seconds, 3)


@dataclass(frozen=True)
class Endpointing:
    """When an utterance ends; see the module's description. Times in seconds."""

    silence: float = 0.8  #: no token for this long after the last one ends the utterance
    min_utterance: float = 0.3  #: ... if the utterance spans at least this long
    #: At each endpoint the prediction network starts over as at the start of the stream, so each
    #: utterance is decoded on its own. NeMo's decoding (its streaming pipeline too) carries the state
    #: through the whole stream, across endpoints: with this on, tokens after the first endpoint may
    #: differ from NeMo's. It helps a model trained on short recordings on long streams.
    reset_decoder: bool = False

    def __post_init__(self) -> None:
        for name in ("silence", "min_utterance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                raise ValueError(f"endpointing {name} must be a number of seconds >= 0, not {value!r}")
        if self.silence <= 0:
            raise ValueError(f"endpointing silence must be > 0 seconds, not {self.silence!r}")
        if not isinstance(self.reset_decoder, bool):
            raise TypeError(f"endpointing reset_decoder must be True or False, not {self.reset_decoder!r}")

    def frames(self, frame_seconds: float) -> Tuple[int, int]:
        """The rule in encoder frames: (silence, min_utterance), each the fewest frames that last at
        least that long. The engine's decoder reset uses the same two numbers as the segmenter."""
        # A hair of tolerance: frame counts times 0.08 are not exact in binary.
        return (math.ceil((self.silence - 1e-9) / frame_seconds),
                max(0, math.ceil((self.min_utterance - 1e-9) / frame_seconds)))


def transcript_of(vocabulary: Sequence[str], segments: Sequence[Segment], duration: float,
                  nbest: Sequence[Hypothesis] = ()) -> Transcript:
    """A :class:`Transcript` of these utterances; its text decoded from every token at once, as NeMo's
    tokenizer decodes it."""
    tokens = tuple(t for s in segments for t in s.tokens)
    return Transcript(text=detokenize(vocabulary, [t.id for t in tokens]), segments=tuple(segments), tokens=tokens,
                      words=tuple(w for s in segments for w in s.words), duration=_ms(duration),
                      language=next((s.language for s in reversed(segments) if s.language), None), nbest=tuple(nbest))


def hypothesis_of(vocabulary: Sequence[str], ids: Sequence[int], score: float) -> Hypothesis:
    """A beam search hypothesis, its language tags left out of its ids and text."""
    kept = tuple(int(i) for i in ids if not (0 <= i < len(vocabulary) and language_tag(vocabulary[i])))
    return Hypothesis(text=detokenize(vocabulary, kept), token_ids=kept, score=float(score))


class Segmenter:
    """Collects tokens as they are emitted into words and utterances.

    ``endpointing=None`` never ends an utterance before :meth:`close`.
    """

    def __init__(self, vocabulary: Sequence[str], frame_seconds: float, endpointing: Optional[Endpointing]) -> None:
        self._vocabulary = vocabulary
        self._frame_seconds = frame_seconds
        self._rule = endpointing.frames(frame_seconds) if endpointing is not None else None
        self.reset()

    def reset(self) -> None:
        """Forgets everything."""
        self.language: Optional[str] = None  # the last language tag's code
        self.segments: List[Segment] = []
        self._bytes = bytearray()  # every token's piece bytes
        self._utterance: List[Token] = []
        self._utterance_bytes = bytearray()
        self._words: List[Word] = []  # the current utterance's finished words
        self._word: List[Token] = []  # the word in progress

    def forget_ended(self) -> None:
        """Forgets the utterances that have ended, keeping the one in progress."""
        self.segments = []
        self._bytes = bytearray(self._utterance_bytes)

    # ---- what is there so far --------------------------------------------------------------

    @property
    def vocabulary(self) -> Sequence[str]:
        """The pieces of the token ids, in id order."""
        return self._vocabulary

    @property
    def tokens(self) -> Tuple[Token, ...]:
        """Every token kept: those of the ended utterances not forgotten, then the one in progress."""
        return tuple(t for s in self.segments for t in s.tokens) + tuple(self._utterance)

    @property
    def partial(self) -> str:
        """The text of the utterance in progress."""
        return text_from_bytes(bytes(self._utterance_bytes))

    @property
    def text(self) -> str:
        """All the text so far, decoded from every token at once as NeMo's tokenizer does (so it is
        the same with or without endpointing)."""
        return text_from_bytes(bytes(self._bytes))

    def pending_segment(self) -> Optional[Segment]:
        """The utterance in progress as a segment, its last word included, or None if it is empty."""
        if not self._utterance:
            return None
        words = self._words + ([self._make_word(self._word)] if self._word else [])
        return self._make_segment(self._utterance, words)

    # ---- feeding -----------------------------------------------------------------------------

    def add(self, ids: np.ndarray, frames: np.ndarray, confidences: np.ndarray, n_frames: int,
            duration: float = float("inf")) -> Tuple[List[Token], List[Word], List[Segment]]:
        """Takes the tokens emitted since the last call, with the encoder frames computed so far
        (``n_frames``). Returns the new tokens, the words they finished and the utterances that
        ended. At the end of the audio, ``duration`` clips the times of the frames that padding
        added past it."""
        step = self._frame_seconds
        tokens: List[Token] = []
        words: List[Word] = []
        segments: List[Segment] = []
        for i, f, p in zip(ids.tolist(), frames.tolist(), confidences.tolist()):
            code = language_tag(self._vocabulary[i])
            if code is not None:  # not text: the language the model hears from here on
                self.language = code
                continue
            if self._utterance and self._ends(self._utterance[-1].frame, f):
                segments.append(self._close(words))
            start = min(f * step, duration)
            token = Token(id=i, text=self._vocabulary[i], start=_ms(start), end=_ms(min(start + step, duration)),
                          confidence=p, frame=f)
            if self._word and token.text.startswith(WORD_START):
                words.append(self._finish_word())
            self._word.append(token)
            self._utterance.append(token)
            piece = piece_bytes(self._vocabulary, (i,))
            self._utterance_bytes += piece
            self._bytes += piece
            tokens.append(token)
        if self._utterance and self._ends(self._utterance[-1].frame, n_frames):
            segments.append(self._close(words))
        return tokens, words, segments

    def close(self) -> Tuple[List[Word], Optional[Segment]]:
        """Ends the utterance in progress (at the end of the audio): its last word and itself."""
        words: List[Word] = []
        if not self._utterance:
            return words, None
        return words, self._close(words)

    # ---- the rule and the bookkeeping --------------------------------------------------------

    def _ends(self, last_frame: int, next_frame: int) -> bool:
        if self._rule is None:
            return False
        silence, min_utterance = self._rule
        return next_frame - last_frame - 1 >= silence and last_frame + 1 - self._utterance[0].frame >= min_utterance

    def _make_word(self, tokens: Sequence[Token]) -> Word:
        return Word(text=detokenize(self._vocabulary, [t.id for t in tokens]).strip(), start=tokens[0].start,
                    end=tokens[-1].end, confidence=min(t.confidence for t in tokens), tokens=tuple(tokens))

    def _finish_word(self) -> Word:
        word = self._make_word(self._word)
        self._words.append(word)
        self._word = []
        return word

    def _make_segment(self, tokens: Sequence[Token], words: Sequence[Word]) -> Segment:
        return Segment(text=text_from_bytes(piece_bytes(self._vocabulary, [t.id for t in tokens])).strip(),
                       start=tokens[0].start, end=tokens[-1].end, words=tuple(words), tokens=tuple(tokens),
                       language=self.language)

    def _close(self, words: List[Word]) -> Segment:
        if self._word:
            words.append(self._finish_word())
        segment = self._make_segment(self._utterance, self._words)
        self.segments.append(segment)
        self._utterance, self._utterance_bytes, self._words = [], bytearray(), []
        return segment
