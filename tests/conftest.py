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


#: Test ids naming the shell the hook ran under (longest first: "dash" is in several).
_HOOK_SHELL_IDS = ("image-bin-sh-dash", "injected-bin-sh", "busybox-sh", "dash", "bash")
_HOOK_SHELL_FILES = ("tests/test_checkpoint_contract.py", "tests/e2e/test_real_nodes.py")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """How the preStop hook fared under each shell, so CI's output shows every case ran."""
    counts: dict[str, dict[str, int]] = {}
    for outcome in ("passed", "failed", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", "")
            if not nodeid.startswith(_HOOK_SHELL_FILES):
                continue
            params = nodeid.partition("[")[2]
            shell = next((name for name in _HOOK_SHELL_IDS if name in params), None)
            if shell is not None:
                where = " (in a real container)" if "real_nodes" in nodeid else ""
                tally = counts.setdefault(shell + where, {})
                tally[outcome] = tally.get(outcome, 0) + 1
    if counts:
        terminalreporter.write_sep("-", "preStop hook cases by shell")
        for shell, tally in sorted(counts.items()):
            line = ", ".join(f"{n} {outcome}" for outcome, n in sorted(tally.items()))
            terminalreporter.write_line(f"{shell}: {line}")
