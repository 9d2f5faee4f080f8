"""Serving the app with gunicorn over TLS, with live policy, metrics and a graceful stop.

- Worker ``gthread``: the API server calls webhooks over HTTP/1.1 with keep-alive, and a
  worker that closed every connection would cost a TLS handshake per review. Idle
  connections are kept 120 s, longer than the API server's 90 s idle timeout, so the
  client closes them first (a request sent just as the server closes would fail).
  Requests on kept-alive connections are served by the worker's event loop itself
  (:class:`ReviewWorker`): a review is a fraction of a millisecond of Python, and
  handing each one to a thread cost more than the review.
- TLS 1.2 or newer, from a context rebuilt when the certificate files change (webhook.tls).
- The master watches the policy source and publishes each revision to the workers
  (webhook.policy_publish); it also serves the merged metrics on their own port.
- SIGTERM: readiness fails first, then after ``shutdown_delay`` seconds (time for the
  endpoint to leave the Service) the workers finish the reviews in flight and exit.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import ssl
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.workers.gthread import ThreadWorker

from webhook.app import WebhookSettings, create_app
from webhook.cluster import NO_CLUSTER, ClusterAccess
from webhook.metrics import (
    forget_worker,
    multiprocess_enabled,
    process_metrics,
    start_scrape_server,
)
from webhook.policy_publish import PublishedPolicy, publish
from webhook.policy_store import PolicyState, PolicyStore
from webhook.tls import ReloadingContext

KEEPALIVE_SECONDS = 120
#: How long a connection's blocking read or write may wait before the connection is closed.
IO_TIMEOUT_SECONDS = 5.0
#: How often a worker tells the master it is alive (the master's timeout is 30 s).
HEARTBEAT_SECONDS = 1.0
log = logging.getLogger("spotguard.server")


class PolicySource(Protocol):
    def start(self) -> None: ...


@dataclass(frozen=True)
class ServerOptions:
    bind: str
    cert_file: Path
    key_file: Path
    runtime_dir: Path
    workers: int = 2
    threads: int = 4
    graceful_timeout: int = 20
    shutdown_delay: float = 5.0
    metrics_bind: str | None = None
    log_level: str = "info"
    worker_class: str = "gthread"
    #: Builds this worker's cluster access (node cache, pod lookups) after the fork;
    #: None: no cluster access (local runs), the rules then know no node.
    cluster_factory: Callable[[], ClusterAccess] | None = None


class ReviewWorker(ThreadWorker):  # type: ignore[misc]
    """gthread, tuned for many short reviews on a few kept-alive connections.

    A review costs well under a millisecond of CPU, and gthread's own hand-offs cost as
    much: for every request on a kept-alive connection its event loop passes the
    connection to a pool thread and the thread passes it back through a pipe, and the
    threads then fight over the GIL (dozens of futex calls per request, long waits at
    the tail). So this worker serves a request that arrives on a kept-alive connection
    itself, on the event-loop thread: one thread holds the GIL, nothing is handed over.
    Requests are then served one at a time per worker, which the GIL did anyway.

    The pool still takes new connections (TLS handshake and first request), so a client
    that connects and sends nothing does not hold up the loop. Every connection's
    blocking reads and writes time out (:class:`BoundedSSLSocket`), so a client that
    stops halfway through a request holds up this worker's other connections for
    ``IO_TIMEOUT_SECONDS`` at most, and is then disconnected (with plain gthread, it
    would keep a pool thread for good).

    Each response leaves in one write (one TLS record) instead of headers then body, and
    the liveness heartbeat is a file touch per second instead of one per loop turn.

    On stop, gthread closes idle kept-alive connections within a couple of seconds but
    leaves just-accepted ones (Go's HTTP client opens spares) open for the whole
    keep-alive timeout, holding the worker until the graceful timeout. Capping both the
    same way lets a stopping server exit in about two seconds.
    """

    _next_heartbeat = 0.0

    def notify(self) -> None:
        now = time.monotonic()
        if now >= self._next_heartbeat:  # the arbiter's timeout is tens of seconds
            self._next_heartbeat = now + HEARTBEAT_SECONDS
            super().notify()

    def on_client_socket_readable(self, conn: Any, client: Any) -> None:
        """Serve the next request of a kept-alive connection here, without a hand-off."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        served: futures.Future[bool] = futures.Future()
        served.set_result(self.handle(conn))
        self.finish_request(conn, served)

    def handle_request(self, req: Any, conn: Any) -> bool:
        """gthread's request handling, with the response's writes sent as one."""
        tls_socket = conn.sock
        conn.sock = response = _BufferedWrites(tls_socket)
        try:
            keepalive: bool = super().handle_request(req, conn)
            response.flush()
            return keepalive
        finally:
            conn.sock = tls_socket

    def _cap_keepalive(self, deadline: float) -> None:
        super()._cap_keepalive(deadline)
        for conn in getattr(self, "pending_conns", ()):
            conn.timeout = min(conn.timeout, deadline)


class _BufferedWrites:
    """Stands in for a connection's socket while a response is written, and gathers the
    writes: gunicorn sends the headers and each body chunk with separate ``sendall``
    calls, which over TLS means a record and a system call each. A large (streamed) body
    is still sent as it comes, in pieces of at least ``FLUSH_BYTES``."""

    FLUSH_BYTES = 64 * 1024

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._parts: list[bytes] = []
        self._size = 0

    def sendall(self, data: bytes) -> None:
        self._parts.append(data)
        self._size += len(data)
        if self._size >= self.FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._parts:
            data = b"".join(self._parts)
            self._parts.clear()
            self._size = 0
            self._sock.sendall(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class BoundedSSLSocket(ssl.SSLSocket):
    """A TLS connection whose "blocking" reads and writes give up after
    ``IO_TIMEOUT_SECONDS``. gunicorn switches a connection to blocking mode to serve a
    request; without a bound, a client that stops in the middle of one would hold the
    thread serving it for good, and for a kept-alive connection that thread is
    :class:`ReviewWorker`'s event loop. The timeout closes such a connection instead."""

    def setblocking(self, flag: bool) -> None:
        self.settimeout(IO_TIMEOUT_SECONDS if flag else 0.0)


#: Both keep connections alive. gthread is the default; gevent (optional dependency
#: ``spotguard[gevent]``) trades threads for greenlets.
WORKER_CLASSES: dict[str, object] = {
    "gthread": ReviewWorker,
    "gevent": "gevent",
}


class DrainingArbiter(Arbiter):  # type: ignore[misc]
    """gunicorn's master, failing readiness before it stops serving on SIGTERM."""

    def handle_term(self) -> None:
        self.app.begin_draining()
        raise StopIteration


class WebhookServer(BaseApplication):  # type: ignore[misc]
    """gunicorn configured in code; each worker builds its app after the fork."""

    def __init__(
        self, options: ServerOptions, store: PolicyStore, source: PolicySource | None
    ) -> None:
        self._options = options
        self._store = store
        self._source = source
        # Shared with the workers through fork: 1 once shutdown began.
        self._draining = multiprocessing.Value("b", 0, lock=False)
        self._tls = ReloadingContext(
            options.cert_file,
            options.key_file,
            self._record_expiry,
            BoundedSSLSocket if options.worker_class == "gthread" else None,
        )
        store.subscribe(self._on_revision)
        publish(store.snapshot(), options.runtime_dir)  # before any worker starts
        super().__init__()

    def load_config(self) -> None:
        options = self._options
        settings: dict[str, Any] = {
            "bind": [options.bind],
            "certfile": str(options.cert_file),
            "keyfile": str(options.key_file),
            "ssl_context": self._tls.gunicorn_hook(),
            "worker_class": WORKER_CLASSES[options.worker_class],
            "workers": options.workers,
            "threads": options.threads,
            "keepalive": KEEPALIVE_SECONDS,
            # Each worker listens on its own SO_REUSEPORT socket, so the kernel spreads new
            # connections evenly over the workers. On one shared socket, whichever worker
            # runs first takes a whole burst of connections (a client that opens all its
            # connections at once often got every one of them on the same worker).
            "reuse_port": True,
            "graceful_timeout": options.graceful_timeout,
            "loglevel": options.log_level,
            "accesslog": None,
            "proc_name": "spotguard",
            "when_ready": self._when_ready,
            "child_exit": self._child_exit,
        }
        for key, value in settings.items():
            self.cfg.set(key, value)
        if "control_socket_disable" in self.cfg.settings:
            # gunicorn 24+ opens a control socket under $HOME; a read-only root has none.
            self.cfg.set("control_socket_disable", True)

    def _cluster(self) -> ClusterAccess:
        """This worker's own watch cache: threads and connections do not survive a fork."""
        if self._options.cluster_factory is None:
            return NO_CLUSTER
        return self._options.cluster_factory()

    def load(self) -> Flask:
        metrics = process_metrics() if multiprocess_enabled() else None
        app = create_app(
            WebhookSettings(
                policies=PublishedPolicy(self._options.runtime_dir),
                metrics=metrics,
                draining=lambda: bool(self._draining.value),
                cluster=self._cluster(),
            )
        )
        # Everything loaded so far lives as long as the worker: moved out of the garbage
        # collector's view, it is no longer walked by every full collection (a pause of
        # milliseconds, in the middle of some review, every few thousand reviews).
        gc.collect()
        gc.freeze()
        return app

    def run(self) -> None:
        DrainingArbiter(self).run()

    def begin_draining(self) -> None:
        """Fail readiness in every worker, then give the Service time to drop us."""
        self._draining.value = 1
        delay = self._options.shutdown_delay
        log.info("SIGTERM: readiness now fails; stopping in %.1f s", delay)
        time.sleep(delay)

    def _when_ready(self, _server: Any) -> None:
        if self._options.metrics_bind and multiprocess_enabled():
            host, _, port = self._options.metrics_bind.rpartition(":")
            start_scrape_server(int(port), host or "0.0.0.0")
        if self._source is not None:
            self._source.start()

    def _child_exit(self, _server: Any, worker: Any) -> None:
        if multiprocess_enabled():
            forget_worker(worker.pid)

    def _on_revision(self, state: PolicyState, loaded: bool) -> None:
        publish(state, self._options.runtime_dir)
        if multiprocess_enabled():
            metrics = process_metrics()
            metrics.policy_reloads.labels("loaded" if loaded else "refused").inc()
            metrics.policy_stale.set(1 if state.stale else 0)
            if state.registration is not None:
                metrics.registration_covers.set(0 if state.registration else 1)

    def _record_expiry(self, timestamp: float) -> None:
        if multiprocess_enabled():
            process_metrics().certificate_expiry.set(timestamp)
