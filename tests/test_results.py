"""Transcripts, words, segments, confidence, endpoints and lazy recognition."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import pytest
import soundfile

import nemotron_cpp
from nemotron_cpp import Endpointing, NemotronModel, Segment, Transcript
from nemotron_cpp.segmenter import Segmenter

REFERENCE = Path(__file__).parent / "reference" / "tiny"
STEP = 0.08


@pytest.fixture(scope="module")
def model(fixtures_dir: Path) -> NemotronModel:
    return NemotronModel(fixtures_dir / "layout-a-tiny.f32.gguf", n_threads=1)


def clip(name: str) -> np.ndarray:
    return soundfile.read(REFERENCE / f"{name}.wav", dtype="float32")[0]


@pytest.fixture(scope="module")
def conversation() -> np.ndarray:
    """Speech, 2 s of digital silence, speech."""
    return np.concatenate([clip("speech_a"), np.zeros(32000, np.float32), clip("speech_b")])


def check_transcript(model: NemotronModel, t: Transcript, live: bool = False) -> None:
    """``live``: a stream's transcript, where a token emitted before the end may end up to one frame
    after the audio (its frame was computed before all of its 80 ms arrived)."""
    assert t.text == nemotron_cpp.detokenize(model.vocabulary, [k.id for k in t.tokens])
    # Segments partition the words, words partition the tokens, in order.
    assert tuple(w for s in t.segments for w in s.words) == t.words
    assert tuple(k for w in t.words for k in w.tokens) == t.tokens == tuple(k for s in t.segments for k in s.tokens)
    starts = [k.start for k in t.tokens]
    assert starts == sorted(starts)
    for k in t.tokens:
        assert 0 <= k.start <= k.end <= t.duration + (STEP if live else 0)
        assert k.start == round(min(k.frame * STEP, t.duration), 3) and k.text == model.vocabulary[k.id]
        assert 1 / len(model.vocabulary) <= k.confidence <= 1
    for w in t.words:
        assert w.text == nemotron_cpp.detokenize(model.vocabulary, [k.id for k in w.tokens]).strip()
        assert w.tokens[0].text.startswith("\u2581") or w is t.words[0] or w.tokens[0] in [s.tokens[0] for s in t.segments]
        assert all(not k.text.startswith("\u2581") for k in w.tokens[1:])
        assert (w.start, w.end, w.confidence) == (w.tokens[0].start, w.tokens[-1].end, min(k.confidence for k in w.tokens))
    for s in t.segments:
        assert (s.start, s.end) == (s.tokens[0].start, s.tokens[-1].end)
        assert s.text == nemotron_cpp.detokenize(model.vocabulary, [k.id for k in s.tokens]).strip()


def test_transcript_structure(model: NemotronModel, conversation: np.ndarray) -> None:
    t = model.transcribe(conversation, latency_ms=160)
    assert t.duration == round(len(conversation) / 16000, 3)
    assert len(t.segments) >= 2 and len(t.words) > len(t.segments)
    check_transcript(model, t)
    # Results are plain frozen dataclasses.
    for value in (t, t.segments[0], t.words[0], t.tokens[0]):
        assert dataclasses.is_dataclass(value)
        with pytest.raises(dataclasses.FrozenInstanceError):
            value.text = "x"  # type: ignore[misc]
    # Confidence is the stream's per-token probability (tested against NeMo's joint in test_parity).
    with model.stream(160, chunking="offline") as s:
        s.feed(conversation)
        s.finalize()
        np.testing.assert_array_equal([k.confidence for k in t.tokens], s.token_confidences)


def test_endpointing_off_gives_one_segment(model: NemotronModel, conversation: np.ndarray) -> None:
    on = model.transcribe(conversation, latency_ms=160)
    off = model.transcribe(conversation, latency_ms=160, endpointing=False)
    assert len(off.segments) == 1 and off.tokens == on.tokens and off.text == on.text
    check_transcript(model, off)


def expected_utterances(frames: List[int], rule: Endpointing, n_frames: Optional[int] = None) -> List[Tuple[int, int]]:
    """Token index ranges of the utterances the rule makes, from the token frames alone."""
    out, first = [], 0
    for i in range(1, len(frames) + 1):
        nxt = frames[i] if i < len(frames) else n_frames
        if nxt is None:
            break
        silent = (nxt - frames[i - 1] - 1) * STEP
        span = (frames[i - 1] + 1 - frames[first]) * STEP
        if silent >= rule.silence - 1e-9 and span >= rule.min_utterance - 1e-9:
            out.append((first, i))
            first = i
    if first < len(frames):
        out.append((first, len(frames)))
    return out


def test_segmenter_rule_on_known_frames() -> None:
    vocabulary = ["\u2581a", "b", "\u2581c"]
    rule = Endpointing(silence=0.4, min_utterance=0.2)
    seg = Segmenter(vocabulary, STEP, rule)
    # Frames 0,1 (span 0.16 s: too short to end), a 6-frame gap, 8,9,10, a 5-frame gap (0.4 s: ends), 16.
    ids = np.array([0, 1, 2, 0, 1, 2], np.int32)
    frames = np.array([0, 1, 8, 9, 10, 16], np.int32)
    probs = np.linspace(0.5, 1.0, 6).astype(np.float32)
    tokens, words, segments = seg.add(ids, frames, probs, n_frames=17)
    assert len(tokens) == 6
    assert [s.text for s in segments] == ["ab c ab"]
    assert [w.text for w in words] == ["ab", "c", "ab"]
    assert (segments[0].start, segments[0].end) == (0.0, pytest.approx(0.88))
    assert seg.partial == "c" and seg.text == "ab c ab c"
    # Trailing silence ends the last utterance once it is long enough: 21 frames is 0.32 s, 22 is 0.4 s.
    assert seg.add(ids[:0], frames[:0], probs[:0], n_frames=21)[2] == []
    _, last_words, ended = seg.add(ids[:0], frames[:0], probs[:0], n_frames=22)
    assert [s.text for s in ended] == [] and last_words == []  # 0.08 s of speech: shorter than min_utterance
    words, final = seg.close()
    assert final is not None and final.text == "c" and [w.text for w in words] == ["c"]
    assert final.words[0].confidence == pytest.approx(1.0)
    assert [s.text for s in seg.segments] == ["ab c ab", "c"]


def collect(model: NemotronModel, audio: np.ndarray, pieces: int, rule: Endpointing) -> Tuple[List[Segment], list]:
    segments: List[Segment] = []
    updates = []
    with model.stream(160, endpointing=rule) as s:
        for part in np.array_split(audio, pieces):
            updates.append(s.feed(part))
        updates.append(s.finalize())
        frames = s.token_frames.tolist()
        for u in updates:
            assert u.is_final == bool(u.segments)
            segments.extend(u.segments)
        assert s.segments == tuple(segments)
    return segments, frames


def test_stream_endpoints_on_speech_silence_speech(model: NemotronModel, conversation: np.ndarray) -> None:
    """The random-weight model emits tokens in silence too (a trained one would not; see the demo
    model issue), so this checks that the events come exactly where the rule puts them given the
    emitted frames, whatever the piece sizes, and that they cover the text."""
    rule = Endpointing(silence=0.24, min_utterance=0.3)
    segments, frames = collect(model, conversation, 1, rule)
    expected = expected_utterances(frames, rule)
    assert len(expected) >= 3
    assert [(s.tokens[0].frame, s.tokens[-1].frame) for s in segments] == [(frames[a], frames[b - 1]) for a, b in expected]
    for pieces in (7, 53):
        assert collect(model, conversation, pieces, rule)[0] == segments
    with model.stream(160, endpointing=rule) as s:
        text = ""
        for part in np.array_split(conversation, 40):
            u = s.feed(part)
            assert u.text == text + u.new_text
            text = u.text
            if u.is_final:  # the partial starts afresh after an endpoint
                assert not u.segments[-1].text.endswith(u.partial) or not u.partial
        last = s.finalize()
        assert last.is_final and last.partial == "" and last.text == s.text
        check_transcript(model, s.transcript(), live=True)


def test_stream_update_fields(model: NemotronModel) -> None:
    audio = clip("speech_b")
    with model.stream(160, endpointing=False) as s:
        words, tokens = [], []
        for part in np.array_split(audio, 12):
            u = s.feed(part)
            assert not u.is_final and u.segments == ()
            assert u.partial == u.text  # one utterance until the end
            words += u.new_words
            tokens += u.new_tokens
        last = s.finalize()
        words += last.new_words
        tokens += last.new_tokens
        assert last.is_final and len(last.segments) == 1
        assert tuple(words) == last.segments[0].words and tuple(tokens) == last.segments[0].tokens
        assert [k.id for k in tokens] == s.tokens.tolist()
        with pytest.raises(ValueError, match="already finalized"):
            s.finalize()


def test_lazy_segments_and_progress(model: NemotronModel, tmp_path: Path, conversation: np.ndarray) -> None:
    long = tmp_path / "long.flac"
    soundfile.write(long, np.tile(conversation, 4), 16000)  # 49 s
    whole = model.transcribe(long, latency_ms=1120)
    check_transcript(model, whole)
    calls: List[Tuple[float, Optional[float]]] = []
    lazy = model.segments(long, latency_ms=1120, progress=lambda done, total: calls.append((done, total)))
    first = next(lazy)
    # The first utterance arrives before the whole file was read.
    assert calls and calls[-1][0] < whole.duration
    assert (first, *lazy) == whole.segments
    assert calls[-1][0] == calls[-1][1] and round(calls[-1][0], 3) == whole.duration
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)


def test_times_are_whole_milliseconds(model: NemotronModel, conversation: np.ndarray) -> None:
    """Frame counts times 0.08 s are not exact in binary (21 x 0.08 = 1.6800000000000002): the results
    hold the millisecond value, in the dataclasses and so in JSON; confidences keep every digit."""
    from nemotron_cpp.formats import to_json

    t = model.transcribe(conversation[:-7], latency_ms=160)  # a duration of no whole millisecond
    times = [t.duration] + [x for items in (t.tokens, t.words, t.segments) for i in items for x in (i.start, i.end)]
    assert all(x == round(x, 3) for x in times)
    assert any(k.frame * STEP + STEP != k.end for k in t.tokens)  # so some were noisy before rounding
    assert t.duration == round((len(conversation) - 7) / 16000, 3)
    token = Segmenter(["\u2581a"], STEP, None).add(np.array([0]), np.array([20]), np.array([0.5]), 22)[0][0]
    assert (token.start, token.end) == (1.6, 1.68)  # 20 x 0.08 + 0.08 is 1.6800000000000002
    text = to_json(t)
    assert re.search(r'"(start|end|duration)": -?\d+\.\d{4,}', text) is None
    assert any(len(repr(k.confidence)) > 8 for k in t.tokens)


def test_bad_endpointing(model: NemotronModel) -> None:
    with pytest.raises(ValueError, match="silence must be > 0"):
        Endpointing(silence=0)
    with pytest.raises(ValueError, match="min_utterance must be a number of seconds"):
        Endpointing(min_utterance=float("nan"))
    with pytest.raises(TypeError, match="endpointing must be True, False or an Endpointing"):
        model.stream(endpointing="yes")  # type: ignore[arg-type]


def test_reset_between_utterances_loses_no_audio(model: NemotronModel, conversation: np.ndarray) -> None:
    """reset() after each endpoint, as sherpa-onnx users do: the utterances put together are the
    stream's without resets, token for token and second for second."""
    rule = Endpointing(silence=0.24)
    whole, _ = collect(model, conversation, 30, rule)
    pieces: List[Segment] = []
    with model.stream(160, endpointing=rule) as s:
        for part in np.array_split(conversation, 30):
            u = s.feed(part)
            pieces.extend(u.segments)
            if u.is_final:
                s.reset()
                # What is left: the utterance already under way (a piece may hold its start).
                assert s.segments == () and s.text == u.partial == s.transcript().text and s.n_frames > 0
                assert len(s.tokens) == len(s.transcript().tokens)
        last = s.finalize()
        pieces.extend(last.segments)
        assert last.text == (last.segments[-1].text if last.segments else "")
        s.reset()  # after finalize: a fresh stream
        assert s.n_frames == 0 and s.seconds == 0
    assert len(whole) >= 3 and pieces == whole
