"""A polite library: streams never outlive their model's memory, and the engine's messages go to
Python logging without taking ggml's process-wide logger from its other users."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from nemotron_cpp import NemotronModel

AUDIO = (0.1 * np.sin(np.arange(32000) * 0.05)).astype(np.float32)  # two seconds: past the first 1120 ms chunk


@pytest.fixture()
def model(fixtures_dir: Path) -> NemotronModel:
    return NemotronModel(fixtures_dir / "layout-a-tiny.q8_0.gguf", n_threads=1)


@pytest.mark.parametrize("use", [
    lambda s: s.feed(AUDIO),
    lambda s: s.push(AUDIO),
    lambda s: s.finalize(),
    lambda s: s.reset(),
    lambda s: s.n_frames,
    lambda s: s.encoder_output,
])
def test_a_stream_of_a_closed_model_raises(model: NemotronModel, use: Callable[..., object]) -> None:
    stream = model.stream(keep_encoder_output=True)
    stream.feed(AUDIO)
    model.close()
    with pytest.raises(ValueError, match=r"the stream's model was closed: a stream cannot be used after model\.close\(\)"):
        use(stream)
    stream.close()  # frees the stream, and with it the engine's last hold on the model


def test_step_on_a_closed_model_raises(model: NemotronModel) -> None:
    streams = [model.stream(), model.stream()]
    model.close()
    with pytest.raises(ValueError, match="the model is closed"):
        model.step(streams)


def test_results_already_taken_stay_readable(model: NemotronModel) -> None:
    stream = model.stream(endpointing=False)
    update = stream.feed(np.concatenate([AUDIO, AUDIO]))
    model.close()
    assert stream.transcript().text == update.text == stream.text and stream.seconds == 4.0
    assert [t.id for t in update.new_tokens] == stream.tokens.tolist()


_CLOSE_UNDER_A_STREAM = r"""
import gc, sys
import numpy as np
from nemotron_cpp import NemotronModel
audio = (0.1 * np.sin(np.arange(32000) * 0.05)).astype(np.float32)
for _ in range(20):
    model = NemotronModel(sys.argv[1], n_threads=1)
    streams = [model.stream() for _ in range(3)]
    streams[0].feed(audio)
    model.close()               # the streams still hold the engine's model
    del model
    gc.collect()
    for s in streams:
        try:
            s.feed(audio)
        except ValueError:
            pass
    streams[1].close()
    del streams                 # the last stream releases it
    gc.collect()
print("ok")
"""


def test_closing_a_model_under_its_streams_never_reads_freed_memory(fixtures_dir: Path) -> None:
    # In a child process, so that a use of freed memory fails this test instead of pytest.
    out = subprocess.run([sys.executable, "-c", _CLOSE_UNDER_A_STREAM, str(fixtures_dir / "layout-a-tiny.f32.gguf")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


_ANOTHER_GGML_USER = r"""
import ctypes, json, logging, pathlib, sys, sysconfig
# Another user of ggml in this process sets ggml's logger first (the very library the engine uses).
ggml = ctypes.CDLL(str(pathlib.Path(sysconfig.get_paths()["platlib"]) / "lib" / "libggml-base.so"))
theirs = []
Logger = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
logger = Logger(lambda level, text, _: theirs.append(text.decode()))
ggml.ggml_log_set(logger, None)

ours = []
class Keep(logging.Handler):
    def emit(self, record):
        ours.append([record.levelname, record.getMessage()])
log = logging.getLogger("nemotron_cpp")
log.addHandler(Keep())
log.setLevel(logging.DEBUG)

from nemotron_cpp import NemotronModel
model = NemotronModel(sys.argv[1], n_threads=1)   # q4_0: ggml logs every matrix it repacks
ggml.ggml_log_internal(3, b"%s\n", b"a message of another ggml user")
model.close()
ggml.ggml_log_internal(3, b"%s\n", b"and another after the model")
print(json.dumps({"theirs": theirs, "ours": ours}))
"""


def test_logging_goes_to_python_and_leaves_other_ggml_users_alone(tmp_path: Path) -> None:
    from nemotron_cpp import testing

    path = testing.write_model(tmp_path / "tiny.q4_0.gguf", weight_type="q4_0")
    out = subprocess.run([sys.executable, "-c", _ANOTHER_GGML_USER, str(path)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    theirs, ours = "".join(result["theirs"]), result["ours"]
    assert "a message of another ggml user" in theirs and "and another after the model" in theirs
    assert "repack" not in theirs and "loaded" not in theirs
    assert ["INFO", f"loaded {path}: layout nemo, q4_0, 2 layers x d_model 128; CPU, 1 thread"] in ours
    repacked = [message for level, message in ours if level == "DEBUG" and "repack tensor" in message]
    assert len(repacked) == 22  # 11 matrices in each of the 2 layers, one line each
    assert not any("another ggml user" in message for _, message in ours)
    assert all("\n" not in message for _, message in ours)


def test_engine_warnings_reach_stderr_without_logging_setup(tmp_path: Path) -> None:
    """With no logging configured, Python's last-resort handler shows the engine's warnings, as the
    engine's own default did; its debug and info lines stay quiet."""
    script = textwrap.dedent("""
        import sys
        from nemotron_cpp import NemotronModel, _lib
        NemotronModel(sys.argv[1], n_threads=1)
        _lib._log_line(_lib._lib.NEMOTRON_LOG_WARN, _lib._ffi.new("char[]", b"a warning from the engine"), _lib._ffi.NULL)
    """)
    from nemotron_cpp import testing

    path = testing.write_model(tmp_path / "tiny.q4_0.gguf", weight_type="q4_0")
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stderr == "a warning from the engine\n"
