"""Fixtures built from the app factory, and a real gunicorn TLS server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from certs.pki import generate_pair
from webhook.app import WebhookSettings, create_app
from webhook.policy_store import PolicyStore

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def store() -> PolicyStore:
    return PolicyStore.from_file(None)


@pytest.fixture
def app(store: PolicyStore) -> Flask:
    return create_app(WebhookSettings(store=store, max_body_bytes=256 * 1024))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class RunningServer:
    url: str
    ca_file: Path
    process: subprocess.Popen[bytes]
    log_file: Path

    def session(self) -> requests.Session:
        """A keep-alive session that verifies the server against the generated CA only."""
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE must not replace our CA
        session.verify = str(self.ca_file)
        return session


def start_server(tmp: Path, *extra: str) -> RunningServer:
    cert_dir = tmp / "certs"
    paths = generate_pair(cert_dir, ["spotguard.spotguard-system.svc", "localhost"], ["127.0.0.1"])
    port = free_port()
    log_file = tmp / "server.log"
    command = [
        sys.executable, "-m", "webhook", "serve", "--bind", f"127.0.0.1:{port}",
        "--cert-dir", str(cert_dir), "--workers", "1", *extra,
    ]  # fmt: skip
    with log_file.open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    server = RunningServer(f"https://127.0.0.1:{port}", paths.ca_cert, process, log_file)
    deadline = time.monotonic() + 20
    with server.session() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited: {log_file.read_text()}")
            try:
                if session.get(server.url + "/readyz", timeout=1).status_code == 200:
                    return server
            except requests.ConnectionError:
                time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"server not ready in 20 s: {log_file.read_text()}")


def stop_server(server: RunningServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """``spotguard serve`` under real gunicorn and TLS on a free loopback port."""
    server = start_server(tmp_path_factory.mktemp("tls-server"))
    try:
        yield server
    finally:
        stop_server(server)


os.environ.setdefault("PYTHONUNBUFFERED", "1")
