"""The speed paths must not change results: batched decoding (model.step runs many streams in one
graph) and matrices repacked into the CPU backend's interleaved layouts."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, List, Tuple

import numpy as np
import pytest
import soundfile

from nemotron_cpp import Endpointing, NemotronModel, system_info
from nemotron_cpp.gguf.quantize import quantize_gguf

REFERENCE = Path(__file__).parent / "reference" / "tiny"
CLIPS = ("speech_a", "speech_b", "speech_noisy", "noise", "silence", "speech_a")
# Mixed on purpose: equal latencies share a graph (past their first chunks), others run beside them.
LATENCIES = (160, 160, 80, 1120, 160, 560)
CHUNKINGS = ("stream", "stream", "stream", "stream", "stream_padded", "offline")
PIECE = 2560  # 160 ms


def clips() -> List[np.ndarray]:
    return [soundfile.read(REFERENCE / f"{name}.wav", dtype="float32")[0] for name in CLIPS]


def alone(model: NemotronModel, audio: np.ndarray, latency: int, chunking: str) -> Tuple[List[int], np.ndarray, list]:
    with model.stream(latency, chunking=chunking, keep_encoder_output=True, keep_trace=True,
                      endpointing=Endpointing(silence=0.24)) as s:
        for i in range(0, len(audio), PIECE):
            s.feed(audio[i:i + PIECE])
        segments = list(s.finalize().segments)
        return s.tokens.tolist(), s.encoder_output, [t.text for t in s.transcript().segments] + [len(segments)]


@pytest.fixture(scope="module")
def tiny_q4_0(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return quantize_gguf(fixtures_dir / "layout-a-tiny.f32.gguf", tmp_path_factory.mktemp("q4") / "tiny.q4_0.gguf",
                         weight_type="q4_0")


@pytest.mark.parametrize("weights", ["layout-a-tiny.f32.gguf", "layout-a-tiny.q8_0.gguf", "layout-b-tiny.q8_0.gguf",
                                     "q4_0"])
def test_batched_results_are_each_streams_own(fixtures_dir: Path, tiny_q4_0: Path, weights: str) -> None:
    check_batched_results(NemotronModel(tiny_q4_0 if weights == "q4_0" else fixtures_dir / weights, n_threads=1))


def check_batched_results(model: NemotronModel) -> None:
    """Six streams of mixed latencies stepped together (model.step) give each stream's results alone, bit for bit."""
    audio = clips()
    expected = [alone(model, a, lat, ch) for a, lat, ch in zip(audio, LATENCIES, CHUNKINGS)]
    streams = [model.stream(lat, chunking=ch, keep_encoder_output=True, keep_trace=True,
                            endpointing=Endpointing(silence=0.24)) for lat, ch in zip(LATENCIES, CHUNKINGS)]
    n_final = [0] * len(streams)
    for i in range(0, max(map(len, audio)), PIECE):
        for s, a in zip(streams, audio):
            s.push(a[i:i + PIECE])  # streams that have ended get empty pieces
        updates = model.step(streams)
        assert len(updates) == len(streams)
    for k, u in enumerate(model.step(streams, final=True)):
        assert u.is_final == bool(u.segments)
        n_final[k] = len(u.segments)
    for k, (s, (tokens, enc, segments)) in enumerate(zip(streams, expected)):
        assert s.tokens.tolist() == tokens, CLIPS[k]
        # Bit for bit: every column of the batch is computed as it would be alone.
        np.testing.assert_array_equal(s.encoder_output, enc, err_msg=CLIPS[k])
        assert [t.text for t in s.transcript().segments] + [n_final[k]] == segments
        s.close()


def test_kept_graph_follows_the_streams(fixtures_dir: Path) -> None:
    """An encoder keeps its last chunk graph while the geometry and batch size stay the same and
    points it at the caches of whichever streams come next: pairs drawn in turn from four streams,
    each pair stepped together, must give every stream exactly its results alone."""
    model = NemotronModel(fixtures_dir / "layout-a-tiny.q8_0.gguf", n_threads=1)
    audio = clips()[:4]
    expected = [alone(model, a, 560, "stream")[:2] for a in audio]
    streams = [model.stream(560, keep_encoder_output=True, keep_trace=True, endpointing=Endpointing(silence=0.24))
               for _ in audio]
    offsets = [0] * len(streams)
    pairs = [(0, 1), (2, 3), (1, 2), (3, 0), (0, 2), (1, 3)]
    for turn in range(4 * max(map(len, audio)) // PIECE):
        pair = pairs[turn % len(pairs)]
        for k in pair:
            streams[k].push(audio[k][offsets[k]:offsets[k] + PIECE])
            offsets[k] += PIECE
        model.step([streams[k] for k in pair])
    model.step(streams, final=True)
    each_as_alone(streams, expected)


def test_streams_made_and_closed_midway(fixtures_dir: Path) -> None:
    """Every stream's caches are a slot of one pool per model, which grows (moving every slot) when a
    stream needs one and none is free, and hands a closed stream's slot to the next. Streams made and
    closed while others are half way through their audio keep those others' results, and a stream in
    a reused slot starts from clean caches: each gives exactly its results alone."""
    model = NemotronModel(fixtures_dir / "layout-a-tiny.f32.gguf", n_threads=1)
    audio = clips()[:3]
    expected = [alone(model, a, 160, "stream")[:2] for a in audio]
    half = (len(audio[0]) // 2) // PIECE * PIECE

    def run(streams: list, k: int, start: int, stop: int) -> None:
        for i in range(start, stop, PIECE):
            streams[k].push(audio[k][i:i + PIECE])
        model.step([streams[k]])

    def new_stream() -> Any:
        return model.stream(160, keep_encoder_output=True, endpointing=Endpointing(silence=0.24))

    streams = [new_stream()]
    run(streams, 0, 0, half)
    # Two more streams: the pool grows from one slot to two, then to four, under the first's feet.
    streams += [new_stream() for _ in range(2)]
    run(streams, 1, 0, half)
    streams[1].close()  # its slot, dirty, goes to the next stream
    streams[1] = new_stream()
    for k in range(3):
        start = half if k == 0 else 0
        for i in range(start, len(audio[k]), PIECE):
            streams[k].push(audio[k][i:i + PIECE])
    model.step(streams, final=True)
    each_as_alone(streams, expected)


def test_streams_made_while_another_computes(fixtures_dir: Path) -> None:
    """The pool's tensors are replaced when it grows: a stream computing on another thread meanwhile
    (holding the pool shared) keeps its results, and so do the slots cleared for new streams."""
    model = NemotronModel(fixtures_dir / "layout-a-tiny.f32.gguf", n_threads=1)
    audio = clips()[0]
    tokens, enc, _ = alone(model, audio, 160, "stream")
    result: dict = {}

    def feed() -> None:
        with model.stream(160, keep_encoder_output=True, endpointing=Endpointing(silence=0.24)) as s:
            for i in range(0, len(audio), PIECE // 8):
                s.feed(audio[i:i + PIECE // 8])
            s.finalize()
            result["tokens"], result["enc"] = s.tokens.tolist(), s.encoder_output

    worker = threading.Thread(target=feed)
    worker.start()
    made: list = []
    while worker.is_alive():
        made += [model.stream(160) for _ in range(4)]  # the pool doubles up to 64 slots, then slots are reused
        if len(made) >= 60:
            for extra in made:
                extra.close()
            made = []
    worker.join()
    assert result["tokens"] == tokens
    np.testing.assert_array_equal(result["enc"], enc)


def test_streams_ended_one_at_a_time(fixtures_dir: Path) -> None:
    """A server ends each connection's audio when that connection ends (step's final as one bool per
    stream): a stream ended while the others carry on gets its results alone, and so do the others."""
    model = NemotronModel(fixtures_dir / "layout-a-tiny.f32.gguf", n_threads=1)
    audio = clips()[:3]
    streams = [model.stream(160, keep_encoder_output=True, endpointing=Endpointing(silence=0.24)) for _ in audio]
    # Each stream is cut off at a different length: ends at different steps.
    lengths = [len(audio[0]) // 3, len(audio[1]), len(audio[2]) // 2]
    expected = [alone(model, a[:n], 160, "stream")[:2] for a, n in zip(audio, lengths)]
    live = list(range(3))
    for i in range(0, max(lengths), PIECE):
        for k in live:
            streams[k].push(audio[k][i:min(i + PIECE, lengths[k])])
        ends = [i + PIECE >= lengths[k] for k in live]
        model.step([streams[k] for k in live], final=ends)
        live = [k for k, end in zip(live, ends) if not end]
    assert live == []
    each_as_alone(streams, expected)
    with pytest.raises(ValueError, match="one bool per stream"):
        model.step([model.stream(160)], final=[True, False])


def each_as_alone(streams: list, expected: list) -> None:
    """Each stream's tokens and encoder output are exactly `expected`'s (its results alone); closes them."""
    for k, (s, (tokens, enc)) in enumerate(zip(streams, expected)):
        assert s.tokens.tolist() == tokens, CLIPS[k]
        np.testing.assert_array_equal(s.encoder_output, enc, err_msg=CLIPS[k])
        s.close()


def test_step_errors(fixtures_dir: Path) -> None:
    model = NemotronModel(fixtures_dir / "layout-a-tiny.f32.gguf", n_threads=1)
    other = NemotronModel(fixtures_dir / "layout-a-tiny.q8_0.gguf", n_threads=1)
    a, b = model.stream(160), other.stream(160)
    with pytest.raises(ValueError, match="streams made by this model"):
        model.step([a, b])
    with pytest.raises(ValueError, match="the same stream twice"):
        model.step([a, a])
    assert model.step([]) == []
    model.step([a], final=True)
    with pytest.raises(ValueError, match="finalized; call reset"):
        a.push(np.zeros(160, np.float32))
    with pytest.raises(ValueError, match="already finalized"):
        model.step([a], final=True)


def test_repacked_matrices(fixtures_dir: Path, tiny_q4_0: Path) -> None:
    """q4_0 matrices go into the CPU backend's interleaved layout when mapped (x86 with AVX2 has one);
    the results stay within quantization noise of the plain layout's."""
    if system_info().cpu_features.get("AVX2") != "1" or system_info().cpu_features.get("REPACK") != "1":
        pytest.skip("this CPU or ggml build has no repacked q4_0 layout")
    repacked = NemotronModel(tiny_q4_0, n_threads=1)
    plain = NemotronModel(tiny_q4_0, n_threads=1, use_mmap=False)
    assert plain.repacked_bytes == 0 and NemotronModel(fixtures_dir / "layout-a-tiny.f32.gguf").repacked_bytes == 0
    # Every q4_0 matrix of the encoder: 11 per layer (the subsampling's output projection too, where
    # the converter made it q4_0).
    matrices = [t for t in repacked.tensors if t.type == "q4_0" and t.name.startswith("encoder.")]
    assert len(matrices) >= 11 * repacked.hparams.n_layers
    assert repacked.repacked_bytes == sum(t.n_bytes for t in matrices)
    audio = clips()[0]
    outputs = []
    for model in (repacked, plain):
        with model.stream(160, keep_encoder_output=True) as s:
            s.feed(audio)
            s.finalize()
            outputs.append(s.encoder_output)
    # Another summation order over q8_0-quantized activations; measured 5.8e-4.
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=0, atol=5e-3)
