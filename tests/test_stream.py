"""Streams on the tiny model: chunk geometry, independence from how audio is split, and
agreement between the chunkings where NeMo's semantics say they agree.

(Agreement with NeMo itself is tested against the reference fixtures.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np
import pytest

import nemotron_cpp
from nemotron_cpp import NemotronModel


@pytest.fixture(scope="module")
def model(fixtures_dir: Path) -> NemotronModel:
    return NemotronModel(fixtures_dir / "layout-a-tiny.f32.gguf", n_threads=1)


def audio(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    voiced = 0.3 * np.sin(2 * np.pi * 180 * t * (1 + 0.3 * np.sin(2 * np.pi * 2 * t)))
    return (voiced * (np.sin(2 * np.pi * 1.5 * t) > -0.3) + 0.03 * rng.standard_normal(n)).astype(np.float32)


def run(model: NemotronModel, x: np.ndarray, pieces: int = 1, seed: int = 0, **kwargs: object) -> Dict[str, np.ndarray]:
    with model.stream(keep_encoder_output=True, keep_trace=True, **kwargs) as s:  # type: ignore[arg-type]
        bounds = np.sort(np.random.default_rng(seed).choice(np.arange(1, len(x)), pieces - 1, replace=False))
        for part in np.split(x, bounds):
            s.feed(part)
        s.finalize()
        return {"tokens": s.tokens, "frames": s.token_frames, "enc": s.encoder_output, "ends": s.chunk_ends,
                "trace": s.trace, "text": np.array(s.text)}


def subsampled(n: int) -> int:
    for _ in range(3):
        n = n // 2 + 1
    return n


@pytest.mark.parametrize("right", [0, 1, 6, 13])
@pytest.mark.parametrize("chunking", ["stream", "stream_padded", "offline"])
def test_split_does_not_matter(model: NemotronModel, right: int, chunking: str) -> None:
    x = audio(40_000, seed=right)
    whole = run(model, x, att_right_context=right, chunking=chunking)
    assert len(whole["tokens"]) > 0
    for pieces, seed in ((7, 1), (400, 2)):
        split = run(model, x, pieces=pieces, seed=seed, att_right_context=right, chunking=chunking)
        for key in whole:
            np.testing.assert_array_equal(split[key], whole[key], err_msg=key)


@pytest.mark.parametrize("right", [0, 1, 6, 13])
def test_chunk_geometry(model: NemotronModel, right: int) -> None:
    n = 48_000  # 301 mel frames; NeMo's full-utterance path uses 300 of them
    chunk = 8 * (right + 1)
    stream = run(model, audio(n), att_right_context=right, chunking="stream")
    # The first chunk is 1 + 8R frames, every later one 8(R + 1); the tail is encoded when it
    # has at least 8 frames.
    first, tail = 1 + 8 * right, (301 - 1 - 8 * right) % chunk
    expected = [right + 1] * (1 + (301 - first) // chunk) + ([-(-tail // 8)] if tail >= 8 else [])
    assert np.diff(stream["ends"], prepend=0).tolist() == expected
    offline = run(model, audio(n), att_right_context=right, chunking="offline")
    assert offline["ends"][-1] == subsampled(300)
    padded = run(model, audio(n), att_right_context=right, chunking="stream_padded")
    assert set(np.diff(padded["ends"], prepend=0)[:-1].tolist()) == {right + 1}


@pytest.mark.parametrize("right", [1, 6, 13])
def test_streaming_equals_offline_but_for_the_end(model: NemotronModel, right: int) -> None:
    """NeMo: cache-aware streaming reproduces the full-utterance encoder (same right
    context) except at the last frame, where streaming encodes the zero final mel frame."""
    x = audio(48_123, seed=5)
    stream = run(model, x, att_right_context=right, chunking="stream")
    offline = run(model, x, att_right_context=right, chunking="offline")
    n = min(len(stream["enc"]), len(offline["enc"])) - 1
    np.testing.assert_allclose(stream["enc"][:n], offline["enc"][:n], rtol=0, atol=1e-5)


def test_trace_explains_the_tokens(model: NemotronModel) -> None:
    result = run(model, audio(30_000), att_right_context=6)
    trace = result["trace"]
    blank = model.hparams.blank_id
    emitted = trace[trace["token"] != blank]
    np.testing.assert_array_equal(emitted["token"], result["tokens"])
    np.testing.assert_array_equal(emitted["frame"], result["frames"])
    assert np.all(trace["margin"] >= 0)
    # At most max_symbols labels per frame, and a frame ends on a blank unless it hit the cap.
    per_frame = np.bincount(emitted["frame"])
    assert per_frame.max() <= model.hparams.max_symbols_per_step


def test_updates_and_reset(model: NemotronModel) -> None:
    x = audio(32_000, seed=3)
    with model.stream(att_right_context=1) as s:
        texts, tokens = [], []
        for part in np.array_split(x, 10):
            update = s.feed(part)
            tokens.extend(t.id for t in update.new_tokens)
            texts.append(update.text)
        final = s.finalize()
        tokens.extend(t.id for t in final.new_tokens)
        assert tokens == s.tokens.tolist()
        assert final.text == s.text == nemotron_cpp.detokenize(model.vocabulary, tokens)
        with pytest.raises(ValueError, match="finalized; call reset"):
            s.feed(x[:100])
        first = s.tokens.copy()
        s.reset()
        assert s.n_frames == 0 and len(s.tokens) == 0
        s.feed(x)
        s.finalize()
        np.testing.assert_array_equal(s.tokens, first)


def test_bad_arguments(model: NemotronModel) -> None:
    with pytest.raises(ValueError, match="chunking must be one of"):
        model.stream(chunking="fast")
    with pytest.raises(ValueError, match="exceeds the left context"):
        model.stream(att_right_context=71)
    with model.stream(att_right_context=70) as s:  # the longest chunks there are: 71 frames
        s.feed(audio(12 * 16000, seed=5))
        s.finalize()
        assert s.n_frames > 2 * 71  # two whole chunks and the end
    with model.stream() as s:
        with pytest.raises(ValueError, match="NaN"):
            s.feed(np.array([np.inf], np.float32))
        with pytest.raises(TypeError, match="float32, float64, int16 or int32"):
            s.feed(np.zeros(10, np.uint8))


def test_latency_and_transcribe(model: NemotronModel) -> None:
    assert model.latencies_ms == (1120, 560, 160, 80)
    with model.stream(160) as s:
        assert s.att_right_context == 1
    with pytest.raises(ValueError, match="multiple of 80 ms"):
        model.stream(100)
    with pytest.raises(ValueError, match="not both"):
        model.stream(160, att_right_context=1)
    x = audio(24_000, seed=9)
    result = model.transcribe(x, latency_ms=560)
    offline = run(model, x, att_right_context=6, chunking="offline")
    assert [t.id for t in result.tokens] == offline["tokens"].tolist()
    assert [t.frame for t in result.tokens] == offline["frames"].tolist()
    assert result.text == str(offline["text"])
    assert result.duration == 1.5
    assert all(t.start == round(min(t.frame * 0.08, 1.5), 3) and t.text == model.vocabulary[t.id] for t in result.tokens)
    # int16 input is the same audio scaled by 2^15.
    as_int16 = np.round(x * 32768).clip(-32768, 32767).astype(np.int16)
    assert model.transcribe(as_int16, latency_ms=560).tokens == model.transcribe(as_int16.astype(np.float32) / 32768,
                                                                                 latency_ms=560).tokens
    with pytest.raises(ValueError, match="empty"):
        model.transcribe(np.zeros(0, np.float32))


def test_threads_share_one_model(model: NemotronModel) -> None:
    """Streams on several threads at once give what they give one after another."""
    from concurrent.futures import ThreadPoolExecutor

    clips = [audio(20_000 + 3_000 * i, seed=i) for i in range(6)]
    serial = [model.transcribe(c, latency_ms=160).tokens for c in clips]
    with ThreadPoolExecutor(max_workers=3) as pool:
        parallel = list(pool.map(lambda c: model.transcribe(c, latency_ms=160).tokens, clips))
    assert parallel == serial


def test_memory_stays_bounded(fixtures_dir: Path) -> None:
    """Ten times the audio takes no more memory: a stream keeps only its caches and the mel
    frames the next chunk needs (the tokens themselves are a few bytes each)."""
    import subprocess
    import sys

    script = (
        "import sys, numpy as np\n"
        "from nemotron_cpp import NemotronModel\n"
        "m = NemotronModel(sys.argv[1], n_threads=1)\n"
        "piece = (0.1 * np.random.default_rng(0).standard_normal(16000 * 10)).astype(np.float32)\n"
        "with m.stream(80) as s:\n"
        "    for _ in range(int(sys.argv[2])):\n"
        "        s.feed(piece)\n"
        "    s.finalize()\n"
        "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')))\n"
    )
    path = str(fixtures_dir / "layout-a-tiny.q8_0.gguf")
    peak = [int(subprocess.run([sys.executable, "-c", script, path, str(n)], capture_output=True, text=True,
                               check=True).stdout) for n in (3, 30)]  # 30 s and 5 min of audio
    assert peak[1] - peak[0] < 8 * 1024, f"peak RSS grew from {peak[0]} to {peak[1]} KiB"


@pytest.mark.parametrize("latency,right,samples", [(80, 0, 1280), (160, 1, 2560), (1120, 13, 17920)])
def test_chunk_geometry_in_every_unit(model: NemotronModel, latency: int, right: int, samples: int) -> None:
    with model.stream(latency) as s, model.stream(att_right_context=right) as same:
        assert (s.latency_ms, s.att_right_context, s.chunk_samples) == (latency, right, samples)
        assert (same.latency_ms, same.chunk_samples) == (latency, samples)
        # A piece of chunk_samples computes one chunk (the first needs its lookahead first).
        s.feed(audio(samples + 8 * 160 * right + 160, seed=3))
        frames = s.n_frames
        s.feed(audio(samples, seed=4))
        assert s.n_frames - frames == right + 1


def test_the_engine_hands_tokens_out_once(model: NemotronModel) -> None:
    """The stream takes its tokens from the engine as they come: the engine keeps none of them, and
    the stream's results are those of the whole audio fed at once."""
    from nemotron_cpp import _lib

    x = audio(64_000, seed=8)
    whole = run(model, x, att_right_context=1)
    with model.stream(att_right_context=1, keep_trace=True) as s:
        for piece in np.array_split(x, 37):
            s.feed(piece)
            assert _lib._lib.nemotron_stream_n_tokens(s._handle.live()) == 0
        s.finalize()
        assert _lib._lib.nemotron_stream_n_tokens(s._handle.live()) == 0
        np.testing.assert_array_equal(s.tokens, whole["tokens"])
        np.testing.assert_array_equal(s.token_frames, whole["frames"])
        assert s.text == str(whole["text"])
