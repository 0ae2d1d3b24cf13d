"""model.astream: the asyncio variant gives what the plain stream gives, without blocking the loop."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import AsyncIterator, List

import numpy as np
import pytest
import soundfile
import soxr

from nemotron_cpp import Endpointing, NemotronModel, StreamUpdate

REFERENCE = Path(__file__).parent / "reference" / "tiny"
RULE = Endpointing(silence=0.24)


@pytest.fixture(scope="module")
def model(fixtures_dir: Path) -> NemotronModel:
    return NemotronModel(fixtures_dir / "layout-a-tiny.f32.gguf", n_threads=1)


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    return np.concatenate([soundfile.read(REFERENCE / f"{n}.wav", dtype="float32")[0] for n in ("speech_a", "speech_b")])


def expected(model: NemotronModel, audio: np.ndarray) -> List[int]:
    with model.stream(160, endpointing=RULE) as s:
        s.feed(audio)
        s.finalize()
        return s.tokens.tolist()


def run(coroutine_updates: AsyncIterator[StreamUpdate]) -> List[StreamUpdate]:
    async def gather() -> List[StreamUpdate]:
        return [u async for u in coroutine_updates]

    return asyncio.run(gather())


def tokens_of(updates: List[StreamUpdate]) -> List[int]:
    return [t.id for u in updates for t in u.new_tokens]


def test_sources(model: NemotronModel, audio: np.ndarray, tmp_path: Path) -> None:
    want = expected(model, audio)
    pieces = np.array_split(audio, 25)

    async def mic() -> AsyncIterator[np.ndarray]:
        for p in pieces:
            await asyncio.sleep(0)
            yield p

    by_async = run(model.astream(mic(), latency_ms=160, endpointing=RULE))
    assert tokens_of(by_async) == want and len(by_async) == 26
    assert by_async[-1].is_final and by_async[-1].text == by_async[-2].text + by_async[-1].new_text
    assert tokens_of(run(model.astream(pieces, latency_ms=160, endpointing=RULE))) == want
    pcm = [(np.round(p * 32768).clip(-32768, 32767).astype("<i2")).tobytes() for p in pieces]
    as_int16 = np.round(audio * 32768).clip(-32768, 32767).astype(np.int16)
    assert tokens_of(run(model.astream(pcm, latency_ms=160, endpointing=RULE))) == expected(model, as_int16.astype(
        np.float32) / 32768)
    wav = tmp_path / "a.wav"
    soundfile.write(wav, audio, 16000, subtype="FLOAT")
    from_file = run(model.astream(wav, latency_ms=160, endpointing=RULE))
    assert tokens_of(from_file) == want and len(from_file) > 10  # read in chunk-sized pieces
    at_48k = [soxr.resample(audio, 16000, 48000)]
    with model.stream(160, sample_rate=48000, endpointing=RULE) as s:
        s.feed(at_48k[0])
        s.finalize()
        assert tokens_of(run(model.astream(at_48k, sample_rate=48000, latency_ms=160, endpointing=RULE))) == \
            s.tokens.tolist()


def test_the_event_loop_stays_free(model: NemotronModel, audio: np.ndarray) -> None:
    """Recognition runs in a worker thread: another task keeps ticking while a long piece is recognized."""
    long = np.tile(audio, 6)

    async def main() -> int:
        ticks = 0
        done = False

        async def ticker() -> None:
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        async for _ in model.astream([long], latency_ms=80):
            pass
        done = True
        await task
        return ticks

    assert asyncio.run(main()) > 5


def test_errors_surface_in_the_async_loop(model: NemotronModel) -> None:
    with pytest.raises(ValueError, match="NaN or infinity"):
        run(model.astream([np.array([np.nan], np.float32)]))
    with pytest.raises(FileNotFoundError):
        run(model.astream("missing.wav"))
