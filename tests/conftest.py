"""Fixtures built from the app factory, and a real gunicorn TLS server."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from devtools.server import RunningServer, start_server
from webhook.app import WebhookSettings, create_app
from webhook.policy_store import PolicyStore


@pytest.fixture
def store() -> PolicyStore:
    return PolicyStore.from_file(None)


@pytest.fixture
def app(store: PolicyStore) -> Flask:
    return create_app(WebhookSettings(policies=store, max_body_bytes=256 * 1024))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """``spotguard serve`` under real gunicorn and TLS on a free loopback port."""
    server = start_server(tmp_path_factory.mktemp("tls-server"))
    try:
        yield server
    finally:
        server.stop()


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Which shells the preStop hook is tested under here (tests/test_checkpoint_contract.py)."""
    found = {name: shutil.which(name) for name in ("dash", "bash", "busybox")}
    shells = ", ".join(f"{name} {path or 'MISSING (skipped)'}" for name, path in found.items())
    return [f"preStop hook shells: /bin/sh -> {os.path.realpath('/bin/sh')}, {shells}"]
