"""Token ids to text and text to token ids, as NeMo's SentencePiece BPE tokenizer decodes and
encodes them."""

from __future__ import annotations

import re
import unicodedata
from typing import Dict, Iterable, List, Sequence

__all__ = ["WORD_START", "Tokenizer", "detokenize", "language_tag", "piece_bytes", "text_from_bytes"]

#: SentencePiece's "▁" (U+2581, 3 bytes in UTF-8): a piece that begins a word starts with it.
WORD_START = "\u2581"
_UNKNOWN_SURFACE = " \u2047 "  # SentencePiece prints <unk> as " ⁇ "
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
# Multilingual models (Nemotron 3.5) emit the language they hear as a piece of their vocabulary,
# "<de-DE>", at the start of an utterance and where the language changes.
_LANGUAGE_TAG = re.compile("^" + WORD_START + r"?<([a-z]{2,3}(?:-[A-Za-z0-9]{2,4})?)>$")


def language_tag(piece: str) -> "str | None":
    """The language code of a language-tag piece (``"<de-DE>"`` -> ``"de-DE"``), else None.

    >>> language_tag("<de-DE>"), language_tag("▁de"), language_tag("<unk>")
    ('de-DE', None, None)
    """
    match = _LANGUAGE_TAG.match(piece)
    return match.group(1) if match and piece != "<unk>" else None


def detokenize(pieces: Sequence[str], ids: Iterable[int]) -> str:
    """Joins the pieces of ``ids`` the way ``SentencePieceProcessor.decode_ids`` does.

    Word-start pieces become a space plus the rest of the piece, byte-fallback pieces
    (``<0x41>``) become bytes decoded as UTF-8 together with their neighbours, ``<unk>``
    becomes " ⁇ ", and the leading space of the text is dropped. Ids outside the vocabulary
    (the blank) are skipped.

    >>> detokenize(["<unk>", "\u2581he", "llo", "\u2581w", "orld", "<0x21>"], [1, 2, 3, 4, 5])
    'hello world!'
    """
    return text_from_bytes(piece_bytes(pieces, ids))


def piece_bytes(pieces: Sequence[str], ids: Iterable[int]) -> bytes:
    """The UTF-8 bytes of the pieces of ``ids``, before the text is decoded: streams append to
    them as tokens arrive instead of joining every piece again."""
    out = bytearray()
    for i in ids:
        if not 0 <= i < len(pieces):
            continue
        piece = pieces[i]
        byte = _BYTE_PIECE.match(piece)
        if byte:
            out.append(int(byte.group(1), 16))
        elif i == 0 and piece == "<unk>":
            out += _UNKNOWN_SURFACE.encode()
        else:
            out += piece.replace(WORD_START, " ").encode()
    return bytes(out)


def text_from_bytes(data: bytes) -> str:
    """Decodes joined piece bytes; the text's leading space is dropped, as SentencePiece does."""
    text = data.decode("utf-8", errors="replace")
    return text[1:] if text.startswith(" ") else text


class Tokenizer:
    """Text to token ids as ``SentencePieceProcessor.encode`` does for a BPE model, from the pieces alone.

    The text is normalized as NeMo's tokenizers are trained to (NFKC, runs of whitespace as one
    space, none at the ends, a word-start mark before each word), split into characters, and adjacent
    symbols are merged while their concatenation is a piece: the merge of the highest score first,
    the leftmost of equals. A BPE model's scores fall with the piece id (each merge learned is appended
    with the next lower score), so the lowest id ranks first. A character that is no piece becomes its
    UTF-8 bytes where the vocabulary has byte pieces (``<0x41>``), else ``<unk>`` (one for a run of them).

    >>> Tokenizer(["<unk>", "▁c", "al", "ll", "▁ca", "▁", "a", "c", "l"]).encode("call")
    [4, 8, 8]
    """

    def __init__(self, pieces: Sequence[str]) -> None:
        self._ids: Dict[str, int] = {}
        for i, piece in enumerate(pieces):
            self._ids.setdefault(piece, i)
        self._bytes = {int(m.group(1), 16): i for i, p in enumerate(pieces) if (m := _BYTE_PIECE.match(p))}
        self.unknown = self._ids.get("<unk>", 0)
        #: Whether the vocabulary spells upper case (a lower-case model's has no capital letter).
        self.cased = any(c.isupper() for p in pieces if not _BYTE_PIECE.match(p) and p != "<unk>" for c in p)

    def unknown_characters(self, text: str) -> str:
        """The characters of ``text`` that the vocabulary cannot spell (in order, each once)."""
        if self._bytes:
            return ""
        seen = dict.fromkeys(c for c in self.normalize(text) if c not in self._ids)
        return "".join(seen)

    @staticmethod
    def normalize(text: str) -> str:
        """The text as the pieces spell it: NFKC, single spaces as word-start marks, one before the first word."""
        words = unicodedata.normalize("NFKC", text).split()
        return "".join(WORD_START + w for w in words)

    def encode(self, text: str) -> List[int]:
        """The token ids of ``text`` (``[]`` for text of only whitespace)."""
        symbols = list(self.normalize(text))
        while len(symbols) > 1:
            best, where = None, -1
            for i in range(len(symbols) - 1):
                merged = self._ids.get(symbols[i] + symbols[i + 1])
                if merged is not None and (best is None or merged < best):
                    best, where = merged, i
            if best is None:
                break
            symbols[where:where + 2] = [symbols[where] + symbols[where + 1]]
        ids: List[int] = []
        for symbol in symbols:
            if symbol in self._ids:
                ids.append(self._ids[symbol])
            elif self._bytes:
                ids += [self._bytes.get(b, self.unknown) for b in symbol.encode("utf-8")]
            elif not ids or ids[-1] != self.unknown:  # a run of unknown characters is one <unk>
                ids.append(self.unknown)
        return ids
