"""Getting the model: registered names, repo ids and the command line fetch through huggingface_hub and its
cache, and a registered file is checked before it is used. Without the internet: a loopback Hub
(loopback_hub.py) serves the tiny model's files, and each case runs in a child process whose environment
points huggingface_hub at it (HF_ENDPOINT) and at a fresh cache (HF_HOME), as a user's shell would."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

from loopback_hub import LoopbackHub
from nemotron_cpp import NemotronModel, hub, testing

FIXTURES = Path(__file__).parent / "fixtures"
SPEECH = Path(__file__).parent / "reference" / "tiny" / "speech_a.wav"
TINY = (FIXTURES / "layout-a-tiny.q8_0.gguf").read_bytes()
OTHER = (FIXTURES / "layout-b-tiny.q8_0.gguf").read_bytes()
COMMIT = "0123456789abcdef0123456789abcdef01234567"



def entry(name: str, repo_id: str, filename: str, content: bytes) -> Dict[str, Any]:
    """A registry entry (KnownModel's fields) for a file of the loopback Hub."""
    return dict(name=name, repo_id=repo_id, filename=filename, revision=COMMIT, size=len(content),
                sha256=hashlib.sha256(content).hexdigest(), layout="nemo", description="a test model")


#: The registry entry the child processes add: the tiny model as a registered file of the loopback Hub.
ENTRY = entry("tiny-test.q8_0", "nemotron-cpp-tests/tiny", "layout-a-tiny.q8_0.gguf", TINY)
NAME = ENTRY["name"]
CONTENT = f"/cdn/{ENTRY['sha256']}"

#: Run in a child process with the entries in argv[1] registered.
PRELUDE = """
import json, sys
from nemotron_cpp import DownloadError, NemotronModel, hub
for entry in json.loads(sys.argv[1]):
    hub.register(hub.KnownModel(**entry))
"""


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random model of 32 MB: huggingface_hub writes a transfer in 10 MB chunks, and resumes after the last
    whole one, so only a file of several chunks shows a resumed transfer."""
    size = testing.ModelSize(n_layers=4, d_model=256, n_heads=4, d_ff=1024, subsampling_channels=64,
                             pred_hidden=256, joint_dim=256, vocab=256)
    return testing.write_model(tmp_path_factory.mktemp("large") / "large.f32.gguf", size=size, weight_type="f32")


@pytest.fixture(scope="module")
def loopback(large: Path) -> Iterator[LoopbackHub]:
    with LoopbackHub() as server:
        server.add(ENTRY["repo_id"], COMMIT, ENTRY["filename"], TINY)
        server.add("nemotron-cpp-tests/large", COMMIT, large.name, large.read_bytes())
        server.add("someone/other-gguf", "89abcdef0123456789abcdef0123456789abcdef", "other.q8_0.gguf", OTHER)
        yield server


@pytest.fixture()
def server(loopback: LoopbackHub) -> LoopbackHub:
    loopback.reset()
    return loopback


@pytest.fixture(scope="module")
def expected_text() -> str:
    with NemotronModel(FIXTURES / "layout-a-tiny.q8_0.gguf", n_threads=1) as model:
        return model.transcribe(SPEECH).text


def environment(server: LoopbackHub, home: Path, offline: bool = False) -> Dict[str, str]:
    """The caller's environment without its Hugging Face settings, pointed at the loopback Hub and ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_")) and "proxy" not in k.lower()}
    env.update(HF_ENDPOINT=server.url, HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1", NO_PROXY="127.0.0.1")
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


def python(code: str, server: LoopbackHub, home: Path, *args: str, offline: bool = False,
           entries: Optional[List[Dict[str, Any]]] = None) -> Any:
    """Runs ``code`` in a child process with ``entries`` (default: ENTRY) registered; returns the JSON it printed
    last."""
    out = subprocess.run([sys.executable, "-c", PRELUDE + code, json.dumps(entries or [ENTRY]), *args],
                         capture_output=True, text=True, timeout=120, env=environment(server, home, offline))
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def cli(args: List[str], server: LoopbackHub, home: Path, offline: bool = False,
        register: bool = True) -> subprocess.CompletedProcess:
    """The command line in a child process: its real entry point, with ENTRY registered first if ``register``."""
    command = ([sys.executable, "-c", PRELUDE + "from nemotron_cpp.cli import main\nsys.exit(main(sys.argv[2:]))",
                json.dumps([ENTRY])] if register else [sys.executable, "-m", "nemotron_cpp"])
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=120,
                          env=environment(server, home, offline))


def cached_files(home: Path) -> List[Path]:
    return [p for p in (home / "hub").rglob("*") if p.is_file()] if (home / "hub").exists() else []


LOAD = """
path = str(hub.download(sys.argv[2]))
with NemotronModel.from_pretrained(sys.argv[2], n_threads=1) as model:
    text = model.transcribe(sys.argv[3]).text
print(json.dumps({"path": path, "model_path": model.path, "text": text}))
"""

ERROR = """
try:
    hub.download(sys.argv[2])
except Exception as e:
    print(json.dumps({"type": type(e).__name__, "mro": [c.__name__ for c in type(e).__mro__], "message": str(e)}))
"""


# ---- fetching a registered file -------------------------------------------------------------------------


def test_a_registered_name_is_fetched_checked_and_loaded(server: LoopbackHub, tmp_path: Path,
                                                         expected_text: str) -> None:
    got = python(LOAD, server, tmp_path, NAME, str(SPEECH))
    path = Path(got["path"])
    # The file lies in huggingface_hub's own cache, under the pinned commit.
    assert path == tmp_path / "hub" / "models--nemotron-cpp-tests--tiny" / "snapshots" / COMMIT / ENTRY["filename"]
    assert path.read_bytes() == TINY and got["model_path"] == str(path)
    assert got["text"] == expected_text
    # One look-up and one transfer; the load after the download found it in the cache.
    assert [r.status for r in server.sent("HEAD", "/nemotron-cpp-tests/tiny/resolve/")] == [302]
    assert [(r.status, r.range) for r in server.sent("GET", CONTENT)] == [(200, None)]
    # The check was recorded beside the cache, not in it.
    assert (tmp_path / "nemotron-cpp" / "verified" / ENTRY["sha256"]).is_file()


def test_a_cached_file_is_used_without_asking_the_hub(server: LoopbackHub, tmp_path: Path, expected_text: str) -> None:
    first = python(LOAD, server, tmp_path, NAME, str(SPEECH))
    server.reset()
    # The constructor takes the name too; the repo id of a registered file stands for that file.
    again = python("""
with NemotronModel(sys.argv[2], n_threads=1) as model:
    text = model.transcribe(sys.argv[3]).text
print(json.dumps({"path": model.path, "text": text, "by_repo": str(hub.download("nemotron-cpp-tests/tiny"))}))
""", server, tmp_path, NAME, str(SPEECH))
    assert again == {"path": first["path"], "text": expected_text, "by_repo": first["path"]}
    assert server.requests == []  # a pinned commit in the cache needs no look-up


def test_offline_with_the_file_cached(server: LoopbackHub, tmp_path: Path, expected_text: str) -> None:
    first = python(LOAD, server, tmp_path, NAME, str(SPEECH))
    server.reset()
    offline = python(LOAD, server, tmp_path, NAME, str(SPEECH), offline=True)
    assert offline == first and offline["text"] == expected_text
    assert server.requests == []


def test_offline_with_an_empty_cache_says_how_to_get_the_file(server: LoopbackHub, tmp_path: Path) -> None:
    error = python(ERROR, server, tmp_path, NAME, offline=True)
    assert error["type"] == "DownloadError" and "NemotronError" in error["mro"] and "OSError" in error["mro"]
    message = error["message"]
    assert f"{NAME} (nemotron-cpp-tests/tiny@{COMMIT}/{ENTRY['filename']}) is not in the Hugging Face cache" in message
    assert str(tmp_path / "hub") in message and "offline mode is on (HF_HUB_OFFLINE)" in message
    assert f"run `nemotron-cpp download {NAME}` where the Hub can be reached" in message
    # The command line says it in one line, without a traceback.
    out = cli(["transcribe", "-m", NAME, str(SPEECH)], server, tmp_path, offline=True)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr == f"nemotron-cpp: error: {message}\n"
    assert server.requests == [] and cached_files(tmp_path) == []


def test_a_corrupted_download_is_refused_and_removed(server: LoopbackHub, tmp_path: Path,
                                                     expected_text: str) -> None:
    server.corrupt_gets = 1
    error = python(ERROR, server, tmp_path, NAME)
    assert error["type"] == "ChecksumError" and "DownloadError" in error["mro"], error
    bad = hashlib.sha256(bytes(b ^ 0x5A for b in TINY)).hexdigest()
    assert f"sha256 {bad}, expected {ENTRY['sha256']}" in error["message"]
    assert "It was deleted from the cache" in error["message"]
    # Nothing in the cache holds the bad bytes, or stands for the file: no blob, no snapshot link.
    assert not [p for p in cached_files(tmp_path) if p.stat().st_size == len(TINY)]
    snapshot = tmp_path / "hub" / "models--nemotron-cpp-tests--tiny" / "snapshots" / COMMIT / ENTRY["filename"]
    assert not os.path.lexists(snapshot)
    assert not (tmp_path / "nemotron-cpp" / "verified" / ENTRY["sha256"]).exists()
    # The next try downloads it again, and this time it is the right file.
    got = python(LOAD, server, tmp_path, NAME, str(SPEECH))
    assert got["text"] == expected_text and Path(got["path"]).read_bytes() == TINY
    assert len(server.sent("GET", CONTENT)) == 2


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_cached_file_is_refused_and_removed(server: LoopbackHub, tmp_path: Path, damage: str) -> None:
    """The size is checked on every load, the sha256 whenever the file changed since it was checked."""
    path = Path(python(LOAD, server, tmp_path, NAME, str(SPEECH))["path"])
    blob = path.resolve()
    with open(blob, "r+b") as f:
        if damage == "truncate":
            f.truncate(len(TINY) - 1)
        else:
            f.seek(len(TINY) // 2)
            f.write(bytes([TINY[len(TINY) // 2] ^ 1]))
    os.utime(blob, ns=(blob.stat().st_atime_ns, blob.stat().st_mtime_ns + 1_000_000_000))  # a later write
    error = python(ERROR, server, tmp_path, NAME)
    assert error["type"] == "ChecksumError"
    expected = (f"size {len(TINY) - 1} bytes, expected {len(TINY)} bytes" if damage == "truncate"
                else f", expected {ENTRY['sha256']}")
    assert expected in error["message"]
    assert not os.path.lexists(path) and not blob.exists()


def test_a_broken_transfer_is_resumed(server: LoopbackHub, tmp_path: Path, large: Path) -> None:
    content = large.read_bytes()
    registered = entry("large-test.f32", "nemotron-cpp-tests/large", large.name, content)
    cut = 12 << 20
    server.cut_after = cut
    got = python(f"try:\n{textwrap.indent(LOAD, '    ')}\nexcept DownloadError as e:\n"
                 f"    print(json.dumps({{'error': str(e)}}))", server, tmp_path, registered["name"], str(SPEECH),
                 entries=[registered])
    if "error" in got:
        # huggingface_hub < 1.20 fails the call and keeps the partial file for the next call to resume; later
        # versions resume within the call.
        assert got["error"].startswith("cannot fetch large-test.f32"), got
        got = python(LOAD, server, tmp_path, registered["name"], str(SPEECH), entries=[registered])
    assert Path(got["path"]).read_bytes() == content
    with NemotronModel(large, n_threads=1) as model:
        assert got["text"] == model.transcribe(SPEECH).text
    # The connection broke after `cut` bytes; the second request asked for the rest of what was kept, and got it.
    first, second = server.sent("GET", f"/cdn/{registered['sha256']}")
    assert (first.status, first.range) == (200, None) and second.status == 206 and second.range is not None
    resumed_at = int(second.range[len("bytes="):-len("-")])
    assert 0 < resumed_at <= cut and second.range == f"bytes={resumed_at}-"


# ---- the command line -----------------------------------------------------------------------------------


def test_download_command_prints_the_path(server: LoopbackHub, tmp_path: Path, expected_text: str) -> None:
    out = cli(["download", NAME, "--quiet"], server, tmp_path)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    path = Path(out.stdout.strip())
    assert out.stdout == f"{path}\n" and path.read_bytes() == TINY
    # Every command that takes a model takes the name.
    transcribe = cli(["transcribe", "-m", NAME, str(SPEECH)], server, tmp_path)
    assert transcribe.returncode == 0 and transcribe.stdout.split() == expected_text.split(), transcribe.stderr
    info = cli(["info", NAME], server, tmp_path)
    assert info.returncode == 0 and f"model        {path}" in info.stdout, info.stderr
    env_model = subprocess.run(
        [sys.executable, "-c", PRELUDE + "from nemotron_cpp.cli import main\nsys.exit(main(sys.argv[2:]))",
         json.dumps([ENTRY]), "bench", "--seconds", "1", "--latency", "1120"],
        capture_output=True, text=True, timeout=120, env={**environment(server, tmp_path), "NEMOTRON_MODEL": NAME})
    assert env_model.returncode == 0 and path.name in env_model.stdout, env_model.stderr
    assert len(server.sent("GET", CONTENT)) == 1


def test_any_gguf_by_repo_id_and_filename(server: LoopbackHub, tmp_path: Path) -> None:
    """No registry entry: fetched as the Hub sends it, by the package's own command line."""
    out = cli(["download", "someone/other-gguf", "--filename", "other.q8_0.gguf", "-q"], server, tmp_path,
              register=False)
    assert out.returncode == 0, out.stderr
    path = Path(out.stdout.strip())
    assert path.read_bytes() == OTHER and "models--someone--other-gguf" in str(path)
    got = python("""
with NemotronModel.from_pretrained(sys.argv[2], filename=sys.argv[3], revision="main", n_threads=1) as model:
    print(json.dumps({"path": model.path, "layout": model.layout}))
""", server, tmp_path, "someone/other-gguf", "other.q8_0.gguf")
    assert got == {"path": str(path), "layout": "asr"}
    missing = cli(["download", "someone/other-gguf", "--filename", "nope.gguf"], server, tmp_path, register=False)
    assert missing.returncode == 1 and missing.stderr == (
        "nemotron-cpp: error: cannot fetch someone/other-gguf/nope.gguf: the repository has no such file at that "
        "revision\n")
    no_repo = cli(["download", "nobody/nothing", "--filename", "x.gguf"], server, tmp_path, register=False)
    assert no_repo.returncode == 1 and "the repository does not exist or needs a token" in no_repo.stderr


def test_unknown_names_list_the_known_ones(server: LoopbackHub, tmp_path: Path) -> None:
    known = ", ".join(m.name for m in hub.known_models())
    with pytest.raises(ValueError, match=f"'nope' is not a known model name \\(known: {known}\\)"):
        hub.download("nope")
    with pytest.raises(ValueError, match="give the GGUF file to fetch"):
        hub.download("someone/other-gguf")
    with pytest.raises(FileNotFoundError, match=f"not a known model name \\({known}\\)"):
        NemotronModel("nope")
    # What looks like a path is a missing file, as before.
    with pytest.raises(FileNotFoundError) as missing:
        NemotronModel("nope.gguf")
    assert missing.value.filename == "nope.gguf" and "known" not in str(missing.value)
    out = cli(["download", "nope"], server, tmp_path, register=False)
    assert out.returncode == 1 and out.stderr.startswith("nemotron-cpp: error: 'nope' is not a known model name")
    out = cli(["transcribe", "-m", "nope", str(SPEECH)], server, tmp_path, register=False)
    assert out.stderr == f"nemotron-cpp: error: --model nope: no such file (and it is not a known model name: {known})\n"
    assert server.requests == []


def test_importing_the_package_leaves_huggingface_hub_unloaded() -> None:
    """It is imported when a file is fetched, so ``import nemotron_cpp`` costs nothing for those who never do."""
    loaded = subprocess.run([sys.executable, "-c", "import sys, nemotron_cpp; print(sorted(sys.modules))"],
                            capture_output=True, text=True, check=True).stdout
    assert "huggingface_hub" not in loaded


# ---- the registry ---------------------------------------------------------------------------------------


def test_registry_entries_can_be_added_replaced_and_removed() -> None:
    entry = hub.KnownModel(**ENTRY)
    assert hub.register(entry) is None and hub.is_known(NAME) and hub.known_models()[-1] == entry
    try:
        moved = hub.KnownModel(**{**ENTRY, "revision": "f" * 40})
        assert hub.register(moved) == entry and hub.known_models()[-1] == moved
        with pytest.raises(ValueError, match="names one file at one revision"):
            hub.download(NAME, filename="other.gguf")
    finally:
        hub.unregister(NAME)
    assert not hub.is_known(NAME)


@pytest.mark.parametrize("field,value,message", [
    ("revision", "main", "revision must be a 40-digit commit hash"),
    ("sha256", "ABC", "sha256 must be 64 lowercase hex digits"),
    ("size", 0, "size must be positive"),
    ("name", "models/tiny.gguf", "must not look like a path"),
])
def test_registry_entries_are_checked(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        hub.KnownModel(**{**ENTRY, field: value})


def test_the_demo_notice_points_to_the_recommended_model() -> None:
    from nemotron_cpp import DemoModelWarning
    from nemotron_cpp.demo import demo_model_path

    name = hub.RECOMMENDED_MODEL.name
    with pytest.warns(DemoModelWarning) as caught:
        demo_model_path()
    notice = str(caught[0].message)
    assert f"NemotronModel({name!r})" in notice and f"nemotron-cpp download {name}" in notice
    assert '"Getting the model" in README' in notice
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert "## Getting the model" in readme and f"nemotron-cpp download {name}" in readme
