from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict

import pytest

from nemotron_cpp import testing

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
