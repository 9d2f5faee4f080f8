"""The install applied for real on a private control plane, each command under its own
ServiceAccount's token: the certificate job's command and the server's (with the
Deployment's arguments and the files its Secret volume mounts) can do their work (the
policy watch restricted by resourceNames through the metadata.name field selector, Events,
the background audit, the live registration check) and are refused everything else; the
pod templates pass admission (Pod Security "restricted", priority, quota).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controlplane.harness import ControlPlane
from controlplane.loopback import free_port
from controlplane.polling import wait_for
from policies.loader import parse_policy_text
from tests.e2e.install_facts import (
    CERTS_ARGS,
    CERTS_SA,
    INSTALL,
    NAMESPACE,
    POLICY_REPORT_CRD,
    SERVER_SA,
    Manifest,
    pod_templates,
)
from tests.e2e.rendering import find, kustomize, policy_of
from testsupport.installed import ServedDeployment, kubeconfig_for, serve_deployment
from testsupport.server import REPO
from webhook.policy_sources import DEFAULT_CONFIGMAP_KEY

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def base(cluster: ControlPlane) -> list[Manifest]:
    """The base as a provider overlay installs it (eks)."""
    return kustomize(cluster, INSTALL)


# -- live: the base applied for real, each command under its own identity -----------------


@dataclass
class Live:
    plane: ControlPlane
    documents: list[Manifest]
    workdir: Path

    def kubeconfig_for(self, account: str) -> Path:
        """A kubeconfig holding a token of ServiceAccount ``account``."""
        return kubeconfig_for(self.plane, NAMESPACE, account, self.workdir)

    def can(self, user: str, verb: str, resource: str, namespace: str = NAMESPACE) -> bool:
        result = self.plane.kubectl("auth", "can-i", verb, resource, "-n", namespace, "--as", user)
        assert result.stdout.strip() in ("yes", "no"), result.stderr
        return result.stdout.strip() == "yes"

    def get(self, kind: str, name: str) -> Manifest:
        args = ["get", kind, name, "-o", "json"]
        if not kind.endswith("webhookconfiguration"):
            args += ["-n", NAMESPACE]
        document: Manifest = json.loads(self.plane.kubectl(*args, check=True).stdout)
        return document


@pytest.fixture(scope="module")
def live(
    cluster: ControlPlane, base: list[Manifest], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    """A private control plane (its webhook configurations must not replace the session's
    registrations) without controllers: the Deployment and the Job stay objects only."""
    workdir = tmp_path_factory.mktemp("manifests-live")
    plane = ControlPlane(
        workdir / "plane", bin_dir=cluster.bin_dir, controllers=False, scheduler=False, nodes=False
    )
    plane.start()
    try:
        # A real apply creates the Namespace before the objects in it. The PolicyReport CRD
        # (the policy-reports component) is what the background audit writes to.
        plane.kubectl("apply", "-k", str(REPO / INSTALL), check=True)
        plane.kubectl("apply", "-f", str(POLICY_REPORT_CRD), check=True)
        yield Live(plane, base, workdir)
    finally:
        plane.stop()


def run_spotguard(args: list[str], kubeconfig: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webhook", *args, "--kubeconfig", str(kubeconfig)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def certificates(live: Live) -> subprocess.CompletedProcess[str]:
    """The cert Job's command, run once with the Job's own ServiceAccount."""
    (container,) = find(live.documents, "Job", "spotguard-certs")["spec"]["template"]["spec"][
        "containers"
    ]
    return run_spotguard(container["args"], live.kubeconfig_for("spotguard-certs"))


def test_cert_job_identity_can_do_its_work_and_nothing_else(
    live: Live, certificates: subprocess.CompletedProcess[str]
) -> None:
    assert certificates.returncode == 0, certificates.stdout + certificates.stderr
    secret = live.get("secret", "spotguard-tls")
    assert {"tls.crt", "tls.key", "ca.crt", "ca.key"} <= set(secret["data"])
    for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
        for webhook in live.get(kind, "spotguard")["webhooks"]:
            assert webhook["clientConfig"].get("caBundle"), f"{kind}: no caBundle"
    again = run_spotguard(CERTS_ARGS, live.kubeconfig_for("spotguard-certs"))  # the CronJob
    assert again.returncode == 0, again.stdout + again.stderr
    assert live.get("secret", "spotguard-tls")["data"] == secret["data"]

    assert live.can(CERTS_SA, "create", "secrets")
    assert live.can(CERTS_SA, "update", "secrets/spotguard-tls")
    for verb, resource in [
        ("list", "secrets"),
        ("get", "secrets/other"),
        ("delete", "secrets/spotguard-tls"),
        ("get", "configmaps/spotguard-policy"),
        ("patch", "mutatingwebhookconfigurations/someone-elses"),
        ("delete", "validatingwebhookconfigurations/spotguard"),
        ("create", "pods"),
        ("list", "pods"),
    ]:
        assert not live.can(CERTS_SA, verb, resource), f"spotguard-certs may {verb} {resource}"


@pytest.fixture
def served(
    live: Live, certificates: subprocess.CompletedProcess[str], tmp_path: Path
) -> Iterator[ServedDeployment]:
    """``spotguard serve`` with the Deployment's arguments, the files its Secret volume
    mounts, and the server ServiceAccount's token, checked the way the API server would
    (testsupport.installed)."""
    assert certificates.returncode == 0, certificates.stdout + certificates.stderr
    server = serve_deployment(
        live.plane, NAMESPACE, "spotguard", tmp_path, bind=("127.0.0.1", free_port())
    )
    # Only the serving pair, as the volume's items say: never the CA's key.
    assert sorted(p.name for p in (tmp_path / "certs").iterdir()) == ["tls.crt", "tls.key"]
    try:
        yield server
    finally:
        server.stop()
    log = server.log_file.read_text()
    assert "Forbidden" not in log and "failed: 403" not in log, log


def set_policy(live: Live, text: str) -> None:
    patch = json.dumps({"data": {DEFAULT_CONFIGMAP_KEY: text}})
    live.plane.kubectl(
        "patch", "configmap", "spotguard-policy", "-n", NAMESPACE, "-p", patch, check=True
    )


def test_server_identity_can_watch_its_policy_and_record_events(
    live: Live, served: ServedDeployment
) -> None:
    state = served.wait_for_state("policyRevision", timeout=30)
    assert state["policyRevision"] == parse_policy_text(policy_of(live.documents)).revision
    # It reads its own webhook registration, and finds that it sends what the policy needs.
    assert served.wait_for_state("registrationCoversPolicy")["registrationProblems"] == []

    # A new revision arrives through the watch (list + watch with the name field selector).
    # (the installed policy in audit mode: a policy with other spot presets would need
    # another registration, and be refused until it is applied)
    audit = policy_of(live.documents).replace("mode: enforce", "mode: audit", 1)
    set_policy(live, audit)
    revision = parse_policy_text(audit).revision
    wait_for(lambda: (served.readyz() or {}).get("policyRevision") == revision, 20, "revision")

    # A bad revision is refused, the last good one stays, and an Event says why.
    set_policy(live, "mode: sometimes\n")
    assert served.wait_for_state("policyError")["policyRevision"] == revision

    def refused_event() -> bool:
        events = live.plane.kubectl("get", "events", "-n", NAMESPACE, "-o", "json", check=True)
        return any(e["reason"] == "PolicyRefused" for e in json.loads(events.stdout)["items"])

    wait_for(refused_event, 20, "a PolicyRefused event")
    set_policy(live, policy_of(live.documents))


def test_server_identity_is_refused_everything_else(live: Live) -> None:
    # What the watch caches list and watch (webhook/cluster.py), in every namespace.
    for resource in ("nodes", "pods", "persistentvolumeclaims", "persistentvolumes"):
        for verb in ("list", "watch"):
            assert live.can(SERVER_SA, verb, resource, namespace="default"), (verb, resource)
    assert live.can(SERVER_SA, "watch", "daemonsets.apps", namespace="default")
    assert live.can(SERVER_SA, "watch", "configmaps/spotguard-policy")
    # The live webhook registration, checked against the policy (--webhook-config).
    assert live.can(SERVER_SA, "watch", "validatingwebhookconfigurations/spotguard")
    # The background audit: lists, its Lease, its reports and Events.
    assert live.can(SERVER_SA, "list", "deployments.apps", namespace="team-a")
    assert live.can(SERVER_SA, "list", "namespaces", namespace="default")
    assert live.can(SERVER_SA, "update", "leases.coordination.k8s.io/spotguard-audit")
    assert live.can(SERVER_SA, "create", "policyreports.wgpolicyk8s.io", namespace="team-a")
    assert live.can(SERVER_SA, "create", "events", namespace="team-a")
    for verb, resource, namespace in [
        ("list", "mutatingwebhookconfigurations", NAMESPACE),  # without the field selector
        ("get", "validatingwebhookconfigurations/someone-elses", NAMESPACE),
        ("patch", "mutatingwebhookconfigurations/spotguard", NAMESPACE),
        ("list", "configmaps", NAMESPACE),  # without the metadata.name field selector
        ("get", "configmaps/other", NAMESPACE),
        ("update", "configmaps/spotguard-policy", NAMESPACE),
        ("get", "secrets/spotguard-tls", NAMESPACE),
        ("list", "secrets", "team-a"),
        ("get", "nodes/some-node", NAMESPACE),
        ("get", "pods/some-pod", "team-a"),  # a Binding's pod comes from the cache
        ("create", "pods", NAMESPACE),
        ("watch", "deployments.apps", "team-a"),
        ("delete", "pods/some-pod", "team-a"),
        ("get", "deployments.apps/web", "team-a"),
        ("delete", "events", NAMESPACE),
        ("patch", "events", "team-a"),
        ("update", "leases.coordination.k8s.io/someone-elses", NAMESPACE),
        ("get", "leases.coordination.k8s.io/someone-elses", NAMESPACE),
        ("create", "leases.coordination.k8s.io", "team-a"),
        ("create", "clusterpolicyreports.wgpolicyk8s.io", "team-a"),
    ]:  # fmt: skip
        assert not live.can(SERVER_SA, verb, resource, namespace), (
            f"spotguard may {verb} {resource}"
        )


@pytest.fixture
def violating_pod(live: Live) -> str:
    """A pod that selects spot nodes, created before the server (whose first audit runs
    at start; the next one 300 s later)."""
    plane = live.plane
    plane.kubectl("create", "namespace", "team-a")
    plane.kubectl("create", "serviceaccount", "default", "-n", "team-a")
    bad = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "on-spot", "namespace": "team-a"},
        "spec": {"nodeSelector": {"eks.amazonaws.com/capacityType": "SPOT"},
                 "containers": [{"name": "c", "image": "registry.example/c:1"}]},
    }  # fmt: skip
    plane.kubectl("apply", "-f", "-", input=json.dumps(bad), check=True)
    return "team-a"


def test_server_identity_can_run_the_background_audit(
    live: Live, violating_pod: str, served: ServedDeployment
) -> None:
    """The Deployment's arguments turn the audit on: under the server's own token it takes
    the Lease, lists the cluster, writes a PolicyReport and an Event, and is refused nothing
    (the served fixture fails on any 403 in the log)."""
    plane = live.plane

    def report() -> Manifest | None:
        got = plane.kubectl("get", "policyreport", "spotguard", "-n", violating_pod, "-o", "json")
        return json.loads(got.stdout) if got.returncode == 0 else None

    found: Manifest = wait_for(report, 30, f"the PolicyReport of {violating_pod}")
    assert found["summary"]["fail"] == 1, found
    assert found["results"][0]["rule"] == "spot-requires-fault-tolerance"
    lease = live.get("lease", "spotguard-audit")
    assert lease["spec"]["holderIdentity"]
    events = plane.kubectl("get", "events", "-n", violating_pod, "-o", "json", check=True)
    assert any(e["reason"] == "SpotguardViolation" for e in json.loads(events.stdout)["items"])


def test_pod_templates_pass_admission(live: Live) -> None:
    """Each pod template, as a Pod: Pod Security "restricted" (enforced on the namespace),
    the priority class outside kube-system, the ResourceQuota, the ServiceAccounts."""
    for name, template in pod_templates(live.documents).items():
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{name}-probe",
                "namespace": NAMESPACE,
                "labels": template["metadata"]["labels"],
            },
            "spec": template["spec"],
        }
        result = live.plane.kubectl(
            "create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(pod)
        )
        assert result.returncode == 0, f"{name}: {result.stderr}"
        assert "Warning" not in result.stderr, f"{name}: {result.stderr}"
        admitted = json.loads(result.stdout)
        if name == "spotguard":
            assert admitted["spec"]["priority"] == 2_000_000_000
