"""The committed NeMo reference fixtures (tests/reference/tiny) are complete and self-consistent.

They were recorded by scripts/make_reference.py from tests/fixtures/tiny-random.nemo; these checks need
neither NeMo nor torch. The frame-count formulas are NeMo's (CacheAwareStreamingAudioBuffer and the
causal dw_striding subsampling), restated in the engine's stream.h.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import wave
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import numpy as np
import pytest

REFERENCE = Path(__file__).resolve().parent / "reference" / "tiny"
HOP = 160  # samples per mel frame
SUBSAMPLING = 8
PRE_ENCODE_CACHE = 9  # mel frames carried into every chunk but the default mode's first
DROP_EXTRA_PRE_ENCODED = 2
LOG_ZERO = math.log(2.0**-24)  # log-mel of digital silence


@pytest.fixture(scope="module")
def manifest() -> Dict:
    return json.loads((REFERENCE / "manifest.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def arrays(manifest: Dict) -> Dict[str, Dict[str, np.ndarray]]:
    out = {}
    for clip in manifest["clips"]:
        with np.load(REFERENCE / clip["npz"]) as npz:
            out[clip["name"]] = {k: npz[k] for k in npz.files}
    return out


def cases(manifest: Dict) -> Iterator[Tuple[Dict, str, Dict]]:
    for clip in manifest["clips"]:
        for key, info in clip["cases"].items():
            yield clip, key, info


def encoder_frames(mel_frames: int) -> int:
    """Three causal stride-2 convolutions (left pad 2, right pad 1, kernel 3): n -> n // 2 + 1 each."""
    n = mel_frames
    for _ in range(3):
        n = n // 2 + 1
    return n


def stream_schedule(total: int, right: int, pad_and_drop: bool) -> List[Tuple[int, int, int, int]]:
    """(mel start, chunk length with cache, frames dropped, encoder frames) of each chunk of NeMo's
    CacheAwareStreamingAudioBuffer over `total` mel frames."""
    shift = SUBSAMPLING * (right + 1)
    chunks = []
    start = 0
    while start < total:
        first_default = start == 0 and not pad_and_drop
        size = 1 + SUBSAMPLING * right if first_default else shift
        new = min(size, total - start)
        if new < (1 if first_default else SUBSAMPLING):
            break  # too few frames for one output frame: the tail is dropped
        cache = 0 if first_default else PRE_ENCODE_CACHE
        drop = 0 if first_default else DROP_EXTRA_PRE_ENCODED
        frames = encoder_frames(new + cache) - drop
        if start + size < total:  # not the last chunk: cut to valid_out_len
            frames = min(frames, right + 1)
        chunks.append((start, new + cache, drop, frames))
        start += size
    return chunks


def test_manifest_lists_existing_files_with_matching_audio(manifest: Dict) -> None:
    assert manifest["format"] == 1
    assert manifest["versions"]["nemo"] and manifest["versions"]["torch"]
    assert {c["kind"] for c in manifest["clips"]} == {"speech", "noise", "silence"}
    for clip in manifest["clips"]:
        wav, npz = REFERENCE / clip["wav"], REFERENCE / clip["npz"]
        assert wav.is_file() and npz.is_file()
        assert hashlib.sha256(wav.read_bytes()).hexdigest() == clip["sha256"], clip["name"]
        with wave.open(str(wav), "rb") as w:
            assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
            assert w.getnframes() == clip["samples"]
    listed = {c["wav"] for c in manifest["clips"]} | {c["npz"] for c in manifest["clips"]} | {"manifest.json"}
    # scripts/make_decoding_reference.py's record of NeMo decoding these cases again (phrase boosting, beam search)
    listed.add("decoding.json.gz")
    assert {p.name for p in REFERENCE.iterdir()} == listed
    decoding = json.loads(gzip.decompress((REFERENCE / "decoding.json.gz").read_bytes()))
    assert decoding["model"]["sha256"] == manifest["model"]["sha256"]


def test_committed_size_is_within_budget() -> None:
    assert sum(p.stat().st_size for p in REFERENCE.iterdir()) < 3.2e6


def test_model_description(manifest: Dict) -> None:
    model = manifest["model"]
    assert model["source"].endswith("tiny-random.nemo") and len(model["sha256"]) == 64
    assert model["blank_id"] == model["vocab_size"] == len(manifest["vocabulary"]) == 128
    assert model["max_symbols"] == 10
    assert [tuple(c) for c in manifest["config"]["encoder"]["att_context_size"]] == [(70, 13), (70, 6), (70, 1), (70, 0)]
    assert {tuple(c) for c in manifest["att_contexts"]} == {(70, 0), (70, 1), (70, 6), (70, 13)}
    assert {k: v["pad_and_drop_preencoded"] for k, v in manifest["modes"].items()} == {"stream": False, "stream_pad": True}


def test_streaming_geometry_follows_the_formulas(manifest: Dict) -> None:
    for left, right in manifest["att_contexts"]:
        geometry = manifest["streaming"][f"{left}_{right}"]
        assert geometry["chunk_size"] == [1 + SUBSAMPLING * right, SUBSAMPLING * (right + 1)]
        assert geometry["shift_size"] == geometry["chunk_size"]
        assert geometry["pre_encode_cache_size"] == [0, PRE_ENCODE_CACHE]
        assert geometry["drop_extra_pre_encoded"] == DROP_EXTRA_PRE_ENCODED
        assert geometry["valid_out_len"] == right + 1
        assert geometry["last_channel_cache_size"] == left
        assert geometry["sampling_frames"] == [1, SUBSAMPLING]


def test_mel_frames_and_padding(manifest: Dict, arrays: Dict) -> None:
    for clip in manifest["clips"]:
        mel = arrays[clip["name"]]["mel"]
        n = clip["samples"]
        assert mel.dtype == np.float32 and np.isfinite(mel).all()
        assert clip["mel_len"] == n // HOP
        assert mel.shape == (128, n // HOP + 1) == (128, clip["mel_frames"])
        assert (mel[:, clip["mel_len"]:] == 0.0).all(), "frames from mel_len on are pad_value 0.0"
        if clip["kind"] == "silence":
            np.testing.assert_allclose(mel[:, : clip["mel_len"]], LOG_ZERO, rtol=1e-6)


def test_encoder_outputs_have_the_expected_frame_counts(manifest: Dict, arrays: Dict) -> None:
    d_model = manifest["model"]["d_model"]
    for clip, key, info in cases(manifest):
        a = arrays[clip["name"]]
        enc = a[f"{key}__enc"]
        assert enc.dtype == np.float32 and np.isfinite(enc).all()
        assert enc.shape == (info["enc_frames"], d_model), key
        if key.startswith("offline_"):
            assert info["enc_frames"] == encoder_frames(clip["mel_len"]), (clip["name"], key)


def test_streaming_chunks_follow_the_buffer_schedule(manifest: Dict, arrays: Dict) -> None:
    for clip, key, info in cases(manifest):
        if key.startswith("offline_"):
            continue
        mode, right = key.rsplit("_", 2)[0], int(key.rsplit("_", 1)[1])
        a = arrays[clip["name"]]
        schedule = stream_schedule(clip["mel_frames"], right, manifest["modes"][mode]["pad_and_drop_preencoded"])
        recorded = list(zip(*(a[f"{key}__chunk_{f}"].tolist() for f in ("mel_start", "mel_len", "drop", "enc_frames"))))
        assert recorded == schedule, (clip["name"], key)
        assert info["chunks"] == len(schedule)
        assert sum(a[f"{key}__chunk_enc_frames"]) == info["enc_frames"]


def test_greedy_traces_reproduce_the_tokens(manifest: Dict, arrays: Dict) -> None:
    blank, max_symbols = manifest["model"]["blank_id"], manifest["model"]["max_symbols"]
    for clip, key, info in cases(manifest):
        a = arrays[clip["name"]]
        frames, argmax, margin = (a[f"{key}__trace_{f}"] for f in ("frame", "argmax", "margin"))
        tokens = a[f"{key}__tokens"]
        assert frames.dtype == argmax.dtype == tokens.dtype == np.int32 and margin.dtype == np.float32
        assert frames.shape == argmax.shape == margin.shape == (info["joint_steps"],)
        np.testing.assert_array_equal(argmax[argmax != blank], tokens, err_msg=f"{clip['name']} {key}")
        assert ((tokens >= 0) & (tokens < blank)).all()
        assert np.isfinite(margin).all() and (margin >= 0).all()
        confidence = a[f"{key}__trace_confidence"]
        assert confidence.dtype == np.float32 and confidence.shape == margin.shape
        # The argmax of V + 1 classes has at least probability 1 / (V + 1), and a zero margin at most 1/2.
        assert ((confidence >= 1 / (blank + 1) - 1e-7) & (confidence <= 1)).all()
        assert (confidence[margin == 0] <= 0.5 + 1e-6).all()
        # Every frame is visited in order; on each, up to max_symbols tokens then a blank, or exactly max_symbols.
        assert np.array_equal(np.unique(frames), np.arange(info["enc_frames"])) and (np.diff(frames) >= 0).all()
        for t in range(info["enc_frames"]):
            ids = argmax[frames == t]
            emitted = int(np.sum(ids != blank))
            if emitted == max_symbols:
                assert ids.size == max_symbols
            else:
                assert ids.size == emitted + 1 and ids[-1] == blank and (ids[:-1] != blank).all()


def test_manifest_counts_match_the_arrays(manifest: Dict, arrays: Dict) -> None:
    blank, max_symbols = manifest["model"]["blank_id"], manifest["model"]["max_symbols"]
    for clip, key, info in cases(manifest):
        a = arrays[clip["name"]]
        tokens, frames, argmax = a[f"{key}__tokens"], a[f"{key}__trace_frame"], a[f"{key}__trace_argmax"]
        assert info["tokens"] == tokens.size
        assert info["blank_steps"] == int(np.sum(argmax == blank))
        assert info["distinct_tokens"] == np.unique(tokens).size
        per_frame = np.bincount(frames[argmax != blank], minlength=info["enc_frames"])
        assert info["frames_at_max_symbols"] == int(np.sum(per_frame == max_symbols))


def test_streaming_tokens_per_chunk_add_up(manifest: Dict, arrays: Dict) -> None:
    blank = manifest["model"]["blank_id"]
    for clip, key, info in cases(manifest):
        if key.startswith("offline_"):
            continue
        a = arrays[clip["name"]]
        bounds = np.cumsum(a[f"{key}__chunk_enc_frames"])
        frames, argmax = a[f"{key}__trace_frame"], a[f"{key}__trace_argmax"]
        chunk_of_step = np.searchsorted(bounds, frames, side="right")
        per_chunk = np.bincount(chunk_of_step[argmax != blank], minlength=bounds.size)
        np.testing.assert_array_equal(a[f"{key}__chunk_tokens"], per_chunk, err_msg=f"{clip['name']} {key}")


def test_speech_emits_a_real_mix_of_tokens_and_blanks(manifest: Dict, arrays: Dict) -> None:
    for clip in manifest["clips"]:
        if clip["kind"] != "speech":
            continue
        for key, info in clip["cases"].items():
            assert info["tokens"] > 0 and info["blank_steps"] > 0, (clip["name"], key)
            assert info["distinct_tokens"] >= 2, (clip["name"], key)
        ids = np.concatenate([arrays[clip["name"]][f"{key}__tokens"] for key in clip["cases"]])
        assert np.unique(ids).size >= 10, clip["name"]


def test_text_is_the_detokenized_tokens(manifest: Dict, arrays: Dict) -> None:
    # SentencePiece decoding: "\u2581" marks a word start; the unknown piece reads " \u2047 ".
    vocabulary = [" \u2047 " if piece == "<unk>" else piece for piece in manifest["vocabulary"]]
    for clip, key, info in cases(manifest):
        pieces = [vocabulary[t] for t in arrays[clip["name"]][f"{key}__tokens"]]
        assert info["text"] == "".join(pieces).replace("\u2581", " ").strip(), (clip["name"], key)


def test_default_streaming_equals_offline_except_the_last_frame(manifest: Dict, arrays: Dict) -> None:
    # With right context >= 1, NeMo's default streaming reproduces the offline encoder
    # output except the last frame (the zero pad column counts as input in streaming only); [70,0] differs
    # near the start through the zero pre-encode cache.
    for clip in manifest["clips"]:
        a = arrays[clip["name"]]
        for left, right in manifest["att_contexts"]:
            if right == 0:
                continue
            offline, stream = a[f"offline_{left}_{right}__enc"], a[f"stream_{left}_{right}__enc"]
            n = min(offline.shape[0], stream.shape[0]) - 1
            np.testing.assert_allclose(stream[:n], offline[:n], atol=1e-4, err_msg=f"{clip['name']} {right}")


def test_xscaling_set_is_the_tiny_model_scaled(manifest: Dict, arrays: Dict) -> None:
    """tests/reference/tiny-xscaling: the same model and audio with encoder.xscaling=true, which NeMo
    applied (its encoder outputs differ from the unscaled ones)."""
    folder = REFERENCE.parent / "tiny-xscaling"
    scaled = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert scaled["model"]["sha256"] == manifest["model"]["sha256"]
    assert scaled["model"]["config_overrides"] == {"encoder.xscaling": True}
    assert scaled["config"]["encoder"]["xscaling"] is True and manifest["config"]["encoder"]["xscaling"] is False
    listed = {c["wav"] for c in scaled["clips"]} | {c["npz"] for c in scaled["clips"]} | {"manifest.json"}
    assert {p.name for p in folder.iterdir()} == listed
    for clip in scaled["clips"]:
        assert hashlib.sha256((folder / clip["wav"]).read_bytes()).hexdigest() == clip["sha256"]
        with np.load(folder / clip["npz"]) as npz:
            for case in clip["cases"]:
                enc, plain = npz[f"{case}__enc"], arrays[clip["name"]][f"{case}__enc"]
                assert enc.shape == plain.shape and np.abs(enc - plain).max() > 0.1, case
