"""Serving the app with gunicorn over TLS, with live policy, metrics and a graceful stop.

- Worker ``gthread``: the API server calls webhooks over HTTP/1.1 with keep-alive, and a
  worker that closed every connection would cost a TLS handshake per review. Idle
  connections are kept 120 s, longer than the API server's 90 s idle timeout, so the
  client closes them first (a request sent just as the server closes would fail).
- TLS 1.2 or newer, from a context rebuilt when the certificate files change (webhook.tls).
- The master watches the policy source and publishes each revision to the workers
  (webhook.policy_publish); it also serves the merged metrics on their own port.
- SIGTERM: readiness fails first, then after ``shutdown_delay`` seconds (time for the
  endpoint to leave the Service) the workers finish the reviews in flight and exit.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.workers.gthread import ThreadWorker

from webhook.app import WebhookSettings, create_app
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


class DrainingThreadWorker(ThreadWorker):  # type: ignore[misc]
    """gthread, but a stopping worker also drops connections that never sent a request.

    On stop, gthread closes idle kept-alive connections within a couple of seconds but
    leaves just-accepted ones (Go's HTTP client opens spares) open for the whole
    keep-alive timeout, holding the worker until the graceful timeout. Capping both the
    same way lets a stopping server exit in about two seconds.
    """

    def _cap_keepalive(self, deadline: float) -> None:
        super()._cap_keepalive(deadline)
        for conn in getattr(self, "pending_conns", ()):
            conn.timeout = min(conn.timeout, deadline)


#: Both keep connections alive. gthread is the default; gevent (optional dependency
#: ``spotguard[gevent]``) trades threads for greenlets.
WORKER_CLASSES: dict[str, object] = {
    "gthread": DrainingThreadWorker,
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
        self._tls = ReloadingContext(options.cert_file, options.key_file, self._record_expiry)
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

    def load(self) -> Flask:
        metrics = process_metrics() if multiprocess_enabled() else None
        return create_app(
            WebhookSettings(
                policies=PublishedPolicy(self._options.runtime_dir),
                metrics=metrics,
                draining=lambda: bool(self._draining.value),
            )
        )

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

    def _record_expiry(self, timestamp: float) -> None:
        if multiprocess_enabled():
            process_metrics().certificate_expiry.set(timestamp)
