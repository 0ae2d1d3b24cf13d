from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np
import pytest

from nemotron_cpp import NemotronModel, testing

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not (FIXTURES / "layout-a-tiny.f32.gguf").exists():
        pytest.fail(f"the shared fixtures are missing: expected them in {FIXTURES}")
    return FIXTURES


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
    history of `trace` (teacher forcing), computed in numpy from the model's decoder weights `w`."""
    hp = model.hparams
    lstm = "decoder.prediction.dec_rnn.lstm."
    h = [np.zeros(hp.pred_hidden, np.float32) for _ in range(hp.pred_num_layers)]
    c = [np.zeros(hp.pred_hidden, np.float32) for _ in range(hp.pred_num_layers)]
    last, pred, out = -1, None, []
    for frame, token in zip(trace["frame"], trace["token"]):
        if pred is None:
            x = np.zeros(hp.pred_embed_dim, np.float32) if last < 0 else w["decoder.prediction.embed.weight"][last]
            new_h, new_c = [], []
            for layer in range(hp.pred_num_layers):
                gates = (w[f"{lstm}weight_ih_l{layer}"] @ x + w[f"{lstm}bias_ih_l{layer}"]
                         + w[f"{lstm}weight_hh_l{layer}"] @ h[layer] + w[f"{lstm}bias_hh_l{layer}"])
                i, f, g, o = np.split(gates, 4)
                cell = 1 / (1 + np.exp(-f)) * c[layer] + 1 / (1 + np.exp(-i)) * np.tanh(g)
                x = 1 / (1 + np.exp(-o)) * np.tanh(cell)
                new_h.append(x)
                new_c.append(cell)
            pred = w["joint.pred.weight"] @ x + w["joint.pred.bias"]
        hidden = np.maximum(0, w["joint.enc.weight"] @ enc[frame] + w["joint.enc.bias"] + pred)
        out.append(int(np.argmax(w["joint.joint_net.2.weight"] @ hidden + w["joint.joint_net.2.bias"])))
        if token != hp.blank_id:
            h, c, last, pred = new_h, new_c, int(token), None
    return out


def edit_distance(a: List[int], b: List[int]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        diagonal, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (x != y))
    return row[-1]
