"""Token ids to text, as NeMo's SentencePiece tokenizer decodes them."""

from __future__ import annotations

import re
from typing import Iterable, Sequence

__all__ = ["WORD_START", "detokenize", "language_tag", "piece_bytes", "text_from_bytes"]

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
