"""A Hugging Face Hub on 127.0.0.1 that serves file downloads as the real Hub does, for tests without the internet.

``huggingface_hub`` fetches a file in two requests, and this server answers both as huggingface.co answers
them for a file stored in LFS:

- ``HEAD /{repo_id}/resolve/{revision}/{filename}``: a 302 to where the bytes are (a second server, on
  another port: the client follows redirects within the Hub's origin and stops at the one that leaves
  it, reading the file's metadata from that response), with ``X-Repo-Commit``
  (the commit the revision resolves to; the client refuses a response without it), ``X-Linked-Etag``
  (the file's sha256 in quotes: the name of the blob in the cache) and ``X-Linked-Size`` (the size the
  client checks the transfer against). No ``X-Xet-Hash`` header, so the client downloads over plain
  HTTP instead of Xet storage.
- ``GET /cdn/{sha256}``: the bytes, with ``Content-Length`` and ``Accept-Ranges``; a ``Range:
  bytes=N-`` request (how the client resumes a broken transfer) gets ``206`` and ``Content-Range``.

Errors carry the Hub's ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``), which
the client turns into its typed exceptions. Every request is recorded, and two faults can be armed: the
next content GETs send other bytes of the same length, or the next one closes the connection part way.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import unquote, urlsplit

_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<filename>.+)$")
_CDN = re.compile(r"^/cdn/(?P<sha256>[0-9a-f]{64})$")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    range: Optional[str]
    status: int


class LoopbackHub:
    """``with LoopbackHub() as hub: hub.add(repo_id, commit, filename, content)``; ``hub.url`` is HF_ENDPOINT."""

    def __init__(self) -> None:
        self._commits: Dict[str, str] = {}
        self._files: Dict[Tuple[str, str], bytes] = {}
        self._blobs: Dict[str, bytes] = {}
        self._lock = threading.Lock()
        self.requests: List[Request] = []
        #: The next this many content GETs send other bytes of the right length.
        self.corrupt_gets = 0
        #: The next content GET closes the connection after this many bytes.
        self.cut_after: Optional[int] = None
        # The Hub answers look-ups; the content server, like the Hub's CDN, has an origin of its own.
        self._hub = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._cdn = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))

    @property
    def url(self) -> str:
        return _url(self._hub)

    @property
    def cdn_url(self) -> str:
        return _url(self._cdn)

    def add(self, repo_id: str, commit: str, filename: str, content: bytes) -> None:
        self._commits[repo_id] = commit
        self._files[(repo_id, filename)] = content
        self._blobs[hashlib.sha256(content).hexdigest()] = content

    def reset(self) -> None:
        """Forgets the requests and disarms the faults."""
        with self._lock:
            self.requests.clear()
            self.corrupt_gets, self.cut_after = 0, None

    def sent(self, method: str, prefix: str) -> List[Request]:
        """The requests with this method whose path starts with ``prefix``."""
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path.startswith(prefix)]

    def __enter__(self) -> "LoopbackHub":
        for server in (self._hub, self._cdn):
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        for server in (self._hub, self._cdn):
            server.shutdown()
            server.server_close()

    # ---- what the handler asks -------------------------------------------------------------------

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def _take_faults(self) -> Tuple[bool, Optional[int]]:
        with self._lock:
            corrupt, cut = self.corrupt_gets > 0, self.cut_after
            self.corrupt_gets = max(0, self.corrupt_gets - 1)
            self.cut_after = None
            return corrupt, cut


def _url(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host!s}:{port}"


def _handler(hub: LoopbackHub) -> Any:
    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the test reads hub.requests instead

        def _serve(self, body: bool) -> None:
            path = urlsplit(self.path).path
            resolve, cdn = _RESOLVE.match(path), _CDN.match(path)
            if resolve:
                status = self._resolve(unquote(resolve["repo"]), unquote(resolve["revision"]),
                                       unquote(resolve["filename"]))
            elif cdn and cdn["sha256"] in hub._blobs:
                status = self._content(hub._blobs[cdn["sha256"]], body)
            else:  # e.g. the client's look-up of agent harnesses: not part of a download
                status = self._error(404, "EntryNotFound")
            hub._record(Request(self.command, path, self.headers.get("Range"), status))

        def _error(self, status: int, code: str, commit: Optional[str] = None) -> int:
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            if commit is not None:
                self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return status

        def _resolve(self, repo: str, revision: str, filename: str) -> int:
            commit = hub._commits.get(repo)
            if commit is None:
                return self._error(404, "RepoNotFound")
            if revision not in ("main", commit):
                return self._error(404, "RevisionNotFound")
            content = hub._files.get((repo, filename))
            if content is None:
                return self._error(404, "EntryNotFound", commit)
            sha256 = hashlib.sha256(content).hexdigest()
            self.send_response(302)
            self.send_header("Location", f"{hub.cdn_url}/cdn/{sha256}")
            self.send_header("X-Repo-Commit", commit)
            self.send_header("X-Linked-Etag", f'"{sha256}"')
            self.send_header("X-Linked-Size", str(len(content)))
            self.send_header("ETag", f'"{sha256}"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return 302

        def _content(self, content: bytes, body: bool) -> int:
            corrupt, cut = hub._take_faults() if body else (False, None)
            if corrupt:  # the same length, other bytes: only a checksum can tell
                content = bytes(b ^ 0x5A for b in content)
            start = 0
            wanted = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if wanted and int(wanted[1]) < len(content):
                start = int(wanted[1])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(content) - start))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if body:
                end = len(content) if cut is None else start + cut
                self.wfile.write(content[start:end])
                self.wfile.flush()
                if cut is not None:
                    # Fewer bytes than Content-Length promised, then the end of the connection: a broken transfer.
                    self.close_connection = True
            return 206 if start else 200

    return Handler
