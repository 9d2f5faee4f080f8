"""Serving the app with gunicorn over TLS, with live policy, metrics and a graceful stop.

- gunicorn is the process manager: it forks the workers, replaces one that dies or
  stops answering, and reloads on SIGHUP. The workers are spotguard's own
  (webhook.worker): one event loop each, so idle, slow or silent clients never hold up
  a review (per-connection deadlines for the handshake, the headers, the body, idle
  keep-alive and writes; a cap on connections per worker).
- Listening: one socket per worker slot, all on the address with ``SO_REUSEPORT``, held
  by the master for the server's life (webhook.listeners). The kernel spreads
  connections evenly over the workers, and a replaced worker's queued connections wait
  for its successor instead of being reset.
- SIGHUP: new workers start (each re-reads the published policy, rebuilds its watch
  caches and loads the certificate files), take over the old workers' sockets, and the
  old workers finish what they were serving and exit: a rolling restart of the workers
  that loses no connection. The master, its policy watch and its metrics port stay.
- TLS 1.2 or newer, from a context rebuilt when the certificate files change (webhook.tls).
- The master watches the policy source and publishes each revision to the workers
  (webhook.policy_publish); it also serves the merged metrics on their own port.
- SIGTERM: readiness fails first, then after ``shutdown_delay`` seconds (time for the
  endpoint to leave the Service) the workers finish the reviews in flight and exit.
- A worker that dies without finishing (SIGKILL, a crash, the master's timeout) is
  reported by the master with the connections and requests it dropped (a log line
  ``worker_lost`` and the ``spotguard_worker_*_lost`` counters).
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from webhook.app import DEFAULT_MAX_BODY_BYTES, WebhookSettings, body_limit_message, create_app
from webhook.cluster import NO_CLUSTER, WatchedCluster
from webhook.connection import Limits
from webhook.gunicorn_logs import JSONLogger
from webhook.listeners import ListenerSlots
from webhook.metrics import (
    forget_worker,
    multiprocess_enabled,
    process_metrics,
    start_scrape_server,
)
from webhook.policy_publish import PublishedPolicy, publish
from webhook.policy_sources import DEFAULT_CONFIGMAP_KEY
from webhook.policy_store import PolicyState, PolicyStore
from webhook.tls import ReloadingContext
from webhook.worker import EventLoopWorker
from webhook.worker_state import read_and_forget

#: Connections per worker; past it the longest-idle one is closed (webhook.worker).
DEFAULT_MAX_CONNECTIONS = 2048
#: How long a new worker waits for its watch caches before it accepts connections anyway
#: (it then reports not ready, and its rules see an empty cluster; see webhook.cluster).
CACHE_SYNC_WAIT_SECONDS = 3.0
DEFAULT_LIMITS = Limits(max_body_bytes=DEFAULT_MAX_BODY_BYTES, too_large_message=body_limit_message)
log = logging.getLogger("spotguard.server")


class PolicySource(Protocol):
    def start(self) -> None: ...


class BackgroundTask(Protocol):
    """Work of the master besides serving (the cluster audit): started once it is ready,
    stopped when it exits."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class ServerOptions:
    bind: str
    cert_file: Path
    key_file: Path
    runtime_dir: Path
    workers: int = 2
    graceful_timeout: int = 20
    shutdown_delay: float = 5.0
    metrics_bind: str | None = None
    log_level: str = "info"
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    limits: Limits = DEFAULT_LIMITS
    #: Builds this worker's cluster access (watch caches) after the fork;
    #: None: no cluster access (local runs), the rules then know no node.
    cluster_factory: Callable[[], WatchedCluster] | None = None
    background: tuple[BackgroundTask, ...] = ()
    #: The ConfigMap key holding the policy, for /validate-policy.
    policy_key: str = DEFAULT_CONFIGMAP_KEY


class DrainingArbiter(Arbiter):  # type: ignore[misc]
    """gunicorn's master, failing readiness before it stops serving on SIGTERM."""

    def handle_term(self) -> None:
        self.app.begin_draining()
        raise StopIteration

    def handle_usr2(self) -> None:
        """Re-executing the master is not supported: SIGHUP replaces the workers."""
        self.log.warning("SIGUSR2 ignored: send SIGHUP to restart the workers")

    def manage_workers(self) -> None:
        """The master's API threads start once the first workers are forked: a fork taken
        while one of them is inside OpenSSL can leave the child a lock held for ever
        (webhook.tls_after_fork). Later forks still can; each worker checks."""
        super().manage_workers()
        self.app.start_background()


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
        self._cluster: WatchedCluster = NO_CLUSTER
        self._background_started = False
        self.limits = options.limits
        self.max_connections = options.max_connections
        self.worker_state_dir = options.runtime_dir / "workers"
        self.slots = ListenerSlots(options.bind, options.workers)
        store.subscribe(self._on_revision)
        publish(store.snapshot(), options.runtime_dir)  # before any worker starts
        super().__init__()

    def load_config(self) -> None:
        options = self._options
        settings: dict[str, Any] = {
            "bind": [self.slots.url.removeprefix("https://")],
            "worker_class": EventLoopWorker,
            "workers": options.workers,
            # The master creates the listening sockets itself (webhook.listeners).
            "reuse_port": False,
            "graceful_timeout": options.graceful_timeout,
            "loglevel": options.log_level,
            "logger_class": JSONLogger,
            "accesslog": None,
            "proc_name": "spotguard",
            "when_ready": self._when_ready,
            "pre_fork": self._pre_fork,
            "post_fork": self._post_fork,
            "child_exit": self._child_exit,
            "on_exit": self._on_exit,
        }
        for key, value in settings.items():
            self.cfg.set(key, value)
        if "control_socket_disable" in self.cfg.settings:
            # gunicorn 24+ opens a control socket under $HOME; a read-only root has none.
            self.cfg.set("control_socket_disable", True)

    def load(self) -> Flask:
        metrics = process_metrics() if multiprocess_enabled() else None
        if self._options.cluster_factory is not None:
            # This worker's own watch caches: threads and connections do not survive a fork.
            self._cluster = self._options.cluster_factory()
        app = create_app(
            WebhookSettings(
                policies=PublishedPolicy(self._options.runtime_dir),
                max_body_bytes=self.limits.max_body_bytes,
                metrics=metrics,
                draining=lambda: bool(self._draining.value),
                cluster=self._cluster,
                unsynced_caches=self._cluster.unsynced,
                policy_key=self._options.policy_key,
            )
        )
        # Everything loaded so far lives as long as the worker: moved out of the garbage
        # collector's view, it is no longer walked by every full collection (a pause of
        # milliseconds, in the middle of some review, every few thousand reviews).
        gc.collect()
        gc.freeze()
        return app

    def run(self) -> None:
        arbiter = DrainingArbiter(self)
        arbiter.LISTENERS = [self.slots]  # used as they are: gunicorn creates none
        arbiter.run()

    # -- what the workers ask (webhook.worker.ServingApp) ----------------------------------

    def tls_context(self) -> ssl.SSLContext:
        return self._tls.context()

    def wait_until_ready_to_serve(self) -> None:
        if not self._cluster.wait_synced(CACHE_SYNC_WAIT_SECONDS):
            log.warning(
                "serving before the cluster caches synced: %s",
                ", ".join(self._cluster.unsynced()),
                extra={"fields": {"event": "caches_unsynced"}},
            )

    def on_connections(self, opened: int, closed_reason: str | None) -> None:
        if multiprocess_enabled():
            metrics = process_metrics()
            if opened:
                metrics.connections_open.inc(opened)
            if closed_reason is not None:
                metrics.connections_closed.labels(closed_reason).inc()

    # -- the master's hooks ------------------------------------------------------------

    def begin_draining(self) -> None:
        """Fail readiness in every worker, then give the Service time to drop us."""
        self._draining.value = 1
        delay = self._options.shutdown_delay
        log.info("SIGTERM: readiness now fails; stopping in %.1f s", delay)
        time.sleep(delay)

    def _when_ready(self, _server: Any) -> None:
        log.info(
            "spotguard listening on %s",
            self.slots.url,
            extra={
                "fields": {
                    "event": "listening",
                    "address": self.slots.url,
                    "workers": self._options.workers,
                    "maxConnectionsPerWorker": self.max_connections,
                }
            },
        )
        if self._options.metrics_bind and multiprocess_enabled():
            host, _, port = self._options.metrics_bind.rpartition(":")
            start_scrape_server(int(port), host or "0.0.0.0")

    def start_background(self) -> None:
        """The policy source's watches and the background tasks (once)."""
        if self._background_started:
            return
        self._background_started = True
        if self._source is not None:
            self._source.start()
        for task in self._options.background:
            task.start()

    def _on_exit(self, _server: Any) -> None:
        for task in self._options.background:
            task.stop()

    def _pre_fork(self, server: Any, worker: Any) -> None:
        worker.slot = self.slots.least_held(w.slot for w in server.WORKERS.values())

    def _post_fork(self, _server: Any, worker: Any) -> None:
        worker.sockets = self.slots.keep_only(worker.slot)

    def _child_exit(self, _server: Any, worker: Any) -> None:
        last = read_and_forget(self.worker_state_dir, worker.pid)
        if last is not None and not last.clean:
            log.error(
                "worker %s died with %d open connections, %d with a request under way",
                worker.pid,
                last.open_connections,
                last.busy_connections,
                extra={
                    "fields": {
                        "event": "worker_lost",
                        "pid": worker.pid,
                        "slot": worker.slot,
                        "connectionsDropped": last.open_connections,
                        "requestsLost": last.busy_connections,
                    }
                },
            )
        if multiprocess_enabled():
            forget_worker(worker.pid)
            if last is not None and not last.clean:
                metrics = process_metrics()
                metrics.connections_lost.inc(last.open_connections)
                metrics.requests_lost.inc(last.busy_connections)

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
