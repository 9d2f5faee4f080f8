"""End-to-end fixtures: a real control plane (built from Go modules) calling the real
webhook (gunicorn, TLS), installed the way the manifests install it:

- the shipped webhook configurations, with a url on 127.0.0.1 instead of the Service;
- certificates made by `spotguard certs ensure` in the Secret spotguard-system/spotguard-tls
  (it also patches the caBundle), copied to the server's directory as a kubelet would;
- the policy in the ConfigMap spotguard-system/spotguard-policy, watched live;
- metrics on their own port.

The control plane and the webhook start once per session; each test gets its own
namespace. Every component's log stays in pytest's temporary directory; a failing test
prints where, and the last lines.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from certs.pki import CertPaths
from controlplane.build import ensure_binaries
from controlplane.harness import ControlPlane
from controlplane.loopback import free_port
from controlplane.nodegroups import group_of_node
from policies.loader import parse_policy_text
from testsupport.registration import register, wait_until_called
from testsupport.secret_sync import SecretSync
from testsupport.server import REPO, RunningServer, start_server
from webhook.policy_sources import DEFAULT_CONFIGMAP_KEY

ENFORCE_POLICY = "mode: enforce\n"
AUDIT_POLICY = "mode: audit\n"
SYSTEM_NAMESPACE = "spotguard-system"
POLICY_CONFIGMAP = "spotguard-policy"
TLS_SECRET = "spotguard-tls"


def _binaries_or_skip() -> Path:
    if shutil.which("go") is None:
        pytest.skip("end-to-end tests need Go to build the control plane (make controlplane)")
    return ensure_binaries()


def spotguard_cli(cluster: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the spotguard CLI against the control plane, as a Job in the cluster would."""
    return subprocess.run(
        [sys.executable, "-m", "webhook", *args, "--kubeconfig", str(cluster.kubeconfig)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def policy_configmap(text: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": POLICY_CONFIGMAP, "namespace": SYSTEM_NAMESPACE},
            "data": {DEFAULT_CONFIGMAP_KEY: text},
        }
    )


@dataclass
class Webhook:
    """The running webhook, its policy ConfigMap and its metrics endpoint."""

    cluster: ControlPlane
    workdir: Path
    port: int
    metrics_port: int
    sync: SecretSync
    server: RunningServer | None = None

    @property
    def running(self) -> RunningServer:
        assert self.server is not None, "the webhook is not running"
        return self.server

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def apply_policy(self, text: str) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl("apply", "-f", "-", input=policy_configmap(text))

    def set_policy(self, text: str, timeout: float = 10.0) -> float:
        """Apply a policy to the ConfigMap; seconds until every worker serves it."""
        started = time.monotonic()
        result = self.apply_policy(text)
        assert result.returncode == 0, result.stderr
        self.running.wait_for_revision(parse_policy_text(text).revision, timeout)
        return time.monotonic() - started

    def register_for(self, policy_text: str | None) -> None:
        """Apply the registrations rendered for a policy (None: the built-in one), as users
        apply ``spotguard policy webhooks``: the server refuses a policy revision the live
        registration does not cover."""
        policy = parse_policy_text(policy_text) if policy_text else None
        register(self.cluster, f"https://127.0.0.1:{self.port}", None, policy)

    @contextmanager
    def policy(self, text: str) -> Iterator[float]:
        """Run a block under another policy (registered for it), then restore enforce mode
        and the built-in registration whatever happens."""
        try:
            self.register_for(text)
            yield self.set_policy(text)
        finally:  # the built-in registration first: it must cover the policy set after it
            self.register_for(None)
            self.set_policy(ENFORCE_POLICY)

    def start(self) -> None:
        sync_dir = self.workdir / "certs"
        self.server = start_server(
            self.workdir,
            "--policy-configmap", f"{SYSTEM_NAMESPACE}/{POLICY_CONFIGMAP}",
            "--kubeconfig", str(self.cluster.kubeconfig),
            "--metrics-bind", f"127.0.0.1:{self.metrics_port}",
            workers=2,
            port=self.port,
            certs=CertPaths(sync_dir / "ca-bundle.crt", sync_dir / "tls.crt", sync_dir / "tls.key"),
        )  # fmt: skip


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    bin_dir = _binaries_or_skip()
    workdir = tmp_path_factory.mktemp("controlplane")
    plane = ControlPlane(workdir, bin_dir=bin_dir, controllers=True, scheduler=True, nodes=True)
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def webhook(cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    workdir = tmp_path_factory.mktemp("webhook")
    cluster.ensure_namespace(SYSTEM_NAMESPACE)
    port = free_port()
    register(cluster, f"https://127.0.0.1:{port}", None)
    created = spotguard_cli(cluster, "certs", "ensure", "--ip", "127.0.0.1", "--dns", "localhost")
    assert created.returncode == 0, created.stderr
    sync = SecretSync(cluster, SYSTEM_NAMESPACE, TLS_SECRET, workdir / "certs")
    assert sync.sync_once()
    sync.start()
    running = Webhook(cluster, workdir, port, free_port(), sync)
    assert running.apply_policy(ENFORCE_POLICY).returncode == 0
    running.start()
    try:
        cluster.ensure_namespace("spotguard-canary")
        wait_until_called(cluster, "spotguard-canary")
        yield running
    finally:
        if running.server is not None:
            running.server.stop()  # the one running now: a test may have restarted it
        sync.stop()


@pytest.fixture
def enforce(webhook: Webhook) -> Webhook:
    webhook.set_policy(ENFORCE_POLICY)
    return webhook


@pytest.fixture
def namespace(cluster: ControlPlane) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    cluster.ensure_namespace(name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" and report.failed and "cluster" in getattr(item, "funcargs", {}):
        plane: ControlPlane = item.funcargs["cluster"]  # type: ignore[attr-defined]
        report.sections.append(
            ("control plane logs", f"logs in {plane.logs_dir}\n{plane.log_tails(15)}")
        )
    return report


def get(cluster: ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any]:
    result = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=True)
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def node_group_of(pod: dict[str, Any]) -> str:
    return group_of_node(pod["spec"]["nodeName"]).name
