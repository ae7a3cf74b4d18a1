"""A loopback HTTP file server with byte-range support, for scraper tests and the offline demo.

Python's ``http.server`` ignores ``Range`` headers, and downloaders (yt-dlp) that ask for a byte range
then get the whole file with status 200 — or, for section downloads, an empty result that looks like
success.  :class:`RangeRequestHandler` answers ranges properly:

- ``GET`` with ``Range: bytes=a-b`` / ``a-`` / ``-n`` -> 206 with ``Content-Range`` and exactly those bytes;
  an unsatisfiable or malformed range -> 416 with ``Content-Range: bytes */size``; several ranges
  (``a-b,c-d``) -> 200 with the whole file (allowed by RFC 9110, and no downloader needs more);
- ``GET`` without Range -> 200, ``HEAD`` -> the same headers with no body; ``Accept-Ranges: bytes`` always;
- a missing file -> 404; a path that leaves the folder (``..``, absolute, backslashes, symlinks out) -> 403.

URLs map to files by :meth:`RangeRequestHandler.resolve`: first the ``routes`` given to
:func:`serve_directory` (keys are a full request target such as ``/watch?v=abc`` or a bare path
``/video``; values are files, relative to the folder or absolute), then the URL path as a file
under the folder (``/<id>.mp4`` -> ``<folder>/<id>.mp4``).  To answer some URLs differently
(a bot check, a redirect, an error), subclass the handler, override :meth:`do_GET` (and
:meth:`do_HEAD`), answer those paths with :meth:`send_text`, and call ``super().do_GET()`` for the
rest; or override :meth:`resolve` to map URLs to files another way.  Pass the class as ``handler``.

Requests are logged at DEBUG level only; a client that hangs up mid-transfer is not an error.
"""

from __future__ import annotations

import contextlib
import http.server
import ipaddress
import logging
import mimetypes
import os
import re
import socket
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from avatar_gen.errors import UserError

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
# mimetypes reads the system's tables, which minimal containers may lack; these must be right.
CONTENT_TYPES = {
    ".mp4": "video/mp4", ".m4a": "audio/mp4", ".webm": "video/webm", ".mkv": "video/x-matroska",
    ".wav": "audio/wav", ".mp3": "audio/mpeg", ".json": "application/json", ".csv": "text/csv; charset=utf-8",
    ".txt": "text/plain; charset=utf-8", ".html": "text/html; charset=utf-8", ".png": "image/png",
    ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
}
_RANGE_PATTERN = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


class RangeNotSatisfiable(ValueError):
    """The Range header asks for bytes the file does not have (or is malformed)."""


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The inclusive byte span ``(first, last)`` a single-range ``Range`` header asks for.

    Returns None when the whole file should be sent (several ranges).  Raises RangeNotSatisfiable
    for a malformed header or a span outside a file of ``size`` bytes.
    """
    if "," in header:
        return None
    match = _RANGE_PATTERN.match(header)
    if match is None:
        raise RangeNotSatisfiable(f"malformed Range header {header!r}")
    first_text, last_text = match.groups()
    if not first_text and not last_text:
        raise RangeNotSatisfiable(f"malformed Range header {header!r}")
    if not first_text:  # suffix range: the last N bytes
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(f"empty suffix range {header!r}")
        return max(0, size - suffix), size - 1
    first = int(first_text)
    last = size - 1 if not last_text else min(int(last_text), size - 1)
    if first >= size or (last_text and int(last_text) < first):
        raise RangeNotSatisfiable(f"range {header!r} outside a {size}-byte file")
    return first, last


class RangeRequestHandler(http.server.BaseHTTPRequestHandler):
    """Serves the files of ``self.server.root`` with Range support; see the module docstring."""

    server_version = "AvatarGenTestServer/1.0"
    protocol_version = "HTTP/1.0"  # one request per connection, so shutting down never waits on keep-alive
    timeout = 30  # seconds a silent client may hold a connection

    # ----- mapping URLs to files -----
    def resolve(self, path: str, query: dict[str, list[str]]) -> Path | None:
        """The file for this request, or None (-> 404).  Raises PermissionError to refuse it (-> 403).

        ``path`` is the percent-decoded URL path, ``query`` the parsed query string.
        """
        routes: Mapping[str, Path] = getattr(self.server, "routes", {})
        target = self.path.split("#", 1)[0]
        for key in (target, path):
            if key in routes:
                return routes[key]
        return self.file_under_root(path)

    def file_under_root(self, path: str) -> Path | None:
        """``<root>/<path>`` if it is a file inside the root; PermissionError for escapes."""
        relative = path.lstrip("/")
        if path.startswith("//") or "\\" in path or "\0" in path or any(p == ".." for p in relative.split("/")):
            raise PermissionError(path)
        root = Path(self.server.root)
        candidate = (root / relative).resolve()
        if not candidate.is_relative_to(root):
            raise PermissionError(path)
        return candidate if candidate.is_file() else None

    # ----- answering -----
    def do_GET(self) -> None:
        self._serve(send_body=True)

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def send_text(self, status: int, text: str, content_type: str = "text/plain; charset=utf-8",
                  headers: Mapping[str, str] | None = None) -> None:
        """Answer with a small text body (use it for error pages, bot checks, redirects)."""
        body = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_file(self, file_path: Path, send_body: bool = True) -> None:
        """Send ``file_path`` whole (200) or the part the Range header asks for (206 / 416)."""
        size = file_path.stat().st_size
        content_type = CONTENT_TYPES.get(file_path.suffix.lower()) or mimetypes.guess_type(file_path.name)[0] \
            or "application/octet-stream"
        span = None
        range_header = self.headers.get("Range")
        if range_header:
            try:
                span = parse_range(range_header, size)
            except RangeNotSatisfiable:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        first, last = span if span is not None else (0, size - 1)
        length = max(0, last - first + 1)
        self.send_response(206 if span is not None else 200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        if span is not None:
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.send_header("Last-Modified", self.date_time_string(int(file_path.stat().st_mtime)))
        self.end_headers()
        if not send_body or length == 0:
            return
        with open(file_path, "rb") as handle:
            handle.seek(first)
            remaining = length
            while remaining > 0:
                chunk = handle.read(min(CHUNK_BYTES, remaining))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)

    def _serve(self, send_body: bool) -> None:
        split = urlsplit(self.path)
        path = unquote(split.path)
        try:
            file_path = self.resolve(path, parse_qs(split.query))
        except PermissionError:
            self.send_text(403, "forbidden\n")
            return
        if file_path is None or not Path(file_path).is_file():
            self.send_text(404, "not found\n")
            return
        self.send_file(Path(file_path), send_body=send_body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's signature
        log.debug("%s %s", self.address_string(), format % args)


class _QuietThreadingServer(http.server.ThreadingHTTPServer):
    """Threads are joined on close (no thread outlives the server); aborted transfers are not errors."""

    daemon_threads = False
    block_on_close = True

    def handle_error(self, request, client_address) -> None:
        log.debug("request from %s ended early", client_address, exc_info=True)


def _check_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise UserError(f"serve_directory only binds loopback addresses (127.0.0.1, ::1), not {host!r}")


@contextlib.contextmanager
def serve_directory(folder: str | os.PathLike, host: str = "127.0.0.1", port: int = 0,
                    handler: type[RangeRequestHandler] = RangeRequestHandler,
                    routes: Mapping[str, str | os.PathLike] | None = None) -> Iterator[str]:
    """Serve ``folder`` over HTTP on a loopback address; yields the base URL (``http://127.0.0.1:PORT``).

    ``port=0`` picks a free port.  ``routes`` maps request targets (``/watch?v=<id>``) or paths to
    files (relative to ``folder`` or absolute).  The server and its threads are stopped on exit.
    """
    root = Path(folder).resolve()
    if not root.is_dir():
        raise UserError(f"folder to serve not found: {folder}")
    _check_loopback(host)
    server_class = _QuietThreadingServer
    if ":" in host:
        server_class = type("_QuietThreadingServer6", (_QuietThreadingServer,), {"address_family": socket.AF_INET6})
    server = server_class((host, port), handler)
    server.root = root
    server.routes = {key: (root / value if not Path(value).is_absolute() else Path(value))
                     for key, value in (routes or {}).items()}
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name=f"serve_directory:{server.server_address[1]}", daemon=True)
    thread.start()
    bound_host = f"[{host}]" if ":" in host else host
    try:
        yield f"http://{bound_host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
