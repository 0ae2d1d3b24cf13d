"""The demo model's decoding against NVIDIA NeMo on real (synthetic) speech: tests/reference/demo/decoding.json.gz,
made by scripts/make_decoding_reference.py --gguf, which rebuilds the demo model in NeMo 2.7.3 from the
package's GGUF file (the weights as the engine reads them) and records NeMo's greedy decoding, its
phrase-boosted decoding with the demo's floor plan and contacts, and its beam search's N-best lists, on
held-out clips of rooms and contacts the model confuses. The engine runs the same weights in f32."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest
import soundfile

from conftest import decode_case, phrase_set_options
from nemotron_cpp import NemotronModel
from nemotron_cpp.demo import demo_model_path
from nemotron_cpp.gguf.quantize import quantize_gguf

CLIPS = Path(__file__).resolve().parent / "reference" / "demo"
RECORD = json.loads(gzip.decompress((CLIPS / "decoding.json.gz").read_bytes()))
# As tests/test_beam.py: float32 sums of log-probabilities (a boosted score can be near 0).
SCORE_RTOL, SCORE_ATOL = 2e-5, 1e-4


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> NemotronModel:
    path = quantize_gguf(demo_model_path(log=False), tmp_path_factory.mktemp("demo") / "demo.f32.gguf",
                         weight_type="f32")
    return NemotronModel(path, n_threads=1)


@pytest.fixture(scope="module")
def audio() -> Dict[str, np.ndarray]:
    return {name: soundfile.read(CLIPS / f"{name}.flac", dtype="float32")[0] for name in RECORD["plain"]}


def options(set_name: str) -> Dict[str, Any]:
    return phrase_set_options(next(s for s in RECORD["sets"] if s["name"] == set_name))


def test_the_file_is_the_one_recorded() -> None:
    import hashlib

    assert hashlib.sha256(demo_model_path(log=False).read_bytes()).hexdigest() == RECORD["model"]["sha256"]


def test_greedy_and_boosted_tokens(model: NemotronModel, audio: Dict[str, np.ndarray]) -> None:
    """Plain greedy decoding and each phrase set, every clip, offline and both streaming modes."""
    for name, cases in RECORD["plain"].items():
        for case, expected in cases.items():
            assert decode_case(model, audio[name], case).tokens.tolist() == expected, f"{name} {case}"
    changed = 0
    for set_name, per_clip in RECORD["tokens"].items():
        for name, cases in per_clip.items():
            for case, expected in cases.items():
                got = decode_case(model, audio[name], case, **options(set_name)).tokens.tolist()
                assert got == expected, f"{set_name}: {name} {case}"
                changed += expected != RECORD["plain"][name][case]
    assert changed >= 20  # the trees change what NeMo decodes (measured: 36 of 180 cases)


@pytest.mark.parametrize("key", list(RECORD["beam"]["nbest"]))
def test_nbest_lists(model: NemotronModel, audio: Dict[str, np.ndarray], key: str) -> None:
    size, _, set_name = key.partition("_")
    kwargs = {"beam_size": int(size[len("beam"):]), **(options(set_name) if set_name else {})}
    for name, cases in RECORD["beam"]["nbest"][key].items():
        for case, expected in cases.items():
            s = decode_case(model, audio[name], case, **kwargs)
            assert [list(h.token_ids) for h in s.nbest] == [e["tokens"] for e in expected], f"{name} {case}"
            np.testing.assert_allclose([h.score for h in s.nbest], [e["score"] for e in expected], rtol=SCORE_RTOL,
                                       atol=SCORE_ATOL)
            assert s.tokens.tolist() == expected[0]["tokens"]


def test_boosting_fixes_what_the_app_knows(model: NemotronModel, audio: Dict[str, np.ndarray]) -> None:
    """The point of a floor plan and a contact list: with NeMo's tree, "bedroom" heard as "living room" and
    "anna" heard as "dad" come out right (as NeMo's recorded tokens above say they must)."""
    for name, case, set_name, wrong, right in (("heldout_018", "stream_70_1", "house", "living room", "bedroom"),
                                               ("heldout_187", "offline_70_13", "contacts", "call dad", "call anna")):
        assert wrong in decode_case(model, audio[name], case).text
        assert right in decode_case(model, audio[name], case, **options(set_name)).text
