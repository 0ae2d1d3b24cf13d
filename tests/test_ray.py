"""Corpus transcription on a real local Ray cluster (started here, two CPUs): nemotron_cpp.ray's bridge and
`nemotron-cpp transcribe-dataset`, with the demo model. Every row comes out once, with the results of
model.transcribe or the reason it has none."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List

import numpy as np
import pytest
import soundfile

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

import ray.data  # noqa: E402

from nemotron_cpp import NemotronModel  # noqa: E402
from nemotron_cpp.demo import demo_model_path  # noqa: E402
from nemotron_cpp.ray import list_inputs, transcribe_corpus, transcribe_dataset  # noqa: E402

CLIPS = Path(__file__).resolve().parent / "reference" / "demo"
GOOD = [CLIPS / f"heldout_{i:03d}.flac" for i in range(6)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield context.address_info["gcs_address"]
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def model() -> Iterator[NemotronModel]:
    with NemotronModel(demo_model_path(log=False), n_threads=1) as m:
        yield m


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Good clips, a corrupt file, an empty one, and (in the manifests) one that does not exist."""
    folder = tmp_path_factory.mktemp("corpus")
    for clip in GOOD:
        shutil.copy(clip, folder / clip.name)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")
    (folder / "empty.flac").write_bytes(b"")
    return folder


def expected(model: NemotronModel, path: Path) -> Dict[str, Any]:
    t = model.transcribe(path)
    return {"text": t.text, "duration": t.duration,
            "segments": [{"text": s.text, "start": s.start, "end": s.end} for s in t.segments],
            "words": [{"text": w.text, "start": w.start, "end": w.end, "confidence": w.confidence} for w in t.words]}


def test_dataset_rows_equal_transcribe(cluster: str, model: NemotronModel) -> None:
    """Paths; encoded file bytes and raw PCM bytes with their rate; float arrays: each row as transcribe() gives it,
    the input's columns kept."""
    pcm, rate = soundfile.read(GOOD[1], dtype="int16")
    datasets = [
        [{"path": str(p), "id": i} for i, p in enumerate(GOOD[:3])],
        [{"audio": GOOD[0].read_bytes(), "sample_rate": None, "id": 0},
         {"audio": pcm.tobytes(), "sample_rate": rate, "id": 1}],
        [{"audio": (pcm / 32768.0).astype(np.float32).tolist(), "sample_rate": rate, "id": 1}],
    ]
    for rows in datasets:
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        out = transcribe_dataset(ds, str(demo_model_path(log=False)), concurrency=2, batch_size=2).take_all()
        assert sorted(r["id"] for r in out) == sorted(r["id"] for r in rows)
        for row in out:
            want = expected(model, GOOD[row["id"]])
            assert row["error"] is None
            assert row["text"] == want["text"] and row["duration"] == pytest.approx(want["duration"])
            assert row["segments"] == want["segments"] and row["words"] == want["words"]


def test_mixed_corpus_keeps_every_row(cluster: str, corpus: Path, model: NemotronModel) -> None:
    paths = [str(p) for p in sorted(corpus.iterdir())] + [str(corpus / "missing.wav")]
    ds = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=3)
    out = transcribe_dataset(ds, str(demo_model_path(log=False)), concurrency=2, batch_size=3).take_all()
    assert sorted(r["path"] for r in out) == sorted(paths)
    by_path = {r["path"]: r for r in out}
    assert by_path[str(corpus / "missing.wav")]["error"].startswith("FileNotFoundError: no such audio file")
    assert by_path[str(corpus / "corrupt.wav")]["error"].startswith("AudioError")
    assert by_path[str(corpus / "empty.flac")]["error"].startswith("AudioError")
    for clip in GOOD:
        row = by_path[str(corpus / clip.name)]
        assert row["error"] is None and row["text"] == expected(model, clip)["text"]
    bad = [r for r in out if r["error"]]
    assert all(r["text"] is None and r["segments"] == [] and r["duration"] is None for r in bad)


def test_inputs_folder_glob_and_manifests(corpus: Path, tmp_path: Path) -> None:
    files = sorted(str(p) for p in corpus.iterdir())
    assert list_inputs(str(corpus)) == files
    assert list_inputs(str(corpus / "*.flac")) == [f for f in files if f.endswith(".flac")]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps({"audio_filepath": str(Path(f).name), "text": "x"}) + "\n"
                                              for f in files[:2]))
    shutil.copy(files[0], tmp_path / Path(files[0]).name)
    assert list_inputs(str(tmp_path / "m.jsonl")) == [str(tmp_path / Path(f).name) for f in files[:2]]
    with open(tmp_path / "m.csv", "w", newline="") as f:
        csv.writer(f).writerows([["path", "speaker"], [files[0], "a"]])
    assert list_inputs(str(tmp_path / "m.csv")) == [files[0]]
    (tmp_path / "bad.jsonl").write_text('{"file": "a.wav"}\n')
    with pytest.raises(ValueError, match="row 1 has no path or audio_filepath column"):
        list_inputs(str(tmp_path / "bad.jsonl"))
    with pytest.raises(FileNotFoundError):
        list_inputs(str(tmp_path / "nowhere"))


def run(args: List[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nemotron_cpp", "transcribe-dataset", *args], capture_output=True,
                          text=True, timeout=300)


def test_command_line_resumes(cluster: str, corpus: Path, tmp_path: Path) -> None:
    """On the test's cluster (--address): JSONL appended and resumed, Parquet written whole."""
    out = tmp_path / "out.jsonl"
    first = run([str(corpus), "--output", str(out), "--address", cluster, "--workers", "2"])
    assert first.returncode == 0, first.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in corpus.iterdir())
    assert sum(r["error"] is not None for r in rows) == 2
    assert "8 files transcribed (2 with an error), 0 already there" in first.stderr
    # A job stopped after some rows: the rest only.
    out.write_text("\n".join(out.read_text().splitlines()[:5]) + "\n" + '{"path": "cut sh')
    again = run([str(corpus), "--output", str(out), "--address", cluster, "--workers", "2"])
    assert again.returncode == 0, again.stderr
    assert "3 files transcribed (0 with an error), 5 already there" in again.stderr
    paths = [json.loads(line)["path"] for line in out.read_text().splitlines() if line.startswith('{"path": "/')]
    assert sorted(set(paths)) == sorted(str(p) for p in corpus.iterdir())

    parquet = tmp_path / "out.parquet"
    done = run([str(corpus / "*.flac"), "--output", str(parquet), "--address", cluster, "-q"])
    assert done.returncode == 0, done.stderr
    assert "nemotron-cpp:" not in done.stderr and "files (" not in done.stderr  # -q: Ray's own notes only
    import pyarrow.parquet as pq

    table = pq.read_table(parquet)
    assert table.num_rows == 7 and table.column_names == ["path", "text", "segments", "words", "duration", "error"]
    assert not (tmp_path / "out.parquet.partial.jsonl").exists()


def test_command_line_errors(tmp_path: Path) -> None:
    bad = run([str(tmp_path), "--output", str(tmp_path / "out.txt")])
    assert bad.returncode == 1 and "the output is a .jsonl or .parquet file" in bad.stderr
    missing = run([str(tmp_path / "nowhere.jsonl"), "--output", str(tmp_path / "o.jsonl")])
    assert missing.returncode == 1 and "no such folder, glob match or manifest" in missing.stderr
