"""Recognition results: plain frozen dataclasses.

Times are seconds from the start of the audio, taken from the encoder frame that emitted each
token (one frame per 80 ms for this model family): a token emitted at frame ``t`` has
``start = t * frame_seconds`` and ``end = start + frame_seconds``, clipped to the audio's length and
rounded to the millisecond (``1.68``, not ``1.6800000000000002``); ``Transcript.duration`` too.

``confidence`` is the softmax probability the joint network gave the emitted token, over the
whole vocabulary and the blank, at the step that emitted it (NeMo's "max_prob" measure before its
rescaling to [0, 1]). A word's confidence is the lowest of its tokens' (NeMo's default "min"
aggregation): a word is as uncertain as its least certain piece.

Language tags, the pieces ``<de-DE>`` that multilingual models emit to say what language they hear,
are not text: they are left out of the tokens, words and text, and reported as ``language``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

__all__ = ["Token", "Word", "Segment", "Transcript", "Hypothesis"]


@dataclass(frozen=True)
class Token:
    """One emitted token: its vocabulary id, its SentencePiece piece, when it was emitted and how sure
    the model was."""

    id: int
    text: str  #: the piece, e.g. ``"▁hel"`` (``▁`` starts a word)
    start: float  #: seconds
    end: float  #: seconds
    confidence: float  #: softmax probability of the token at the step that emitted it
    frame: int  #: the encoder frame that emitted it


@dataclass(frozen=True)
class Word:
    """A word: the tokens from one word-start piece up to the next."""

    text: str
    start: float  #: the start of its first token, seconds
    end: float  #: the end of its last token, seconds
    confidence: float  #: the lowest confidence of its tokens
    tokens: Tuple[Token, ...]


@dataclass(frozen=True)
class Segment:
    """An utterance: the words between two endpoints (a long enough silence after speech)."""

    text: str
    start: float  #: seconds
    end: float  #: seconds
    words: Tuple[Word, ...]
    tokens: Tuple[Token, ...]
    #: A multilingual model's language for it: the last language tag (``<de-DE>``) the model emitted
    #: up to its end, as the code (``"de-DE"``); None where the model emitted none.
    language: Optional[str] = None


@dataclass(frozen=True)
class Hypothesis:
    """One of beam search's N best transcripts of a whole stream or recording."""

    text: str
    token_ids: Tuple[int, ...]  #: language tags left out, as in the text
    #: Its total log-probability, summed over the search's steps (with hotwords, the boosted one); the
    #: list is ranked as NeMo ranks it, by ``score / (tokens + 1)``.
    score: float


@dataclass(frozen=True)
class Transcript:
    """The result of :meth:`NemotronModel.transcribe`: the text, its utterances, words and tokens."""

    text: str
    segments: Tuple[Segment, ...]
    tokens: Tuple[Token, ...]
    words: Tuple[Word, ...]
    duration: float  #: seconds of audio
    language: Optional[str] = None  #: the language of the last segment that has one (see Segment.language)
    #: Beam search's N best (``beam_size`` > 1), best first; the first is the text above. ``()`` for greedy decoding.
    nbest: Tuple[Hypothesis, ...] = ()
