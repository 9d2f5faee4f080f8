"""End-to-end fixtures: a real control plane (built from Go modules) calling the real
webhook (gunicorn, TLS) registered with the shipped webhook configurations.

The control plane and the webhook start once per session; each test gets its own
namespace. Logs of every component stay in pytest's temporary directory; a failing test
prints where they are and their last lines.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from controlplane.build import ensure_binaries
from controlplane.harness import ControlPlane, group_of_node
from devtools.registration import register, wait_until_called
from devtools.server import RunningServer, start_server
from policies.loader import parse_policy_text

ENFORCE_POLICY = "mode: enforce\n"
AUDIT_POLICY = "mode: audit\n"


def _binaries_or_skip() -> Path:
    if shutil.which("go") is None:
        pytest.skip("end-to-end tests need Go to build the control plane (make controlplane)")
    return ensure_binaries()


@dataclass
class Webhook:
    """The running webhook and its live policy file."""

    server: RunningServer
    policy_file: Path

    def revision(self) -> str:
        with self.server.session() as session:
            return str(session.get(self.server.url + "/readyz", timeout=5).json()["policyRevision"])

    def set_policy(self, text: str, timeout: float = 10.0) -> None:
        """Write a new policy and wait until every worker serves it."""
        wanted = parse_policy_text(text).revision
        self.policy_file.write_text(text)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.revision() == wanted for _ in range(4)):
                return
            time.sleep(0.1)
        raise TimeoutError(f"policy revision {wanted} not in force after {timeout} s")


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
    policy_file = workdir / "policy.yaml"
    policy_file.write_text(ENFORCE_POLICY)
    running = Webhook(start_server(workdir, "--policy", str(policy_file), workers=2), policy_file)
    try:
        register(cluster, running.server.url, running.server.ca_file)
        cluster.ensure_namespace("spotguard-canary")
        wait_until_called(cluster, "spotguard-canary")
        yield running
    finally:
        running.server.stop()  # the one running now: a test may have restarted it


@pytest.fixture
def enforce(webhook: Webhook) -> Webhook:
    webhook.set_policy(ENFORCE_POLICY)
    return webhook


@pytest.fixture
def namespace(cluster: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
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


def wait_scheduled(
    cluster: ControlPlane, namespace: str, selector: str, count: int, timeout: float = 60
) -> list[dict[str, Any]]:
    """Pods matching ``selector`` once ``count`` of them are bound to a node."""
    deadline = time.monotonic() + timeout
    pods: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        result = cluster.kubectl(
            "get", "pods", "-n", namespace, "-l", selector, "-o", "json", check=True
        )
        pods = json.loads(result.stdout)["items"]
        if len([p for p in pods if p["spec"].get("nodeName")]) >= count:
            return pods
        time.sleep(0.3)
    raise TimeoutError(f"{count} pods matching {selector} not scheduled in {timeout} s: {pods}")


def node_group_of(pod: dict[str, Any]) -> str:
    return group_of_node(pod["spec"]["nodeName"]).name
