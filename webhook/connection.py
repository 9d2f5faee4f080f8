"""One client connection of the event-loop worker: TLS handshake, HTTP/1.1 requests and
responses, each step with its own deadline, none of them holding a thread.

The socket is non-blocking and driven by the worker's event loop: the handshake and the
reading of a request advance only when bytes arrive, so a client that connects and
sends nothing, or trickles its headers a byte at a time, costs memory and a file
descriptor, never a thread. The deadlines are Go ``net/http``'s:

- ``handshake_seconds``: from accept to a completed TLS handshake;
- ``header_seconds`` (``ReadHeaderTimeout``): from a request's first byte to its last header;
- ``request_seconds`` (``ReadTimeout``): from a request's first byte to its last body byte;
- ``idle_seconds`` (``IdleTimeout``): waiting for the next request on a kept-alive
  connection, and for the first one on a new connection (clients open connections before
  they need them; closing one just as the client sends on it would fail that request);
- ``write_seconds`` (``WriteTimeout``): to hand a response to a client that does not read.

The worker checks the deadlines (:meth:`Connection.expire`) about twice a second. A body
over ``max_body_bytes`` is answered at once with the size-limit error and then read and
dropped, up to ``discard_bytes``, before the connection is closed: a client that writes
its whole body before reading (the API server's does not send ``Expect: 100-continue``)
then reads the error instead of a reset.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import httptools

from webhook.http_messages import Request, error_response

#: Bytes read from a connection per turn of the loop before the others get their turn.
READ_CHUNK = 64 * 1024
#: The most plaintext one TLS record carries. A read returns one record at most, and a
#: shorter one with nothing left inside TLS usually ends the client's write: the loop
#: then turns to the other connections and epoll (level-triggered, so bytes already in
#: the socket are reported at once) brings it back. Reading on would cost a system call
#: and an SSLWantReadError per request, and would serve a client whose next request has
#: just arrived ahead of every other connection: with 16 clients in a closed loop, the
#: p99 was 2.4-5 times higher that way (and the p50 lower).
TLS_RECORD_BYTES = 16 * 1024
READ_BUDGET = 256 * 1024
#: A request line plus headers larger than this is refused (431), as gunicorn and Go do.
MAX_HEADER_BYTES = 64 * 1024

HANDSHAKE, IDLE, HEADERS, BODY, RESPOND, CLOSED = range(6)


@dataclass(frozen=True)
class Limits:
    """Per-connection deadlines (seconds) and size limits (bytes); see the module doc."""

    handshake_seconds: float = 5.0
    header_seconds: float = 5.0
    request_seconds: float = 10.0
    idle_seconds: float = 120.0
    write_seconds: float = 10.0
    max_body_bytes: int = 8 * 1024 * 1024
    discard_bytes: int = 16 * 1024 * 1024
    max_header_bytes: int = MAX_HEADER_BYTES
    too_large_message: Callable[[int], str] = field(
        default=lambda limit: f"request body exceeds the {limit}-byte limit"
    )


class Owner(Protocol):
    """What a connection needs from its worker."""

    limits: Limits
    stopping: bool

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None: ...
    def remove_reader(self, fd: int) -> None: ...
    def add_writer(self, fd: int, callback: Callable[[], None]) -> None: ...
    def remove_writer(self, fd: int) -> None: ...
    def call_soon(self, callback: Callable[[], None]) -> None: ...
    def queue_handshake(self, connection: Connection) -> None: ...
    def respond(self, request: Request, peer: tuple[str, int], close: bool) -> bytes: ...
    def became_idle(self, connection: Connection) -> None: ...
    def became_busy(self, connection: Connection) -> None: ...
    def closed(self, connection: Connection, reason: str) -> None: ...


class _Reject(Exception):
    """Raised in a parser callback: answer ``status`` with ``message``, then close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Connection:
    """A TLS connection's state machine; the worker calls :meth:`start` after accept."""

    def __init__(self, owner: Owner, tls: ssl.SSLSocket, peer: tuple[str, int]) -> None:
        self.owner = owner
        self.limits = owner.limits
        self.tls = tls
        self.fd = tls.fileno()
        self.peer = peer
        self.state = HANDSHAKE
        self.deadline = time.monotonic() + self.limits.handshake_seconds
        self.served = 0
        self.last_active = time.monotonic()
        self._parser: httptools.HttpRequestParser | None = None
        self._out: bytes | None = None
        self._close_after_write = False
        self._writing = False
        self._queue: list[Request] = []
        self._in_message = False
        self._discarding = False
        self._discarded = 0
        self._started = 0.0
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._unfinished_header_bytes = 0
        self._body_fed = 0
        self._body = bytearray()

    def start(self) -> None:
        self.owner.add_reader(self.fd, self._on_readable)

    # -- I/O ------------------------------------------------------------------------

    def _on_readable(self) -> None:
        if self.state != HANDSHAKE:
            self._read()
        else:  # the worker runs handshakes a few per turn, in arrival order
            self.owner.remove_reader(self.fd)
            self.owner.queue_handshake(self)

    def handshake(self) -> None:
        """Advance the TLS handshake (the worker calls it in turn)."""
        if self.state == CLOSED:
            return
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            self._writer(None)
            self.owner.add_reader(self.fd, self._on_readable)
            return
        except ssl.SSLWantWriteError:
            self._writer(self.handshake)
            return
        except (ssl.SSLError, OSError):
            self.close("handshake_failed")
            return
        self._writer(None)
        self.owner.add_reader(self.fd, self._on_readable)
        self.last_active = time.monotonic()
        self._parser = httptools.HttpRequestParser(self)
        self._go_idle()
        self._read()  # the first request may have come with the handshake's last flight

    def _read(self) -> None:
        budget = READ_BUDGET
        while (self._out is None or self._discarding) and self.state != CLOSED:
            try:
                data = self.tls.recv(READ_CHUNK)
            except ssl.SSLWantReadError:
                return
            except ssl.SSLWantWriteError:  # a TLS-level write first (e.g. a key update)
                self._writer(self._read)
                return
            except (ssl.SSLError, OSError):
                self.close("read_error")
                return
            if not data:
                self.close("client_closed")
                return
            self.last_active = time.monotonic()
            self._feed(data)
            if len(data) < TLS_RECORD_BYTES and not self.tls.pending():
                return  # what the client sent so far ends here; epoll reports the rest
            budget -= len(data)
            if budget <= 0:  # let the other connections have a turn; bytes may be buffered
                self.owner.call_soon(self._read)  # inside TLS, where epoll cannot see them
                return

    def _feed(self, data: bytes) -> None:
        assert self._parser is not None
        self._body_fed = 0
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            cause = error.__context__
            if isinstance(cause, _Reject):
                self._fail(cause.status, cause.message)
            elif isinstance(cause, _Close):
                self._discarding = False
                if self._out is None:
                    self.close(cause.reason)
                else:  # the answer is still being written: close once it is out
                    self._close_after_write = True
                    self.owner.remove_reader(self.fd)
            elif isinstance(error, httptools.HttpParserUpgrade):
                self._fail(400, "protocol upgrades are not supported")
            else:
                self._fail(400, f"malformed HTTP request: {error}")
            return
        if self.state in (HEADERS, BODY) and self._unfinished_header_too_long(len(data)):
            self._fail(431, f"request headers exceed {self.limits.max_header_bytes} bytes")
            return
        self._serve_queued()

    def _send(self, data: bytes, close: bool) -> None:
        """Send a response; what the socket does not take now waits for it to drain,
        and meanwhile nothing more is read from this client."""
        self._close_after_write = self._close_after_write or close
        try:
            self.tls.send(data)  # all or nothing: OpenSSL retries a partial record itself
        except ssl.SSLWantWriteError:
            self._out = data
            if not self._discarding:  # an oversized body is still read (and dropped)
                self.deadline = time.monotonic() + self.limits.write_seconds
                self.owner.remove_reader(self.fd)
            self._writer(self._flush)
            return
        except (ssl.SSLError, OSError):
            self.close("write_error")
            return
        if self._close_after_write and not self._discarding:
            self.close("served")

    def _flush(self) -> None:
        assert self._out is not None
        try:
            self.tls.send(self._out)  # the same bytes again, as OpenSSL requires
        except ssl.SSLWantWriteError:
            return
        except (ssl.SSLError, OSError):
            self.close("write_error")
            return
        self._out = None
        self._writer(None)
        if self._close_after_write and not self._discarding:
            self.close("served")
            return
        self.owner.add_reader(self.fd, self._on_readable)
        self._serve_queued()
        self._read()

    def _writer(self, callback: Callable[[], None] | None) -> None:
        if callback is not None:
            self.owner.add_writer(self.fd, callback)
            self._writing = True
        elif self._writing:
            self.owner.remove_writer(self.fd)
            self._writing = False

    # -- requests ---------------------------------------------------------------------

    def _serve_queued(self) -> None:
        while self._queue and self._out is None and self.state != CLOSED:
            request = self._queue.pop(0)
            close = not request.keep_alive or self.owner.stopping
            response = self.owner.respond(request, self.peer, close)
            self.served += 1
            self._send(response, close)
        if self.state != CLOSED and self._out is None and not self._in_message:
            self._go_idle()

    def _go_idle(self) -> None:
        self.state = IDLE
        self.deadline = time.monotonic() + self.limits.idle_seconds
        self.owner.became_idle(self)

    def _fail(self, status: int, message: str) -> None:
        """Answer a request this connection cannot serve, then close it."""
        self._queue.clear()
        self._discarding = False
        if self.state != CLOSED:
            self._send(error_response(status, message, close=True), close=True)

    def _reject_too_large(self) -> None:
        """Answer now, then read and drop the rest of the body (up to a bound)."""
        limit = self.limits.max_body_bytes
        self._discarding = True
        self._discarded = len(self._body)
        self._body = bytearray()
        self._send(error_response(400, self.limits.too_large_message(limit), close=True), True)

    def drain_or_close(self, reason: str) -> None:
        """Close an idle connection, unless a request is already waiting in its socket:
        that one is read and answered first (with ``Connection: close`` while the worker
        stops). Closing with unread bytes would reset the connection, failing the request."""
        if self.state == IDLE:
            self._read()
        if self.state == IDLE and self._out is None:
            self.close(reason)

    def expire(self) -> None:
        """The deadline passed: say so if a request was under way, and close."""
        reason = {
            HANDSHAKE: "handshake_timeout",
            IDLE: "idle_timeout",
            HEADERS: "header_timeout",
            BODY: "body_timeout",
        }.get(self.state, "write_timeout")
        if self._out is None and self.state in (HEADERS, BODY) and not self._discarding:
            # Best effort: one attempt, no waiting for a client that is not reading.
            with contextlib.suppress(ssl.SSLError, OSError):
                self.tls.send(error_response(408, "request not received in time", close=True))
        self.close(reason)

    def close(self, reason: str) -> None:
        if self.state == CLOSED:
            return
        self.state = CLOSED
        self.owner.remove_reader(self.fd)
        self._writer(None)
        with contextlib.suppress(OSError):
            self.tls.close()
        self._parser = None  # the parser refers back to this connection: no cycle left
        self.owner.closed(self, reason)

    # -- httptools callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_message = True
        self.state = HEADERS
        self._started = time.monotonic()
        self.deadline = self._started + self.limits.header_seconds
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._unfinished_header_bytes = 0
        self._body = bytearray()
        self.owner.became_busy(self)

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_header_bytes(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._count_header_bytes(len(name) + len(value) + 4)

    def _unfinished_header_too_long(self, size: int) -> bool:
        """httptools hands a header (or a chunked body's trailer) over only once it is
        whole, buffering its fragments until then without a bound: count what is fed
        since the request began or its body last advanced, so one endless header line
        is refused too, not held in memory until the deadline. The chunk counted first
        may also hold the end of the previous request, or chunk framing before body
        bytes, hence one chunk of slack."""
        if self._body_fed:
            self._unfinished_header_bytes = 0
        self._unfinished_header_bytes += size - self._body_fed
        return self._unfinished_header_bytes > self.limits.max_header_bytes + READ_CHUNK

    def _count_header_bytes(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.limits.max_header_bytes:
            raise _Reject(431, f"request headers exceed {self.limits.max_header_bytes} bytes")

    def on_headers_complete(self) -> None:
        self.state = BODY
        self.deadline = self._started + self.limits.request_seconds
        length, expect = None, False
        for name, value in self._headers:
            lowered = name.lower()
            if lowered == b"content-length":
                length = int(value)  # the parser refused anything but digits
            elif lowered == b"expect":
                expect = value.lower() == b"100-continue"
        if length is not None and length > self.limits.max_body_bytes:
            self._reject_too_large()
        elif expect and self._out is None:
            self._send(b"HTTP/1.1 100 Continue\r\n\r\n", close=False)

    def on_body(self, body: bytes) -> None:
        self._body_fed += len(body)
        if self._discarding:
            self._discarded += len(body)
            if self._discarded > self.limits.discard_bytes:
                raise _Close("body_discard_limit")
            return
        self._body += body
        if len(self._body) > self.limits.max_body_bytes:  # chunked, or a false length
            self._reject_too_large()

    def on_message_complete(self) -> None:
        self._in_message = False
        if self._discarding:  # the oversized body is all read: its answer was sent
            self._discarding = False
            raise _Close("body_too_large")
        assert self._parser is not None
        self.state = RESPOND
        self._queue.append(
            Request(
                method=self._parser.get_method(),
                target=self._url,
                headers=self._headers,
                body=bytes(self._body),
                keep_alive=self._parser.should_keep_alive(),
                http_version=self._parser.get_http_version(),
            )
        )


class _Close(Exception):
    """Raised in a parser callback: close the connection (``reason`` for the metrics)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
