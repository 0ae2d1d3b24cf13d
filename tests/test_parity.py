"""Recognition against NVIDIA NeMo itself: the committed reference fixtures (tests/reference,
made by scripts/make_reference.py with NeMo 2.7.3 from tests/fixtures/tiny-random.nemo, as it is
and with encoder.xscaling=true; and by scripts/make_multilingual_reference.py from
tests/fixtures/tiny-multilingual.nemo, a language-prompt model, in six languages).

Every clip, every right context, the full-utterance path and both of NeMo's streaming modes:
encoder output within 1e-3 (f32), greedy token ids and text identical.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
import tarfile
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pytest
import soundfile
import yaml

from conftest import edit_distance, replay_decisions
from nemotron_cpp import NemotronModel
from nemotron_cpp.gguf.convert import convert_nemo

REPO = Path(__file__).resolve().parents[1]
REFERENCES = {name: REPO / "tests" / "reference" / name for name in ("tiny", "tiny-xscaling")}
# The multilingual model (scripts/make_multilingual_reference.py), one set per language.
REFERENCES.update({f"tiny-multilingual/{d.name}": d
                   for d in sorted((REPO / "tests" / "reference" / "tiny-multilingual").iterdir())})
# Full-size references (24 layers, d_model 1024) are made on demand, see scripts/README.md.
FULL = Path(os.environ.get("NEMOTRON_FULL_REFERENCE", Path.home() / ".cache" / "nemotron-cpp" / "reference" / "full"))
if (FULL / "manifest.json").exists():
    REFERENCES["full"] = FULL
# The full-size multilingual model's sets, made on demand too (scripts/make_multilingual_reference.py).
FULL_MULTILINGUAL = Path(os.environ.get("NEMOTRON_FULL_MULTILINGUAL_REFERENCE", FULL.parent / "full-multilingual"))
REFERENCES.update({f"full-multilingual/{m.parent.name}": m.parent
                   for m in sorted(FULL_MULTILINGUAL.glob("*/manifest.json"))})
MANIFESTS = {name: json.loads((path / "manifest.json").read_text()) for name, path in REFERENCES.items()}
MANIFEST = MANIFESTS["tiny"]
REFERENCE = REFERENCES["tiny"]
CHUNKING = {"offline": "offline", "stream": "stream", "stream_pad": "stream_padded"}
# float32 against float32 in another summation order: measured 1.1e-5 at most on the tiny sets
# (outputs up to 5), 1.2e-5 at full size (outputs up to 3.7); about four times that as the bound.
ENCODER_TOLERANCE = 5e-5
# Probabilities from logits that carry the encoder's ~1e-5 error; measured on the tiny set: 1.3e-6.
CONFIDENCE_TOLERANCE = 1e-5
# The multilingual models' joints were tuned to steeper logits (make_multilingual_reference.py), which
# pass more of that error on: measured 2.1e-5 on the tiny sets, 6.4e-5 at full size.
CONFIDENCE_TOLERANCES = {"tiny-multilingual": 5e-5, "full-multilingual": 1.5e-4}


def cases() -> List[Any]:
    return [pytest.param(ref, clip["name"], case, marks=[pytest.mark.slow] if ref.startswith("full") else [])
            for ref, manifest in MANIFESTS.items() for clip in manifest["clips"] for case in clip["cases"]]


@functools.lru_cache(maxsize=None)
def _model(ref: str, fixtures_dir: Path, out_dir: Path, backend: str = "auto") -> NemotronModel:
    # One thread for the tiny model: its graphs are too small to share; results do not depend on it.
    return NemotronModel(model_path(ref, fixtures_dir, out_dir), backend=backend,
                         n_threads=1 if ref.startswith("tiny") else None)


@functools.lru_cache(maxsize=None)
def model_path(ref: str, fixtures_dir: Path, out_dir: Path) -> Path:
    """The GGUF file of reference set `ref`'s model."""
    model = MANIFESTS[ref]["model"]
    if model.get("conversion"):  # the generator converted the model it built with our converter
        path = REFERENCES[ref] / model["conversion"]["output"]
    else:  # a recorded .nemo (the committed sets': the committed tiny model), with the recorded config changes
        source = Path(model["source"])
        # (A multilingual set's model lies beside its language folders.)
        candidates = [fixtures_dir / source.name, REPO / source, REFERENCES[ref] / source,
                      REFERENCES[ref].parent / source.name]
        nemo = next((c for c in candidates if c.is_file()), candidates[0])
        if model.get("config_overrides"):
            nemo = _with_config(nemo, model["config_overrides"], out_dir / f"{ref}-nemo")
        path = _converted(nemo, out_dir)
    return path


@functools.lru_cache(maxsize=None)
def _converted(nemo: Path, out_dir: Path) -> Path:
    """A .nemo converted once, however many reference sets record it (the multilingual model's)."""
    return convert_nemo(nemo, out_dir / f"{nemo.parent.name}-{nemo.stem}.f32.gguf", force=True)


def _with_config(nemo: Path, overrides: Dict[str, Any], folder: Path) -> Path:
    """The .nemo extracted into `folder` with dotted config keys changed, as make_reference.py's --set
    changed them before NeMo recorded the references."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(nemo) as tar:
        for member in tar.getmembers():
            if member.isfile():
                (folder / Path(member.name).name).write_bytes(tar.extractfile(member).read())  # type: ignore[union-attr]
    config_path = folder / "model_config.yaml"
    config = yaml.safe_load(config_path.read_text())
    for key, value in overrides.items():
        *parents, last = key.split(".")
        section = config
        for part in parents:
            section = section[part]
        section[last] = value
    config_path.write_text(yaml.safe_dump(config))
    return folder


@functools.lru_cache(maxsize=None)
def clips_of(ref: str) -> Dict[str, Dict[str, Any]]:
    out = {}
    for clip in MANIFESTS[ref]["clips"]:
        audio, rate = soundfile.read(REFERENCES[ref] / clip["wav"], dtype="float32")
        assert rate == 16000
        out[clip["name"]] = {"audio": audio, "arrays": np.load(REFERENCES[ref] / clip["npz"]), "meta": clip}
    return out


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reference-models")


@pytest.fixture(scope="module")
def reference_model(fixtures_dir: Path, models_dir: Path) -> NemotronModel:
    return _model("tiny", fixtures_dir, models_dir)


@pytest.fixture(scope="module")
def clips() -> Dict[str, Dict[str, Any]]:
    return clips_of("tiny")


def run_case(model: NemotronModel, audio: np.ndarray, case: str, language: Optional[str] = None) -> Dict[str, Any]:
    mode, left, right = case.rsplit("_", 2)
    assert int(left) == model.hparams.att_left_context
    with model.stream(att_right_context=int(right), chunking=CHUNKING[mode], keep_encoder_output=True,
                      keep_trace=True, language=language) as s:
        s.feed(audio)
        s.finalize()
        return {"enc": s.encoder_output, "tokens": s.tokens, "text": s.text, "trace": s.trace,
                "confidence": s.token_confidences}


def test_fixtures_cover_every_mode() -> None:
    names = {case for clip in MANIFEST["clips"] for case in clip["cases"]}
    for mode in ("offline", "stream", "stream_pad"):
        for right in (0, 1, 6, 13):
            assert f"{mode}_70_{right}" in names
    assert len(MANIFEST["clips"]) >= 4


def test_log_mel(reference_model: NemotronModel, clips: Dict[str, Dict[str, Any]]) -> None:
    for name, clip in clips.items():
        mel = reference_model.log_mel(clip["audio"])
        ref = clip["arrays"]["mel"]
        assert mel.shape == ref.shape, name
        # float32 FFTs in another order; the guard keeps silence finite (log 2^-24 = -16.6).
        np.testing.assert_allclose(mel, ref, rtol=0, atol=5e-4, err_msg=name)


@pytest.mark.parametrize("ref_name,clip_name,case", cases())
def test_matches_nemo(fixtures_dir: Path, models_dir: Path, ref_name: str, clip_name: str, case: str) -> None:
    check_against_nemo(_model(ref_name, fixtures_dir, models_dir), ref_name, clip_name, case)


def check_against_nemo(model: NemotronModel, ref_name: str, clip_name: str, case: str) -> None:
    """One clip in one mode against NeMo's recording: encoder output, tokens, text, trace, confidences."""
    clip = clips_of(ref_name)[clip_name]
    ref = clip["arrays"]
    got = run_case(model, clip["audio"], case, MANIFESTS[ref_name].get("language"))
    enc = ref[f"{case}__enc"]
    assert got["enc"].shape == enc.shape
    error = float(np.abs(got["enc"] - enc).max())
    assert error <= ENCODER_TOLERANCE, f"encoder max abs error {error:.2e}"
    expected = ref[f"{case}__tokens"]
    if not np.array_equal(got["tokens"], expected):
        # Say where the first difference is, and how close the reference's joint was to a tie.
        trace, margin = got["trace"], ref[f"{case}__trace_margin"]
        steps = min(len(trace), len(margin))
        first = next(i for i in range(steps) if trace["token"][i] != ref[f"{case}__trace_argmax"][i])
        pytest.fail(f"tokens differ from NeMo's at joint step {first} (frame {trace['frame'][first]}); "
                    f"NeMo's top-1/top-2 margin there: {margin[first]:.2e}")
    assert got["text"] == clip["meta"]["cases"][case]["text"]
    np.testing.assert_array_equal(got["trace"]["token"], ref[f"{case}__trace_argmax"])
    np.testing.assert_array_equal(got["trace"]["frame"], ref[f"{case}__trace_frame"])
    # Confidence: the argmax's softmax probability at every joint step, against NeMo's joint.
    confidence = got["trace"]["confidence"]
    tolerance = CONFIDENCE_TOLERANCES.get(ref_name.split("/")[0], CONFIDENCE_TOLERANCE)
    np.testing.assert_allclose(confidence, ref[f"{case}__trace_confidence"], rtol=0, atol=tolerance)
    emitted = got["trace"]["token"] != MANIFESTS[ref_name]["model"]["blank_id"]
    np.testing.assert_array_equal(got["confidence"], confidence[emitted])


@pytest.mark.parametrize("chunking", ["stream", "stream_pad", "offline"])
def test_piece_sizes_do_not_matter(reference_model: NemotronModel, clips: Dict[str, Dict[str, Any]],
                                   chunking: str) -> None:
    """1 sample, 10 ms, 37 ms, 1 s, random sizes: the same tokens as the whole file and as NeMo."""
    clip = clips["speech_a"]
    audio, case = clip["audio"], f"{chunking}_70_1"
    expected = clip["arrays"][f"{case}__tokens"]
    rng = np.random.default_rng(0)
    random_cuts = np.cumsum(rng.integers(1, 4000, size=len(audio) // 1000))
    for cuts in (np.arange(1, len(audio)), np.arange(160, len(audio), 160), np.arange(592, len(audio), 592),
                 np.arange(16000, len(audio), 16000), random_cuts[random_cuts < len(audio)]):
        with reference_model.stream(att_right_context=1, chunking=CHUNKING[chunking]) as s:
            for piece in np.split(audio, cuts):
                s.feed(piece)
            s.finalize()
            np.testing.assert_array_equal(s.tokens, expected, err_msg=f"{len(cuts) + 1} pieces")


# Measured: q8_0 96.9 % of 8023 decisions, q4_0 66.9 % (4-bit weights on a random model of near-ties).
@pytest.mark.parametrize("weight_type,least", [("q8_0", 0.95), ("q4_0", 0.60)])
def test_quantized_models_agree(reference_model: NemotronModel, clips: Dict[str, Dict[str, Any]],
                                fixtures_dir: Path, tmp_path: Path, weight_type: str, least: float) -> None:
    """Quantized encoders against f32. A random-weight model decodes in near-ties (NeMo's own
    trace margins go down to ~1e-3) and one flipped label changes everything after it, so the
    token sequences are compared for the record, and the assertion is on the decisions: the
    quantized encoder's argmax at every joint step of the f32 run, with the f32 label history."""
    model = NemotronModel(convert_nemo(fixtures_dir / "tiny-random.nemo", tmp_path / "q.gguf", weight_type=weight_type),
                          n_threads=1)
    weights = {t.name: reference_model.get_tensor(t.name) for t in reference_model.tensors
               if t.name.startswith(("decoder.", "joint."))}
    decisions = same_decisions = tokens = token_errors = 0
    for clip in clips.values():
        for case in clip["meta"]["cases"]:
            ref = run_case(reference_model, clip["audio"], case)
            got = run_case(model, clip["audio"], case)
            replayed = replay_decisions(reference_model, weights, got["enc"], ref["trace"])
            same_decisions += int(np.sum(np.array(replayed) == ref["trace"]["token"]))
            decisions += len(replayed)
            token_errors += edit_distance(got["tokens"].tolist(), ref["tokens"].tolist())
            tokens += len(ref["tokens"])
    decision_agreement, token_agreement = same_decisions / decisions, 1 - token_errors / tokens
    print(f"\n{weight_type}: {decision_agreement:.1%} of {decisions} joint decisions and "
          f"{token_agreement:.1%} of {tokens} tokens (1 - edit distance) agree with f32")
    assert decision_agreement >= least
