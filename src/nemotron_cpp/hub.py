"""Getting model files: a registry of known GGUF files, fetched through ``huggingface_hub`` and verified.

A registered name stands for one file at one pinned revision with its size and sha256. Fetching goes
through ``hf_hub_download``, so the Hugging Face cache, ``HF_HOME``/``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``,
tokens and resumed transfers all work as for any other Hub file. A file of the registry is checked
before it is handed out; one that fails the check is deleted from the cache and raises
:class:`~nemotron_cpp.ChecksumError`. Any other GGUF file is fetched by repo id and file name, unchecked
(the engine's loader still validates its structure).

``huggingface_hub`` is imported only when something is fetched, so ``import nemotron_cpp`` stays fast.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

from .errors import ChecksumError, DownloadError

__all__ = ["KnownModel", "RECOMMENDED_MODEL", "MULTILINGUAL_MODEL", "register", "unregister", "known_models", "is_known",
           "looks_like_path", "download"]

_log = logging.getLogger("nemotron_cpp")


def looks_like_path(text: str) -> bool:
    """True for text that names a file rather than a model: it holds a directory separator or ends in
    a model file's extension. Such text is never looked up in the registry, so a missing file is
    reported as a missing file."""
    return any(s and s in text for s in (os.sep, os.altsep)) or text.lower().endswith((".gguf", ".nemo"))


@dataclass(frozen=True)
class KnownModel:
    """A model file the registry knows: where it lives on the Hugging Face Hub and what it must be."""

    #: The short name that stands for the file (``NemotronModel(name)``, ``nemotron-cpp download NAME``).
    name: str
    repo_id: str
    filename: str
    #: A commit hash: a branch could move, and the size and sha256 below hold for one commit only.
    revision: str
    size: int
    sha256: str
    #: The GGUF layout: ``"asr"`` (NVIDIA's files) or ``"nemo"`` (the C++ port's).
    layout: str
    description: str

    def __post_init__(self) -> None:
        if len(self.revision) != 40 or any(c not in "0123456789abcdef" for c in self.revision):
            raise ValueError(f"{self.name}: revision must be a 40-digit commit hash, not {self.revision!r}")
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise ValueError(f"{self.name}: sha256 must be 64 lowercase hex digits, not {self.sha256!r}")
        if self.size <= 0:
            raise ValueError(f"{self.name}: size must be positive, not {self.size}")
        if "/" in self.name or looks_like_path(self.name):
            raise ValueError(f"{self.name}: a model name must not look like a path or a repo id")


#: NVIDIA's own GGUF file, pinned as NVIDIA's NeMo-Speech.cpp model index pins it: the file README's
#: "Getting the model" and the demo model's notice point to.
RECOMMENDED_MODEL = KnownModel(
    name="nemotron-speech-streaming-en-0.6b.q8_0",
    repo_id="nvidia/nemotron-speech-streaming-en-0.6b",
    filename="nemotron-speech-streaming-en-0.6b.q8_0.gguf",
    revision="ebe59e5a817142986528bbbee5dba8db7b38ed50",
    size=699872960,
    sha256="d9a01898d2a611c8764e23a1c2f45e70bbd5a425dc4de93692ac951dd603812d",
    layout="asr",
    description="NVIDIA's nemotron-speech-streaming-en-0.6b (Mar-2026 checkpoint), q8_0, written by "
                "NeMo-Speech.cpp's converter; NVIDIA Open Model License",
)

#: NVIDIA's multilingual model (40 language-locales and automatic detection; see README, "Languages"),
#: pinned the same way.
MULTILINGUAL_MODEL = KnownModel(
    name="nemotron-3.5-asr-streaming-0.6b.q8_0",
    repo_id="nvidia/nemotron-3.5-asr-streaming-0.6b",
    filename="nemotron-3.5-asr-streaming-0.6b.q8_0.gguf",
    revision="1c8deaecc64b91f034d73e08dd8b64625eb3395d",
    size=741548352,
    sha256="a5c435f294eea8f88ce68dd27b8c3bfea7f777cb2fbba04fcd30eaa555f429ae",
    layout="asr",
    description="NVIDIA's multilingual nemotron-3.5-asr-streaming-0.6b, q8_0, written by NeMo-Speech.cpp's "
                "converter; NVIDIA Open Model License",
)

_REGISTRY: Dict[str, KnownModel] = {m.name: m for m in (RECOMMENDED_MODEL, MULTILINGUAL_MODEL)}


def register(model: KnownModel) -> Optional[KnownModel]:
    """Adds ``model`` to the registry under its name, replacing (and returning) an entry of that name."""
    previous = _REGISTRY.get(model.name)
    _REGISTRY[model.name] = model
    return previous


def unregister(name: str) -> None:
    """Removes a name from the registry; a name it does not hold raises ``KeyError``."""
    del _REGISTRY[name]


def known_models() -> Tuple[KnownModel, ...]:
    """Every registered file, in the order they were registered."""
    return tuple(_REGISTRY.values())


def is_known(name: str) -> bool:
    """True when ``name`` is a registered model name."""
    return name in _REGISTRY


def _known_names() -> str:
    return ", ".join(_REGISTRY) or "none"


@dataclass(frozen=True)
class _Target:
    """What to fetch: a file of a repository at a revision, and the registry entry that vouches for it."""

    repo_id: str
    filename: str
    revision: Optional[str]
    known: Optional[KnownModel]

    def __str__(self) -> str:
        at = f"@{self.revision}" if self.revision else ""
        where = f"{self.repo_id}{at}/{self.filename}"
        return f"{self.known.name} ({where})" if self.known is not None else where

    @property
    def command(self) -> str:
        """The command line that fetches this file."""
        if self.known is not None:
            return f"nemotron-cpp download {self.known.name}"
        revision = f" --revision {self.revision}" if self.revision else ""
        return f"nemotron-cpp download {self.repo_id} --filename {self.filename}{revision}"


def _resolve(name_or_repo: str, filename: Optional[str], revision: Optional[str]) -> _Target:
    known = _REGISTRY.get(name_or_repo)
    if known is not None:
        if filename not in (None, known.filename) or revision not in (None, known.revision):
            raise ValueError(f"{known.name} names one file at one revision ({known.repo_id}@{known.revision}/"
                             f"{known.filename}); to fetch another, pass the repo id {known.repo_id}")
        return _Target(known.repo_id, known.filename, known.revision, known)
    if "/" not in name_or_repo:
        raise ValueError(f"{name_or_repo!r} is not a known model name (known: {_known_names()}) and not a Hugging "
                         f"Face repo id (owner/name)")
    # A repo id: a file the registry knows keeps its check when asked for at its pinned revision or without one.
    candidates = [m for m in _REGISTRY.values() if m.repo_id == name_or_repo
                  and filename in (None, m.filename) and revision in (None, m.revision)]
    if len(candidates) == 1:
        return _Target(name_or_repo, candidates[0].filename, candidates[0].revision, candidates[0])
    if filename is None:
        listed = f": one of {', '.join(m.filename for m in candidates)}" if candidates else ""
        raise ValueError(f"{name_or_repo}: give the GGUF file to fetch from this repository (filename=, or "
                         f"--filename){listed}")
    return _Target(name_or_repo, filename, revision, None)


def download(name_or_repo: str, filename: Optional[str] = None, revision: Optional[str] = None) -> Path:
    """The local path of a model file, fetched into the Hugging Face cache unless it is there already.

    ``name_or_repo`` is a registered name (see :func:`known_models`), which fixes the file and its
    revision, or a Hugging Face repo id (``owner/name``) with ``filename`` and, optionally,
    ``revision`` (a branch, tag or commit; default ``main``). A file the registry knows is checked
    against its size and sha256; any other is handed out as the Hub sent it.

    Raises
    ------
    ValueError
        An unknown name (the message lists the known ones), or a repo id without ``filename``.
    DownloadError
        The file is not in the cache and cannot be fetched (offline, not found, no access, network).
    ChecksumError
        The file is not the registered one; it has been deleted from the cache.
    """
    target = _resolve(name_or_repo, filename, revision)
    path = Path(_fetch(target))
    if target.known is not None:
        _verify(path, target.known)
    return path


def _fetch(target: _Target) -> str:
    """``hf_hub_download``, its failures said in terms of the file and of what to do."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    try:
        return hf_hub_download(target.repo_id, target.filename, revision=target.revision)
    except LocalEntryNotFoundError as e:  # before EntryNotFoundError: some versions derive it from that
        why = ("offline mode is on (HF_HUB_OFFLINE)" if constants.HF_HUB_OFFLINE
               else f"the Hub ({constants.ENDPOINT}) could not be reached")
        raise DownloadError(f"{target} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and {why}: "
                            f"run `{target.command}` where the Hub can be reached (HF_HOME or HF_HUB_CACHE "
                            f"choose the cache it fills)") from e
    except RepositoryNotFoundError as e:  # gated repositories included
        raise DownloadError(f"cannot fetch {target}: the repository does not exist or needs a token with access "
                            f"(HF_TOKEN, or `hf auth login`)") from e
    except RevisionNotFoundError as e:
        raise DownloadError(f"cannot fetch {target}: the repository has no revision {target.revision}") from e
    except EntryNotFoundError as e:
        raise DownloadError(f"cannot fetch {target}: the repository has no such file at that revision") from e
    except (ValueError, TypeError):
        raise  # a malformed repo id or file name: huggingface_hub's message says what is wrong with it
    except Exception as e:
        # The transfer failed: an HTTP status, a full disk, or an error of the HTTP client, whose type depends
        # on huggingface_hub's version (requests, httpx or httpx2).
        raise DownloadError(f"cannot fetch {target}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e


def _verify(path: Path, known: KnownModel) -> None:
    """Checks a file of the registry, deleting it from the cache when it is not the registered file.

    The size is compared every time (a stat). The sha256 of 700 MB takes 0.4-2 s, where a mapped model
    otherwise loads in milliseconds, so it is computed once per file: after the hash matches, a marker
    records the file's path, size and modification time, and loads that find the marker unchanged skip
    the hash. A new download, or a file another tool put into the cache, has no marker and is hashed.
    """
    blob = Path(os.path.realpath(path))
    stat = blob.stat()
    if stat.st_size != known.size:
        _discard(path, blob)
        raise ChecksumError(_mismatch(known, "size", f"{known.size} bytes", f"{stat.st_size} bytes"))
    marker = _marker_dir() / known.sha256
    stamp = f"{blob}\t{stat.st_size}\t{stat.st_mtime_ns}\n"
    try:
        if marker.read_text(encoding="utf-8") == stamp:
            return
    except OSError:
        pass  # no marker yet, or an unreadable one: hash
    digest = _sha256(blob)
    if digest != known.sha256:
        _discard(path, blob)
        raise ChecksumError(_mismatch(known, "sha256", known.sha256, digest))
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        partial = marker.with_name(f"{marker.name}.{os.getpid()}")
        partial.write_text(stamp, encoding="utf-8")
        os.replace(partial, marker)  # whole or absent, when processes verify at once
    except OSError as e:  # a read-only cache home: the next load hashes again
        _log.debug("cannot record the check of %s in %s: %s", blob, marker, e)


def _marker_dir() -> Path:
    """Where the markers of checked files live: beside the Hugging Face cache, not in it, where
    ``hf cache`` would take them for a damaged repository."""
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "nemotron-cpp" / "verified"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _discard(link: Path, blob: Path) -> None:
    """Deletes a cached file that failed its check: the snapshot's link and the blob it points to, so
    the cache holds nothing that looks like a valid copy and the next fetch downloads it again."""
    for path in (link, blob):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass  # without symlinks the snapshot holds the file itself: link and blob are one path


def _mismatch(known: KnownModel, what: str, expected: str, got: str) -> str:
    return (f"{known.name}: the file fetched from {known.repo_id}@{known.revision}/{known.filename} is not the "
            f"registered one: {what} {got}, expected {expected}. It was deleted from the cache; fetch it again "
            f"(`nemotron-cpp download {known.name}`), and if this repeats, something between the Hub and this "
            f"machine alters the file")
