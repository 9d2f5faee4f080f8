"""Serving the app with gunicorn over TLS.

The worker is ``gthread``: the API server calls webhooks over HTTP/1.1 with keep-alive,
and a worker that closes every connection would cost a TLS handshake per review. The
keep-alive timeout outlasts the API server's idle-connection timeout (90 s in Go's HTTP
transport) so the client, not the server, closes idle connections; otherwise a request
sent just as the server closes fails. TLS below 1.2 is refused.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

KEEPALIVE_SECONDS = 120


@dataclass(frozen=True)
class ServerOptions:
    bind: str
    cert_file: Path
    key_file: Path
    workers: int = 2
    threads: int = 8
    graceful_timeout: int = 20
    log_level: str = "info"


def _tls_context(_: Any, default_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    context = default_factory()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class WebhookServer(BaseApplication):  # type: ignore[misc]
    """gunicorn configured in code, building the app in each worker after the fork."""

    def __init__(self, app_factory: Callable[[], Flask], options: ServerOptions) -> None:
        self._factory = app_factory
        self._settings: dict[str, Any] = {
            "bind": [options.bind],
            "certfile": str(options.cert_file),
            "keyfile": str(options.key_file),
            "ssl_context": _tls_context,
            "worker_class": "gthread",
            "workers": options.workers,
            "threads": options.threads,
            "keepalive": KEEPALIVE_SECONDS,
            "graceful_timeout": options.graceful_timeout,
            "loglevel": options.log_level,
            "accesslog": None,
            "proc_name": "spotguard",
        }
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._settings.items():
            self.cfg.set(key, value)
        if "control_socket_disable" in self.cfg.settings:
            # gunicorn 24+ opens a control socket under $HOME; a read-only root has none.
            self.cfg.set("control_socket_disable", True)

    def load(self) -> Flask:
        return self._factory()
