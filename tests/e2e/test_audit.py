"""The cluster audit on the real control plane: `spotguard audit` and the background audit
of `spotguard serve`.

Violating objects are created while spotguard runs in audit mode (admitted with warnings),
as during an "audit, then enforce" rollout: a bare pod that tolerates spot, and a
Deployment whose pods select spot nodes (so the scheduler puts them there). Then:

- `spotguard audit` reports them (text, JSON, PolicyReport), as warnings under the live
  audit-mode policy and as failures under an enforce policy given with --policy;
- two servers run the background audit: one holds the Lease and publishes the namespace's
  PolicyReport, the spotguard_audit_violations gauge and one Warning Event per violating
  workload within one interval; when the objects are fixed, both go back to clean within
  an interval; the Events are not repeated; when the leader stops, the other takes over.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from controlplane import polling
from controlplane.harness import ControlPlane
from controlplane.loopback import free_port
from controlplane.queries import wait_scheduled
from tests.e2e.conftest import (
    AUDIT_POLICY,
    POLICY_CONFIGMAP,
    SYSTEM_NAMESPACE,
    Webhook,
)
from testsupport.server import REPO, RunningServer, start_server

pytestmark = pytest.mark.e2e
HERE = Path(__file__).parent
INTERVAL = 3.0
SPOT = {"eks.amazonaws.com/capacityType": "SPOT"}
ON_DEMAND = {"eks.amazonaws.com/capacityType": "ON_DEMAND"}


def tolerating_pod(name: str) -> dict[str, Any]:
    """Not fault-tolerant, tolerates spot; kept on on-demand nodes, so one violation only."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": ON_DEMAND,
            "tolerations": [{"key": "spot", "operator": "Equal", "value": "true",
                             "effect": "NoSchedule"}],
            "containers": [{"name": "c", "image": "python:3.11-slim"}],
        },
    }  # fmt: skip


def deployment(name: str, node_selector: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "nodeSelector": node_selector,
                    "containers": [{"name": "c", "image": "python:3.11-slim"}],
                },
            },
        },
    }


@pytest.fixture(scope="module")
def policy_report_crd(cluster: ControlPlane) -> None:
    crd = REPO / "deploy/helm/spotguard/files/policy-reports/policyreport-crd.yaml"
    cluster.kubectl("apply", "-f", str(crd), check=True)
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/policyreports.wgpolicyk8s.io",
        "--timeout=30s", check=True,
    )  # fmt: skip


@pytest.fixture
def audit_mode(webhook: Webhook) -> Iterator[Webhook]:
    with webhook.policy(AUDIT_POLICY):
        yield webhook


def create_violations(cluster: ControlPlane, namespace: str) -> None:
    for manifest in (tolerating_pod("tolerates-spot"), deployment("batch-api", SPOT)):
        result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))
        assert result.returncode == 0, result.stderr
        assert "Warning: spotguard audit" in result.stderr  # admitted, with a warning
    wait_scheduled(cluster, namespace, "app=batch-api", count=1)


def audit_cli(cluster: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webhook", "audit", "--kubeconfig", str(cluster.kubeconfig),
         *args],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_spotguard_audit_reports_the_violating_objects(
    cluster: ControlPlane,
    audit_mode: Webhook,
    namespace: str,
    policy_report_crd: None,
    tmp_path: Path,
) -> None:
    create_violations(cluster, namespace)
    text = audit_cli(cluster, "-n", namespace)
    assert text.returncode == 0, text.stderr  # the live policy audits: warnings only
    lines = text.stdout.splitlines()
    reported = {(line.split(" ")[0].rsplit("-", 2)[0], line.split(": ")[1]) for line in lines}
    assert reported == {("pod/tolerates", "warn"), ("deployment.apps/batch", "warn"),
                        ("pod/batch-api", "warn")}, lines  # fmt: skip
    assert any("[spot-node-binding] spec.nodeName: " in line for line in lines), lines
    assert "objects judged in 1 namespace" in text.stderr

    enforce = tmp_path / "enforce.yaml"
    enforce.write_text("mode: enforce\n")
    failed = audit_cli(cluster, "-n", namespace, "--policy", str(enforce), "-o", "json")
    assert failed.returncode == 1, failed.stderr
    records = [json.loads(line) for line in failed.stdout.splitlines()]
    assert {r["result"] for r in records} == {"fail"}
    assert {(r["kind"], r["rule"]) for r in records} == {
        ("Pod", "spot-requires-fault-tolerance"),  # both pods: toleration, nodeSelector
        ("Pod", "spot-node-binding"),  # the Deployment's pod runs on a spot node
        ("Deployment", "spot-requires-fault-tolerance"),
    }

    reports = audit_cli(cluster, "-n", namespace, "-o", "policyreport")
    (report,) = [d for d in yaml.safe_load_all(reports.stdout) if d]
    assert report["summary"] == {"pass": 0, "fail": 0, "warn": 4, "error": 0, "skip": 0}
    applied = cluster.kubectl("apply", "-f", "-", input=reports.stdout)  # valid for the CRD
    assert applied.returncode == 0, applied.stderr


def scrape(port: int) -> dict[str, float]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    samples = {}
    for line in text.splitlines():
        if line.startswith("spotguard_audit"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


wait_for = functools.partial(polling.wait_for, interval=0.2)  # a check runs kubectl: gently


def report_of(cluster: ControlPlane, namespace: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", "policyreport", "spotguard", "-n", namespace, "-o", "json")
    return json.loads(result.stdout) if result.returncode == 0 else None


def lease_holder(cluster: ControlPlane) -> str:
    result = cluster.kubectl(
        "get", "lease", "spotguard-audit", "-n", SYSTEM_NAMESPACE, "-o", "json"
    )
    return json.loads(result.stdout)["spec"].get("holderIdentity") or "" if (
        result.returncode == 0
    ) else ""  # fmt: skip


def identity_of(server: RunningServer) -> str | None:
    for line in server.log_file.read_text().splitlines():
        if '"spotguard.lease"' in line and " leads" in line:
            return str(json.loads(line)["message"].rsplit(" ", 2)[-2])
    return None


def start_auditor(cluster: ControlPlane, workdir: Path, metrics_port: int) -> RunningServer:
    return start_server(
        workdir,
        "--policy-configmap", f"{SYSTEM_NAMESPACE}/{POLICY_CONFIGMAP}",
        "--kubeconfig", str(cluster.kubeconfig),
        "--metrics-bind", f"127.0.0.1:{metrics_port}",
        "--audit-interval", str(INTERVAL),
    )  # fmt: skip


def test_background_audit_publishes_within_an_interval_and_follows_fixes(
    cluster: ControlPlane,
    audit_mode: Webhook,
    namespace: str,
    policy_report_crd: None,
    tmp_path: Path,
) -> None:
    ports = [free_port(), free_port()]
    servers = [start_auditor(cluster, tmp_path / f"auditor-{i}", ports[i]) for i in range(2)]
    try:
        wait_for(lambda: lease_holder(cluster) in {identity_of(s) for s in servers}, 30, "lease")
        leader = next(i for i, s in enumerate(servers) if identity_of(s) == lease_holder(cluster))
        wait_for(lambda: scrape(ports[leader]).get(
            "spotguard_audit_last_run_timestamp_seconds"), 30, "a first audit")  # fmt: skip

        create_violations(cluster, namespace)
        created = time.monotonic()
        key = f'{{mode="audit",namespace="{namespace}",rule="%s"}}'
        gauge = "spotguard_audit_violations" + key

        def reported() -> bool:
            report = report_of(cluster, namespace)
            metrics = scrape(ports[leader])
            return bool(
                report and report["summary"]["warn"] == 4
                and metrics.get(gauge % "spot-requires-fault-tolerance") == 3
                and metrics.get(gauge % "spot-node-binding") == 1
            )  # fmt: skip

        wait_for(reported, 4 * INTERVAL, "violations in the report and the gauge")
        latency = time.monotonic() - created
        print(f"violations published {latency:.1f} s after they existed (interval {INTERVAL} s)")
        assert latency <= INTERVAL + 2.5  # one interval, plus one audit run
        follower = scrape(ports[1 - leader])
        assert not any(v for k, v in follower.items() if namespace in k)  # it does not audit

        events = violation_events(cluster, namespace)
        assert {(e["involvedObject"]["kind"], e["involvedObject"]["name"]) for e in events} == {
            ("Pod", "tolerates-spot"), ("Deployment", "batch-api")}  # fmt: skip

        # Fix both: delete the pod, move the Deployment's pods to on-demand nodes.
        cluster.kubectl("delete", "pod", "tolerates-spot", "-n", namespace, "--wait=false",
                        check=True)  # fmt: skip
        patch = {"spec": {"template": {"spec": {"nodeSelector": ON_DEMAND}}}}
        cluster.kubectl("patch", "deployment", "batch-api", "-n", namespace, "-p",
                        json.dumps(patch), check=True)  # fmt: skip

        def clean() -> bool:
            report = report_of(cluster, namespace)
            metrics = scrape(ports[leader])
            return bool(
                report and report["summary"]["warn"] == 0 and report["results"] == []
                and metrics.get(gauge % "spot-requires-fault-tolerance") == 0
                and metrics.get(gauge % "spot-node-binding") == 0
            )  # fmt: skip

        patched = time.monotonic()
        wait_for(clean, 60, "the report and the gauge back to clean")
        fixed = time.monotonic() - patched
        print(f"fixes published {fixed:.1f} s after they were made (includes pod replacement)")
        time.sleep(2 * INTERVAL)  # two more runs: no Event repeated
        assert len(violation_events(cluster, namespace)) == len(events)

        # The leader stops (releasing the Lease): the other takes over and audits.
        servers[leader].stop()
        other = servers[1 - leader]
        wait_for(lambda: lease_holder(cluster) == identity_of(other), 15, "takeover")
        last_run = "spotguard_audit_last_run_timestamp_seconds"
        wait_for(lambda: scrape(ports[1 - leader]).get(last_run), 15, "the new leader's audit")
    finally:
        for server in servers:
            server.stop()


def violation_events(cluster: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    result = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=SpotguardViolation",
        "-o", "json", check=True,
    )  # fmt: skip
    items: list[dict[str, Any]] = json.loads(result.stdout)["items"]
    return items
