"""Phrase boosting (hotwords): phrases the decoder should prefer, as NeMo's boosting tree scores them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, List, Sequence, Tuple, Union

from .text import Tokenizer

__all__ = ["Boosting", "Hotword", "Hotwords", "compile_hotwords", "parse_hotword_lines"]

#: A phrase, or a phrase with its own weight (its tokens' score, instead of ``Boosting.context_score``).
Hotword = Union[str, Tuple[str, float]]
Hotwords = Iterable[Hotword]

_MAX_WEIGHT = 100.0  # larger scores swamp the acoustic log-probabilities (a few units) entirely


@dataclass(frozen=True)
class Boosting:
    """How hotwords are scored: NeMo's boosting-tree settings (``BoostingTreeModelConfig`` and
    ``boosting_tree_alpha``), with NeMo's defaults for RNN-T models except ``alpha``, which NeMo leaves
    at 0 (no boosting).

    A phrase's first token scores ``context_score`` (or the phrase's own weight), its token i after
    that ``context_score * depth_scaling + ln(i + 1)``; a token that starts no phrase scores
    ``unk_score``. The decoder adds ``alpha`` times the score to each label's log-probability when it
    picks which label to emit (never whether to emit one), and takes the bonus back when a partial
    match breaks off, so only completed phrases keep it.
    """

    alpha: float = 1.0
    context_score: float = 1.0
    depth_scaling: float = 2.0
    unk_score: float = 0.0

    def __post_init__(self) -> None:
        for name in ("alpha", "context_score", "depth_scaling", "unk_score"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"Boosting.{name} must be a finite number, not {value!r}")
            if abs(value) > _MAX_WEIGHT:
                raise ValueError(f"Boosting.{name} {value} is absurd: |value| <= {_MAX_WEIGHT:g}")
        if self.alpha <= 0:
            raise ValueError(f"Boosting.alpha must be > 0 (no hotwords turns boosting off), not {self.alpha}")


def compile_hotwords(tokenizer: Tokenizer, hotwords: Hotwords) -> Tuple[List[Tuple[str, float]], List[List[int]], List[float]]:
    """Checks hotwords and tokenizes them as NeMo's tokenizer encodes phrases (lower-cased first for a
    model whose vocabulary has no capitals): (the phrases with their weights, 0.0 where they have
    none), their token ids and the weights."""
    if isinstance(hotwords, (str, bytes)):
        raise TypeError("hotwords must be a list of phrases (or of (phrase, weight) pairs), not one string")
    phrases: List[Tuple[str, float]] = []
    tokens: List[List[int]] = []
    for item in hotwords:
        phrase, weight = (item, 0.0) if isinstance(item, str) else _pair(item)
        # A lower-case model hears "Stella" as "stella"; its tokenizer would spell the capital <unk>.
        spelled = phrase if tokenizer.cased else phrase.lower()
        ids = tokenizer.encode(spelled)
        if not ids:
            raise ValueError(f"hotword {phrase!r} is empty")
        unknown = tokenizer.unknown_characters(spelled)
        if unknown:
            raise ValueError(f"hotword {phrase!r} has characters the model's vocabulary cannot spell: {unknown!r}")
        phrases.append((phrase, weight))
        tokens.append(ids)
    return phrases, tokens, [w for _, w in phrases]


def _pair(item: object) -> Tuple[str, float]:
    if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)):
        raise TypeError(f"a hotword is a phrase or a (phrase, weight) pair, not {item!r}")
    phrase, weight = item
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
        raise ValueError(f"hotword {phrase!r}: the weight must be a finite number, not {weight!r}")
    if not 0 < weight <= _MAX_WEIGHT:
        raise ValueError(f"hotword {phrase!r}: weight {weight} is out of range (0, {_MAX_WEIGHT:g}]")
    return phrase, float(weight)


def parse_hotword_lines(lines: Sequence[str], source: str) -> List[Hotword]:
    """Hotwords from text lines: one phrase per line, optionally ``PHRASE :WEIGHT`` (sherpa-onnx's
    format); blank lines and lines starting with ``#`` are skipped."""
    out: List[Hotword] = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        phrase, sep, weight = text.rpartition(" :")
        if not sep:
            out.append(text)
            continue
        try:
            out.append((phrase.strip(), float(weight)))
        except ValueError:
            raise ValueError(f"{source}:{number}: the weight after ' :' must be a number, not {weight!r}") from None
    return out
