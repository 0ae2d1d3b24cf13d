"""Corpus transcription on a Ray cluster: ``ray.data`` in, one row out per row in, nothing lost.

Needs the ``ray`` extra (``pip install "nemotron-cpp[ray]"``). :class:`Transcriber` is a callable class for
:meth:`ray.data.Dataset.map_batches`: each Ray worker (an actor) loads the model once, memory-mapped, so
the workers on one node share the weights' pages, and transcribes its rows as
:meth:`NemotronModel.transcribe` does. :func:`transcribe_dataset` does the wiring in one call:

.. code-block:: python

    import ray.data
    from nemotron_cpp.ray import transcribe_dataset

    ds = ray.data.from_items([{"path": p} for p in paths])
    out = transcribe_dataset(ds, model="nemotron-speech-streaming-en-0.6b.q8_0", concurrency=8)
    out.write_parquet("transcripts/")

A row names its audio by a ``path`` (or NeMo manifests' ``audio_filepath``) column, or holds it in an
``audio`` column: the bytes of an encoded file or of 16-bit PCM, or float samples, with a ``sample_rate``
column where they are raw. The result keeps the row's columns and adds ``text``, ``segments`` (text,
start, end), ``words`` (text, start, end, confidence), ``duration`` (seconds) and ``error``: a row whose
audio cannot be read, decoded or recognized gets the reason there (and no text) instead of failing the
job, so the output has exactly one row per input row.
"""

from __future__ import annotations

import csv
import errno
import glob
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["Transcriber", "transcribe_dataset", "transcribe_corpus", "list_inputs", "RESULT_SCHEMA", "PATH_COLUMNS"]

#: The columns that may name a row's audio file, in the order they are looked for.
PATH_COLUMNS = ("path", "audio_filepath")

try:
    import pyarrow as pa  # type: ignore[import-untyped]  # no stubs
except ImportError:  # pragma: no cover - the extra's dependency
    raise ImportError('nemotron_cpp.ray needs the ray extra: pip install "nemotron-cpp[ray]"') from None

#: The columns a transcription adds, as Arrow types (Parquet keeps them as they are).
RESULT_SCHEMA = pa.schema([
    ("text", pa.string()),
    ("segments", pa.list_(pa.struct([("text", pa.string()), ("start", pa.float64()), ("end", pa.float64())]))),
    ("words", pa.list_(pa.struct([("text", pa.string()), ("start", pa.float64()), ("end", pa.float64()),
                                  ("confidence", pa.float64())]))),
    ("duration", pa.float64()),
    ("error", pa.string()),
])


class Transcriber:
    """Transcribes batches of rows (``pyarrow.Table``) with one model, loaded when the worker starts.

    ``model`` is what :class:`NemotronModel` takes (a path or a registered name; ``None``: the demo
    model); ``n_threads`` its threads (match the worker's CPUs). ``latency_ms``, ``language``,
    ``hotwords``, ``beam_size`` and ``endpointing`` are :meth:`NemotronModel.transcribe`'s.
    """

    def __init__(self, model: Optional[str] = None, *, n_threads: Optional[int] = 1, latency_ms: Optional[int] = None,
                 language: Optional[str] = None, hotwords: Optional[Sequence[Any]] = None, beam_size: int = 1,
                 endpointing: bool = True) -> None:
        import warnings

        from .demo import DemoModelWarning
        from .model import NemotronModel

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DemoModelWarning)  # the caller chose it; one note per worker is noise
            self.model = NemotronModel(model, n_threads=n_threads)
        self.options: Dict[str, Any] = dict(latency_ms=latency_ms, language=language, beam_size=beam_size,
                                            endpointing=endpointing,
                                            hotwords=list(hotwords) if hotwords else None)
        if hotwords:
            self.model.check_hotwords(hotwords)  # a bad phrase fails the job at once, not every row

    def __call__(self, batch: "pa.Table") -> "pa.Table":
        rows = batch.to_pylist()
        results = [self.transcribe_row(row) for row in rows]
        out = batch
        for field in RESULT_SCHEMA:
            if field.name in out.column_names:
                out = out.drop_columns([field.name])  # a rerun's results replace the earlier ones
            out = out.append_column(field, pa.array([r[field.name] for r in results], type=field.type))
        return out

    def transcribe_row(self, row: Dict[str, Any]) -> Dict[str, Any]:
        """One row's result columns; an error in ``error``, never an exception."""
        try:
            audio, rate = _audio_of(row)
            t = self.model.transcribe(audio, sample_rate=rate, **self.options)
        except Exception as e:  # noqa: BLE001 - a row that cannot be transcribed is reported, the job goes on
            return {"text": None, "segments": [], "words": [], "duration": None,
                    "error": f"{type(e).__name__}: {e}"}
        return {"text": t.text,
                "segments": [{"text": s.text, "start": s.start, "end": s.end} for s in t.segments],
                "words": [{"text": w.text, "start": w.start, "end": w.end, "confidence": w.confidence} for w in t.words],
                "duration": t.duration, "error": None}


def _audio_of(row: Dict[str, Any]) -> Any:
    for column in PATH_COLUMNS:
        if row.get(column) is not None:
            return os.fspath(row[column]), None
    if row.get("audio") is None:
        raise ValueError(f"the row has no audio: give it a {' or '.join(PATH_COLUMNS)} column or an audio column")
    audio = row["audio"]
    rate = row.get("sample_rate")
    if isinstance(audio, (list, tuple)):
        audio = np.asarray(audio, dtype=np.float32)
    return audio, int(rate) if rate is not None else None


def transcribe_dataset(ds: Any, model: Optional[str] = None, *, latency_ms: Optional[int] = None,
                       concurrency: Union[int, Tuple[int, int]] = 1, num_cpus_per_worker: int = 1, batch_size: int = 8,
                       language: Optional[str] = None, hotwords: Optional[Sequence[Any]] = None, beam_size: int = 1,
                       endpointing: bool = True) -> Any:
    """``ds`` with every row transcribed by ``concurrency`` workers (an int, or Ray's (min, max) for an
    autoscaling pool), each holding one model with ``num_cpus_per_worker`` CPUs and as many threads.
    Lazy, as Ray datasets are: write or iterate the result to run it. See :class:`Transcriber`."""
    if not isinstance(num_cpus_per_worker, int) or num_cpus_per_worker < 1:
        raise ValueError(f"num_cpus_per_worker must be a positive whole number, not {num_cpus_per_worker!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive whole number, not {batch_size!r}")
    import ray.data

    pool = (ray.data.ActorPoolStrategy(min_size=concurrency[0], max_size=concurrency[1])
            if isinstance(concurrency, tuple) else ray.data.ActorPoolStrategy(size=concurrency))
    return ds.map_batches(
        Transcriber, batch_format="pyarrow", batch_size=batch_size, compute=pool,
        num_cpus=num_cpus_per_worker,
        fn_constructor_kwargs=dict(model=None if model is None else os.fspath(model), n_threads=num_cpus_per_worker,
                                   latency_ms=latency_ms, language=language, hotwords=hotwords,
                                   beam_size=beam_size, endpointing=endpointing))



# ---- corpus jobs: `nemotron-cpp transcribe-dataset` ---------------------------------------------------

#: File names taken from a folder or a glob: what libsndfile reads.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au", ".caf", ".w64", ".rf64")


def list_inputs(source: str) -> List[str]:
    """The audio files a corpus job reads: a folder (its audio files, recursively), a glob, or a manifest
    (JSONL, as NeMo writes them, CSV or Parquet) with a ``path`` or ``audio_filepath`` column, whose
    relative paths are taken from the manifest's folder."""
    path = Path(source)
    if path.is_dir():
        return sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if any(c in source for c in "*?["):
        return sorted(p for p in glob.glob(source, recursive=True)
                      if os.path.isfile(p) and Path(p).suffix.lower() in AUDIO_SUFFIXES)
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, "no such folder, glob match or manifest", source)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    elif suffix == ".parquet":
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        rows = pq.read_table(path).to_pylist()
    else:
        raise ValueError(f"{source}: a manifest is .jsonl, .csv or .parquet; a folder or a glob names audio files")
    files = []
    for number, row in enumerate(rows, 1):
        name = next((row[c] for c in PATH_COLUMNS if isinstance(row, dict) and row.get(c)), None)
        if name is None:
            raise ValueError(f"{source}: row {number} has no {' or '.join(PATH_COLUMNS)} column")
        files.append(str(name) if os.path.isabs(str(name)) else str(path.parent / str(name)))
    return files


def _read_jsonl(path: Path) -> List[Dict[str, Any]]:
    rows = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short when a job was stopped: done again
                continue
    return rows


def transcribe_corpus(source: str, output: Union[str, "os.PathLike[str]"], *, model: Optional[str] = None,
                      address: Optional[str] = None, concurrency: int = 1, num_cpus_per_worker: int = 1,
                      batch_size: int = 8, latency_ms: Optional[int] = None, language: Optional[str] = None,
                      progress: Optional[Callable[[Dict[str, Any]], None]] = None) -> Dict[str, Any]:
    """Transcribes the files of ``source`` (see :func:`list_inputs`) on a Ray cluster into ``output``, a
    ``.jsonl`` (a row per file, appended as batches finish) or ``.parquet`` file (written at the end; until
    then the rows go to ``output.partial.jsonl``). Files already in the output (or its partial file) are
    skipped, so a stopped job resumes where it stopped. ``address``: the cluster's (``"auto"``: the one
    ``ray start`` runs here); ``None`` starts a local one. ``progress`` gets the counts after each batch.
    Returns the final counts: files, done before, done now, errors, audio seconds, wall seconds."""
    import logging
    import time

    # This job reports its own progress; Ray Data's bars would bury it (read when ray.data is first imported).
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    import ray
    import ray.data

    out = Path(output)
    if out.suffix.lower() not in (".jsonl", ".parquet"):
        raise ValueError(f"{out}: the output is a .jsonl or .parquet file")
    files = list_inputs(source)
    partial = out if out.suffix.lower() == ".jsonl" else out.with_name(out.name + ".partial.jsonl")
    written: List[Dict[str, Any]] = []  # a Parquet output's rows from an earlier run
    if out.suffix.lower() == ".parquet" and out.exists():
        import pyarrow.parquet as pq

        written = pq.read_table(out).to_pylist()
    done_paths = {r.get("path") for r in written + _read_jsonl(partial)}
    todo = [f for f in files if f not in done_paths]
    counts: Dict[str, Any] = {"files": len(files), "skipped": len(files) - len(todo), "done": 0, "errors": 0,
                              "audio_seconds": 0.0, "wall_seconds": 0.0}
    start = time.monotonic()
    if todo:
        if not ray.is_initialized():
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False,
                     include_dashboard=None if address else False)
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        # Blocks of about a batch each, and at least two per worker, so that every worker has work.
        blocks = min(len(todo), max(-(-len(todo) // batch_size), 2 * concurrency))
        ds = ray.data.from_items([{"path": f} for f in todo], override_num_blocks=blocks)
        result = transcribe_dataset(ds, model, latency_ms=latency_ms, concurrency=concurrency,
                                    num_cpus_per_worker=num_cpus_per_worker, batch_size=batch_size, language=language)
        cut = partial.exists() and partial.stat().st_size > 0 and not partial.read_bytes().endswith(b"\n")
        with open(partial, "a", encoding="utf-8") as f:
            if cut:  # the last line of a stopped job stays on its own (and is done again)
                f.write("\n")
            for batch in result.iter_batches(batch_format="pyarrow", batch_size=None):
                for row in batch.to_pylist():
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
                    counts["done"] += 1
                    counts["errors"] += row["error"] is not None
                    counts["audio_seconds"] += row["duration"] or 0.0
                f.flush()
                counts["wall_seconds"] = time.monotonic() - start
                if progress is not None:
                    progress(dict(counts))
    if out.suffix.lower() == ".parquet" and (todo or not out.exists()):
        import pyarrow.parquet as pq

        seen = {r.get("path") for r in written}
        rows = written + [r for r in _read_jsonl(partial) if r.get("path") not in seen]
        schema = pa.schema([("path", pa.string()), *RESULT_SCHEMA])
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), out)
        partial.unlink(missing_ok=True)
    counts["wall_seconds"] = time.monotonic() - start
    return counts
