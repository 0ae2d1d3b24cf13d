"""Transcripts as text, JSON, SubRip (SRT) and WebVTT; counts in words for the command line."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Dict

from .results import Transcript

__all__ = ["FORMATS", "format_transcript", "plural"]


def plural(n: int, noun: str) -> str:
    """``"1 thread"``, ``"2 threads"``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _clock(seconds: float, separator: str) -> str:
    millis = int(round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def to_text(transcript: Transcript) -> str:
    """The text, one line per segment."""
    return "".join(f"{s.text}\n" for s in transcript.segments)


def to_json(transcript: Transcript) -> str:
    """Every field of the transcript; times in seconds."""
    data: Dict[str, Any] = dataclasses.asdict(transcript)
    return json.dumps(data, ensure_ascii=False, indent=2) + "\n"


def to_srt(transcript: Transcript) -> str:
    """One numbered cue per segment."""
    cues = [f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text}\n"
            for i, s in enumerate(transcript.segments, 1)]
    return "\n".join(cues)


def to_vtt(transcript: Transcript) -> str:
    """A WebVTT file, one cue per segment."""
    cues = [f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text}\n" for s in transcript.segments]
    return "WEBVTT\n\n" + "\n".join(cues)


#: Format name to writer.
FORMATS: Dict[str, Callable[[Transcript], str]] = {"text": to_text, "json": to_json, "srt": to_srt, "vtt": to_vtt}


def format_transcript(transcript: Transcript, fmt: str) -> str:
    """The transcript in ``fmt``: ``"text"``, ``"json"``, ``"srt"`` or ``"vtt"``."""
    try:
        return FORMATS[fmt](transcript)
    except KeyError:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}") from None
