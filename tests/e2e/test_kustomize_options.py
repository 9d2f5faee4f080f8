"""Options as kustomize components, composed with a provider overlay the way a user does
(a kustomization of their own: the overlay as a resource, the components listed).

- audit composes with every provider: the mode line changes, the provider's presets stay.
- Every component passes a server-side dry run with a provider, alone and all together.
- The PolicyReport CRD is installed for real: it accepts a report shaped like the API's
  documented fields and refuses one that is not.
- The monitoring and network-policy components select what they must (the server's pods,
  its metrics port) and carry the shared alert rules and dashboard unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from controlplane.harness import ControlPlane
from policies.loader import parse_policy_text
from policies.model import Mode
from tests.e2e.rendering import (
    COMPONENTS,
    DEPLOY,
    PROVIDERS,
    Manifest,
    compose,
    find,
    keyed,
    kustomize,
    policy_of,
)

pytestmark = pytest.mark.e2e

NAMESPACE = "spotguard-system"
CRDS = Path(__file__).parent / "crds"
STAND_IN_CRDS = (CRDS / "cert-manager.yaml", CRDS / "prometheus-operator.yaml")
CHART_FILES = DEPLOY / "helm" / "spotguard" / "files"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_audit_composes_with_every_provider(
    cluster: ControlPlane, tmp_path: Path, provider: str
) -> None:
    plain = kustomize(cluster, f"deploy/overlays/{provider}")
    audited = kustomize(cluster, compose(tmp_path, provider, ("audit",)))
    policy, enforced = parse_policy_text(policy_of(audited)), parse_policy_text(policy_of(plain))
    assert policy.mode is Mode.AUDIT and enforced.mode is Mode.ENFORCE
    assert policy.spot_labels == enforced.spot_labels  # the provider's presets, kept
    assert policy.notice_seconds == enforced.notice_seconds
    # Line 3 (mode) differs, and nothing else anywhere.
    lines, plain_lines = policy_of(audited).split("\n"), policy_of(plain).split("\n")
    assert [i for i, (a, b) in enumerate(zip(lines, plain_lines, strict=True)) if a != b] == [2]
    changed = {k for k, v in keyed(audited).items() if keyed(plain).get(k) != v}
    assert changed == {("ConfigMap", "spotguard-policy")}


@pytest.fixture(scope="module")
def with_stand_ins(cluster: ControlPlane) -> Iterator[ControlPlane]:
    """The Namespace and the CRDs a server-side dry run of the components needs."""
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(namespace), check=True)
    for crds in STAND_IN_CRDS:
        cluster.kubectl("apply", "-f", str(crds), check=True)
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=30s",
        "crd/certificates.cert-manager.io", "crd/podmonitors.monitoring.coreos.com",
        "crd/prometheusrules.monitoring.coreos.com", check=True,
    )  # fmt: skip
    yield cluster
    for crds in STAND_IN_CRDS:
        cluster.kubectl("delete", "-f", str(crds), "--wait=false", "--ignore-not-found")


@pytest.mark.parametrize("components", [(c,) for c in COMPONENTS] + [COMPONENTS], ids=str)
def test_components_pass_a_server_side_dry_run(
    with_stand_ins: ControlPlane, tmp_path: Path, components: tuple[str, ...]
) -> None:
    path = compose(tmp_path, "gke", components)
    documents = kustomize(with_stand_ins, path)
    result = with_stand_ins.kubectl("apply", "--dry-run=server", "-k", str(path))
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr
    reported = [line for line in result.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(reported) == len(documents), result.stdout


def test_network_policy_admits_the_api_server_and_prometheus_only(
    cluster: ControlPlane, tmp_path: Path
) -> None:
    documents = kustomize(cluster, compose(tmp_path, "eks", ("network-policy",)))
    policy = find(documents, "NetworkPolicy", "spotguard")
    assert policy["metadata"]["namespace"] == NAMESPACE
    selector = policy["spec"]["podSelector"]["matchLabels"]
    deployment = find(documents, "Deployment", "spotguard")
    job = find(documents, "Job", "spotguard-certs")
    for template in (deployment["spec"]["template"], job["spec"]["template"]):
        assert selector.items() <= template["metadata"]["labels"].items()
    assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    ingress = {
        port["port"]: rule.get("from")
        for rule in policy["spec"]["ingress"]
        for port in rule["ports"]
    }
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert set(ingress) == {p["containerPort"] for p in container["ports"]}  # 8443, 9090
    assert ingress[8443] is None  # the API server, wherever it runs
    assert ingress[9090] == [{"namespaceSelector": {}}]  # in-cluster scrapers only
    egress_ports = {port["port"] for rule in policy["spec"]["egress"] for port in rule["ports"]}
    assert egress_ports == {443, 6443}  # the Kubernetes API; no DNS needed


def test_monitoring_scrapes_the_server_and_ships_the_shared_rules_and_dashboard(
    cluster: ControlPlane, tmp_path: Path
) -> None:
    documents = kustomize(cluster, compose(tmp_path, "eks", ("monitoring",)))
    monitor = find(documents, "PodMonitor", "spotguard")
    template = find(documents, "Deployment", "spotguard")["spec"]["template"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    )
    # The job the alerts select is named after this pod label's value.
    assert template["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "spotguard"
    (container,) = template["spec"]["containers"]
    ports = {port["name"] for port in container["ports"]}
    assert {endpoint["port"] for endpoint in monitor["spec"]["podMetricsEndpoints"]} <= ports
    rule = find(documents, "PrometheusRule", "spotguard")
    shared = yaml.safe_load((CHART_FILES / "monitoring" / "prometheusrule.yaml").read_text())
    assert rule["spec"] == shared["spec"]
    dashboard = find(documents, "ConfigMap", "spotguard-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["namespace"] == NAMESPACE
    assert json.loads(dashboard["data"]["spotguard.json"]) == json.loads(
        (CHART_FILES / "monitoring" / "dashboard.json").read_text()
    )


def policy_report(result: str) -> Manifest:
    """A report as spotguard's audit would write it: one namespace, one failing pod."""
    return {
        "apiVersion": "wgpolicyk8s.io/v1alpha2",
        "kind": "PolicyReport",
        "metadata": {"name": "spotguard-probe", "namespace": "default"},
        "scope": {"apiVersion": "v1", "kind": "Namespace", "name": "default"},
        "summary": {"pass": 3, "fail": 1, "warn": 0, "error": 0, "skip": 0},
        "results": [
            {
                "source": "spotguard",
                "policy": "spotguard",
                "rule": "spotRequiresFaultTolerance",
                "result": result,
                "severity": "medium",
                "scored": True,
                "timestamp": {"seconds": 1767225600, "nanos": 0},
                "message": "tolerates spot but is not fault-tolerant",
                "resources": [
                    {"apiVersion": "v1", "kind": "Pod", "name": "web", "namespace": "default"}
                ],
                "properties": {"mode": "audit"},
            }
        ],
    }  # fmt: skip


def test_policy_report_crd_accepts_documented_reports_only(
    cluster: ControlPlane, tmp_path: Path
) -> None:
    path = compose(tmp_path, "aks", ("policy-reports",))
    crd = find(kustomize(cluster, path), "CustomResourceDefinition", "policyreports.wgpolicyk8s.io")
    try:
        cluster.kubectl("apply", "-f", "-", input=json.dumps(crd), check=True)
        cluster.kubectl(
            "wait", "--for=condition=Established", "--timeout=30s",
            "crd/policyreports.wgpolicyk8s.io", check=True,
        )  # fmt: skip
        created = cluster.kubectl("create", "-f", "-", input=json.dumps(policy_report("fail")))
        assert created.returncode == 0, created.stderr
        listed = cluster.kubectl("get", "polr", "-n", "default", check=True).stdout.split()
        assert listed[:7] == ["NAME", "PASS", "FAIL", "WARN", "ERROR", "SKIP", "AGE"]
        assert listed[7:13] == ["spotguard-probe", "3", "1", "0", "0", "0"]
        stored = json.loads(
            cluster.kubectl(
                "get", "polr", "spotguard-probe", "-n", "default", "-o", "json", check=True
            ).stdout
        )
        # Nothing pruned: every documented field is in the schema.
        assert stored["results"] == policy_report("fail")["results"]
        assert stored["scope"] == policy_report("fail")["scope"]
        bad = policy_report("maybe")
        bad["metadata"]["name"] = "spotguard-bad"
        refused = cluster.kubectl("create", "-f", "-", input=json.dumps(bad))
        assert refused.returncode != 0
        assert 'Unsupported value: "maybe"' in refused.stderr, refused.stderr
    finally:
        cluster.kubectl("delete", "crd", "policyreports.wgpolicyk8s.io", "--ignore-not-found")
