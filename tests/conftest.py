from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np
import pytest

from nemotron_cpp import NemotronModel, testing

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"

#: The tiny model as NeMo saved it and as the two real converters wrote it (fixtures/README.md).
FIXTURE_SHA256 = {
    "tiny-random.nemo": "ec98d833270d21661aa6ed9f697b6bc6b783caf230b2732ef014cb61cf43ad22",
    "tiny-multilingual.nemo": "00b09aaf2ecaa292daebdfb6fb287ae44d8814668951da5abd64b1e46f73cbe1",
    "layout-a-tiny.f32.gguf": "ab2cb5ab71d823339c8dd8b12d6139c6012a75b726cfe15c8def2c748f224af8",
    "layout-a-tiny.q8_0.gguf": "69ffd262ea584c57e0c5a90ac535ac9e80b6fad26636c5b61665b62e6a03c4ea",
    "layout-b-tiny.q8_0.gguf": "13388beb704de9342bc365f5c0a4510ce9a9ae4cda69e7662bc87074a1e4c9bc",
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def fixtures_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's four files in one folder: the committed ones, and the port converter's f32 file
    written again from the .nemo (that converter stores every tensor as it is) and checked by its sha256."""
    from nemotron_cpp.gguf.nemo_checkpoint import read_nemo

    folder = tmp_path_factory.mktemp("fixtures")
    for name in FIXTURE_SHA256:
        if (FIXTURES / name).exists():
            (folder / name).symlink_to(FIXTURES / name)
    checkpoint = read_nemo(folder / "tiny-random.nemo")
    testing.write_model(folder / "layout-a-tiny.f32.gguf", state_dict=dict(checkpoint.state_dict),
                        vocab=checkpoint.vocabulary, extended_metadata=False, name="tiny-random")
    for name, digest in FIXTURE_SHA256.items():
        assert _sha256(folder / name) == digest, f"{name} is not the file the converter wrote (fixtures/README.md)"
    return folder


@pytest.fixture(scope="session")
def model_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Writes a random-weight test model (nemotron_cpp.testing.write_model) into a temp dir."""
    counter = [0]

    def make(**kwargs: Any) -> Path:
        counter[0] += 1
        path = tmp_path_factory.mktemp("models") / f"model{counter[0]}.gguf"
        return testing.write_model(path, **kwargs)

    return make


_LOAD_SCRIPT = r"""
import json, sys
from nemotron_cpp import NemotronModel
try:
    m = NemotronModel(sys.argv[1], backend="cpu")
    out = {"ok": True, "layout": m.layout}
    m.close()
except BaseException as e:
    out = {"ok": False, "type": type(e).__name__, "mro": [c.__name__ for c in type(e).__mro__], "message": str(e)}
print(json.dumps(out))
"""


def load_in_subprocess(path: Path) -> Dict[str, Any]:
    """Loads a model in a child process, so that a crash fails the test instead of pytest."""
    proc = subprocess.run([sys.executable, "-c", _LOAD_SCRIPT, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"loading {path} crashed the process (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def replay_decisions(model: NemotronModel, w: Dict[str, np.ndarray], enc: np.ndarray, trace: np.ndarray) -> List[int]:
    """The joint's argmax at each step of `trace`, given encoder frames `enc` and the label
    history of `trace` (teacher forcing), computed by nemotron_cpp.testing's numpy decoder from the
    model's decoder weights `w`."""
    frames = testing.joint_encoder(w, enc)
    pred, h, c = testing.predict(w, -1, *testing.start_state(w))
    out = []
    for frame, token in zip(trace["frame"], trace["token"]):
        out.append(testing.joint_argmax(w, frames[frame], pred))
        if token != model.hparams.blank_id:
            pred, h, c = testing.predict(w, int(token), h, c)
    return out


def edit_distance(a: List[int], b: List[int]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        diagonal, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (x != y))
    return row[-1]


# The references' case names, e.g. "stream_pad_70_1": NeMo's mode and the engine's chunking for it.
CASE_CHUNKING = {"offline": "offline", "stream": "stream", "stream_pad": "stream_padded"}


def decode_case(model: NemotronModel, audio: np.ndarray, case: str, **options: Any) -> Any:
    """A stream of one reference case (its mode and right context) fed the whole clip and finalized, without
    endpoints; the stream, closed, with its results."""
    mode, _, right = case.rsplit("_", 2)
    with model.stream(att_right_context=int(right), chunking=CASE_CHUNKING[mode], endpointing=False, **options) as s:
        s.feed(audio)
        s.finalize()
        return s


def phrase_set_options(spec: Dict[str, Any]) -> Dict[str, Any]:
    """The stream options of a phrase set of scripts/make_decoding_reference.py (hotwords and boosting)."""
    from nemotron_cpp import Boosting

    return {"hotwords": [p if isinstance(p, str) else (p[0], p[1]) for p in spec["phrases"]],
            "boosting": Boosting(alpha=spec["alpha"], context_score=spec["context_score"],
                                 depth_scaling=spec["depth_scaling"], unk_score=spec["unk_score"])}
