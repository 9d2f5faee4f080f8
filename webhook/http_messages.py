"""HTTP/1.1 messages for the event-loop worker: a parsed request, its WSGI environ, and
responses as the bytes that go on the wire (head and body in one write, one TLS record).
"""

from __future__ import annotations

import functools
import io
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson

#: Headers the server sets itself; an application's own values for them are dropped.
_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"date", b"upgrade"}
)

REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class Request:
    """A complete request: the body is read before the application sees it."""

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    keep_alive: bool
    http_version: str


@functools.lru_cache(maxsize=2)
def _date(second: int) -> bytes:
    return formatdate(second, usegmt=True).encode("ascii")


def date_header() -> bytes:
    return _date(int(time.time()))


@functools.lru_cache(maxsize=256)
def _environ_key(name: bytes) -> str:
    return "HTTP_" + name.decode("latin-1").upper().replace("-", "_")


def wsgi_environ(
    request: Request, peer: tuple[str, int], server: tuple[str, int]
) -> dict[str, Any]:
    """PEP 3333's environ for a request whose body is already in memory."""
    path, _, query = request.target.partition(b"?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method.decode("latin-1"),
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query.decode("latin-1"),
        "SERVER_NAME": server[0],
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": f"HTTP/{request.http_version}",
        "REMOTE_ADDR": peer[0],
        "REMOTE_PORT": str(peer[1]),
        "CONTENT_LENGTH": str(len(request.body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "https",
        "wsgi.input": io.BytesIO(request.body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in request.headers:
        key = _environ_key(name)
        if key == "HTTP_CONTENT_TYPE":
            environ["CONTENT_TYPE"] = value.decode("latin-1")
        elif key in ("HTTP_CONTENT_LENGTH", "HTTP_TRANSFER_ENCODING"):
            continue  # the body is whole: CONTENT_LENGTH says its size
        elif key in environ:  # a repeated header: one value, comma-separated (RFC 9110)
            environ[key] += "," + value.decode("latin-1")
        else:
            environ[key] = value.decode("latin-1")
    return environ


def serialize(
    status: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    *,
    close: bool,
    head_only: bool = False,
) -> bytes:
    """A whole response: status line, headers, Content-Length, Date, and the body."""
    lines = [b"HTTP/1.1 ", status.encode("latin-1"), b"\r\n"]
    for name, value in headers:
        encoded = name.encode("latin-1")
        if encoded.lower() in _HOP_BY_HOP:
            continue
        lines += [encoded, b": ", value.encode("latin-1"), b"\r\n"]
    lines += [b"Content-Length: ", str(len(body)).encode(), b"\r\nDate: ", date_header()]
    lines.append(b"\r\nConnection: close\r\n\r\n" if close else b"\r\n\r\n")
    if not head_only:
        lines.append(body)
    return b"".join(lines)


def header_value(request: Request, name: bytes) -> str | None:
    """One header's value (``name`` in lower case), repeated ones comma-separated as
    :func:`wsgi_environ` joins them; None if the request has none."""
    values = [value for key, value in request.headers if key.lower() == name]
    return b",".join(values).decode("latin-1") if values else None


JSON_HEADERS = (("Content-Type", "application/json"),)


def json_response(status: int, body: bytes, *, close: bool) -> bytes:
    """A whole response carrying ``body``, already encoded JSON, with ``status``."""
    return serialize(f"{status} {REASONS.get(status, 'Error')}", JSON_HEADERS, body, close=close)


def error_response(status: int, message: str, *, close: bool) -> bytes:
    """The JSON error body the application's own errors have: ``{"error", "status"}``."""
    return json_response(status, orjson.dumps({"error": message, "status": status}), close=close)


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def call_application(app: WSGIApp, environ: dict[str, Any], close: bool) -> bytes:
    """Run a WSGI application to completion and return its response's bytes."""
    started: list[Any] = []
    chunks: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if exc_info is not None and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = [status, headers]
        return chunks.append  # the legacy write() callable

    result = app(environ, start_response)
    try:
        chunks.extend(result)
    finally:
        closer = getattr(result, "close", None)
        if closer is not None:
            closer()
    status, headers = started
    head_only = environ["REQUEST_METHOD"] == "HEAD"
    return serialize(status, headers, b"".join(chunks), close=close, head_only=head_only)
