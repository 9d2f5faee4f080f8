"""spotguard's gunicorn worker: one event loop per process, no thread per connection.

gunicorn stays the process manager (it forks, watches and replaces workers, reloads on
SIGHUP); this worker replaces its connection handling. Each connection is a
non-blocking TLS socket on an asyncio loop (webhook.connection): the handshake and the
reading of a request only advance when bytes arrive, so idle, slow or silent clients
cost a file descriptor and a little memory each, never a review's turn. A review is
pure CPU (its cluster facts come from watch caches), so it is computed on the loop
itself once its request is complete, one at a time, as the GIL would allow anyway: a
``POST`` to a review path goes straight to the app's review endpoint
(:func:`webhook.app.direct_endpoints`), anything else through the WSGI app (Flask).

Per worker, at most ``max_connections`` connections are open. When a new one arrives at
the cap, the connection idle longest (waiting for a request, or for its TLS handshake)
is closed to make room; if every connection is in the middle of a request, the new one
is closed instead.

Stopping (SIGTERM from the master on reload, replacement or shutdown): the worker stops
accepting at once, and its listening socket stays open in the master, so connections
queued on it wait for the next worker of its slot instead of being reset. Responses
from then on say ``Connection: close``; idle connections are closed once they have been
quiet a second (every idle one after ``STOP_GRACE_SECONDS``), each only after reading
whatever request is already waiting in it; connections still in their handshake finish
it and get their first request answered.
"""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import signal
import socket
import ssl
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from gunicorn.workers.base import Worker

from webhook.app import ReviewEndpoint, direct_endpoints
from webhook.connection import CLOSED, HANDSHAKE, Connection, Limits
from webhook.http_messages import (
    Request,
    WSGIApp,
    call_application,
    error_response,
    header_value,
    json_response,
    wsgi_environ,
)
from webhook.listeners import Listener
from webhook.tls_after_fork import EXIT_TLS_WEDGED, PROBE_SECONDS, tls_works
from webhook.worker_state import WorkerState

SWEEP_SECONDS = 0.25
HEARTBEAT_SECONDS = 1.0
STOP_GRACE_SECONDS = 2.0
#: A stopping worker closes an idle connection once it has been quiet this long: a
#: client that just used it may be sending the next request, answered with a close.
STOP_QUIET_SECONDS = 1.0
ACCEPT_BATCH = 64
HANDSHAKES_PER_TURN = 1
HANDSHAKE_LIFO_AFTER = 32


class ServingApp(Protocol):
    """What the worker needs from the gunicorn application (webhook.server)."""

    limits: Limits
    max_connections: int
    worker_state_dir: Path

    def tls_context(self) -> ssl.SSLContext: ...
    def wait_until_ready_to_serve(self) -> None: ...
    def on_connections(self, opened: int, closed_reason: str | None) -> None: ...


class EventLoopWorker(Worker):  # type: ignore[misc]
    """A gunicorn worker serving the WSGI app from an asyncio event loop."""

    #: The listening socket this worker accepts from (set by the master before fork).
    slot = 0
    loop: asyncio.AbstractEventLoop

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.serving: ServingApp = self.app
        self.limits = self.serving.limits
        self.stopping = False
        self.connections: set[Connection] = set()
        #: Connections waiting (for a request or a handshake), the longest-waiting first.
        self.idle: dict[Connection, None] = {}
        self._listener: Listener | None = None
        self._stop_deadline = 0.0
        self._next_heartbeat = 0.0
        self._address: tuple[str, int] = ("", 0)
        self._endpoints: dict[bytes, ReviewEndpoint] = {}
        self._state: WorkerState | None = None
        self._handshakes: deque[Connection] = deque()
        self._handshake_turn_scheduled = False

    # -- gunicorn's Worker interface --------------------------------------------------

    def init_process(self) -> None:
        # Made here, after the fork: the master builds this object, and a loop made there
        # would leave its descriptors open in the master at every worker it spawns.
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        _raise_file_limit(self.serving.max_connections + 256)
        if not tls_works(self.serving.tls_context):
            self.log.error(
                "worker %s: a TLS handshake did not finish in %.0f s; the fork inherited a "
                "lock held inside OpenSSL by a thread of the master. Exiting for a new worker",
                self.pid,
                PROBE_SECONDS,
                extra={"fields": {"event": "worker_tls_wedged", "pid": self.pid}},
            )
            os._exit(EXIT_TLS_WEDGED)  # nothing of this process is worth unwinding
        super().init_process()  # signals, the app, then run()

    def init_signals(self) -> None:
        for number in self.SIGNALS:
            signal.signal(number, signal.SIG_DFL)
        self.loop.add_signal_handler(signal.SIGTERM, self._begin_stop)
        self.loop.add_signal_handler(signal.SIGQUIT, self._quit)
        self.loop.add_signal_handler(signal.SIGINT, self._quit)
        self.loop.add_signal_handler(signal.SIGABRT, self._abort)
        self.loop.add_signal_handler(signal.SIGUSR1, self.log.reopen_files)
        self.loop.add_signal_handler(signal.SIGWINCH, lambda: None)

    def run(self) -> None:
        (listener,) = self.sockets
        self._listener = listener
        self._address = listener.sock.getsockname()[:2]
        self._endpoints = direct_endpoints(self.wsgi)
        self._state = WorkerState(self.serving.worker_state_dir, self.pid)
        self.notify()
        # Watch caches first (bounded): connections queue in the kernel meanwhile.
        self.serving.wait_until_ready_to_serve()
        if not self.stopping:
            self.loop.add_reader(listener.fileno(), self._accept)
        self.loop.call_soon(self._sweep)
        try:
            self.loop.run_forever()
        finally:
            for connection in list(self.connections):
                connection.close("worker_exit")
            self._state.mark_clean()
            self.loop.close()

    # -- accepting ----------------------------------------------------------------------

    def _accept(self) -> None:
        assert self._listener is not None
        for _ in range(ACCEPT_BATCH):
            try:
                sock, peer = self._listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.log.error("cannot accept connections: %s; pausing 0.1 s", error)
                    self.loop.remove_reader(self._listener.fileno())
                    self.loop.call_later(0.1, self._resume_accepting)
                    return
                continue  # the client gave up before we took it (ECONNABORTED, ...)
            if len(self.connections) >= self.serving.max_connections and not self._make_room():
                sock.close()
                self.serving.on_connections(0, "refused_at_cap")
                continue
            self._open(sock, peer)

    def _resume_accepting(self) -> None:
        if not self.stopping and self._listener is not None:
            self.loop.add_reader(self._listener.fileno(), self._accept)

    def _open(self, sock: socket.socket, peer: Any) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            tls = self.serving.tls_context().wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        except (OSError, ssl.SSLError):
            sock.close()
            return
        connection = Connection(self, tls, (str(peer[0]), int(peer[1])))
        self.connections.add(connection)
        self.idle[connection] = None
        self._publish()
        self.serving.on_connections(1, None)
        connection.start()

    def _make_room(self) -> bool:
        """Close the connection waiting longest; False if none is waiting."""
        for connection in self.idle:
            connection.close("evicted_at_cap")
            return True
        return False

    # -- what connections call (webhook.connection.Owner) ---------------------------------

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        self.loop.add_reader(fd, callback)

    def remove_reader(self, fd: int) -> None:
        self.loop.remove_reader(fd)

    def add_writer(self, fd: int, callback: Callable[[], None]) -> None:
        self.loop.add_writer(fd, callback)

    def remove_writer(self, fd: int) -> None:
        self.loop.remove_writer(fd)

    def call_soon(self, callback: Callable[[], None]) -> None:
        self.loop.call_soon(callback)

    def queue_handshake(self, connection: Connection) -> None:
        """TLS handshakes run ``HANDSHAKES_PER_TURN`` per turn of the loop: each costs
        a quarter to three quarters of a millisecond of CPU, depending on the host
        (several when the cores are contended), so a request on an established
        connection waits behind one handshake at most, never behind a burst of new
        connections. A turn with handshakes waiting polls for I/O without sleeping, so a
        queue still drains at once on an idle worker. A queued connection is not watched
        meanwhile, so waiting costs nothing per turn.

        Oldest first, unless more than ``HANDSHAKE_LIFO_AFTER`` wait: then newest first
        (adaptive LIFO). In a flood, the oldest are the likeliest to reach their deadline
        anyway, and serving them first would make every newcomer, the API server's
        included, wait behind the whole flood."""
        self._handshakes.append(connection)
        if not self._handshake_turn_scheduled:
            self._handshake_turn_scheduled = True
            self.loop.call_soon(self._handshake_turn)

    def _handshake_turn(self) -> None:
        done = 0
        while self._handshakes and done < HANDSHAKES_PER_TURN:
            flood = len(self._handshakes) > HANDSHAKE_LIFO_AFTER
            connection = self._handshakes.pop() if flood else self._handshakes.popleft()
            if connection.state != CLOSED:  # closed while waiting: its deadline, or the cap
                connection.handshake()
                done += 1
        if self._handshakes:
            self.loop.call_soon(self._handshake_turn)  # next turn, after the I/O
        else:
            self._handshake_turn_scheduled = False

    def respond(self, request: Request, peer: tuple[str, int], close: bool) -> bytes:
        self.nr += 1
        if request.method == b"POST":
            endpoint = self._endpoints.get(request.target.partition(b"?")[0])
            if endpoint is not None:  # a review: straight to its endpoint (webhook.app)
                return self._call_endpoint(endpoint, request, close)
        environ = wsgi_environ(request, peer, self._address)
        app: WSGIApp = self.wsgi
        try:
            return call_application(app, environ, close)
        except Exception:
            self.log.exception("error serving %s %r", environ["REQUEST_METHOD"], request.target)
            return error_response(500, "internal error", close=close)

    def _call_endpoint(self, endpoint: ReviewEndpoint, request: Request, close: bool) -> bytes:
        try:
            reply = endpoint(header_value(request, b"content-type"), request.body)
        except Exception:
            self.log.exception("error serving POST %r", request.target)
            return error_response(500, "internal error", close=close)
        return json_response(reply.status, reply.body, close=close)

    def became_idle(self, connection: Connection) -> None:
        self.idle.pop(connection, None)
        self.idle[connection] = None
        self._publish()

    def became_busy(self, connection: Connection) -> None:
        if self.idle.pop(connection, 0) is None:
            self._publish()

    def closed(self, connection: Connection, reason: str) -> None:
        self.connections.discard(connection)
        self.idle.pop(connection, None)
        self._publish()
        self.serving.on_connections(-1, reason)

    def _publish(self) -> None:
        if self._state is not None:
            total = len(self.connections)
            self._state.update(total, total - len(self.idle))

    # -- time: deadlines, heartbeat, stopping --------------------------------------------

    def _sweep(self) -> None:
        now = time.monotonic()
        for connection in [c for c in self.connections if c.deadline <= now]:
            connection.expire()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + HEARTBEAT_SECONDS
            self.notify()  # the master's liveness check
            if self.ppid != os.getppid():
                self.log.info("parent changed, shutting down: %s", self)
                self._quit()
                return
        if self.stopping:
            self._close_quiet_connections(now)
            if not self.connections:
                self.loop.stop()
                return
        self.loop.call_later(SWEEP_SECONDS, self._sweep)

    def _begin_stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.alive = False
        self._stop_deadline = time.monotonic() + STOP_GRACE_SECONDS
        if self._listener is not None:
            self.loop.remove_reader(self._listener.fileno())
            self._listener.close()  # this worker's copy; the master keeps the socket open

    def _close_quiet_connections(self, now: float) -> None:
        """Idle connections quiet for a second (or all idle ones once the grace is over)
        are closed; a connection still in its handshake is left to finish it and send its
        request (its client dialled for one), within its own deadlines. Past the master's
        graceful timeout, less a second, everything is closed."""
        if now >= self._stop_deadline + self.cfg.graceful_timeout - STOP_GRACE_SECONDS - 1:
            for connection in list(self.connections):
                connection.close("worker_stopping")
            return
        late = now >= self._stop_deadline
        for connection in list(self.idle):
            if connection.state == HANDSHAKE:
                continue
            if late or now - connection.last_active >= STOP_QUIET_SECONDS:
                connection.drain_or_close("worker_stopping")

    def _quit(self) -> None:
        """SIGQUIT/SIGINT, or a vanished master: close everything now."""
        self.stopping = True
        self.alive = False
        for connection in list(self.connections):
            connection.close("worker_quit")
        self.loop.stop()

    def _abort(self) -> None:
        """SIGABRT: the master found this worker unresponsive."""
        self.alive = False
        self.cfg.worker_abort(self)
        sys.exit(1)


def _raise_file_limit(wanted: int) -> None:
    """Let this process hold ``wanted`` descriptors if the hard limit allows it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
