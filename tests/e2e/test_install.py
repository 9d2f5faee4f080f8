"""A fresh install on a real control plane, the way a user does it, with the webhook
answering `kubectl apply` through the Service the manifests register: `helm install`,
`helm upgrade` and `helm uninstall` of the chart, and one `kubectl apply -k` of a
provider overlay.

The control plane has no kubelet to run the image, so testsupport.installed plays one: it runs
the certificate Job's command and the Deployment's server with their own ServiceAccounts'
tokens, the TLS Secret's files synced like a mounted Secret, the server listening on the
Service's ClusterIP and port (the control plane's service CIDR is on loopback for this).
The API server resolves the registration's Service to that address and verifies the
certificate against the caBundle the Job wrote, as in a cluster.

The Helm lifecycle, in order:
1. `helm install` in audit mode (the README's first rollout): the Job fills the Secret and
   the caBundle, the server comes up; `kubectl apply` of a pod that tolerates spot without
   being fault-tolerant is admitted with spotguard's audit warning.
2. `helm upgrade --reuse-values --set mode=enforce`: a new Job runs (a no-op), the caBundle
   survives the upgrade, the server takes the new policy live; the same pod is denied and a
   fault-tolerant pod is mutated.
3. `helm uninstall`: nothing of spotguard's is left in the cluster, and the pod is admitted
   with no word from spotguard.

kustomize: `kubectl apply -k deploy/overlays/eks`, the Job's command, the server: the same
pod is denied, a training pod gets AWS's window.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controlplane.harness import ControlPlane
from controlplane.polling import wait_for
from tests.e2e.rendering import DEPLOY, helm, helm_binary
from testsupport.helmcli import CHART
from testsupport.installed import (
    ServedDeployment,
    get,
    loopback_service_cidr,
    privileged_ports_problem,
    run_job,
    service_port_flags,
    spotguard_objects,
)
from testsupport.installed import serve_deployment as serve
from testsupport.server import REPO
from webhook.cli import package_version

pytestmark = pytest.mark.e2e

NAMESPACE = "spotguard-system"
RELEASE = "spotguard"
TEAM = "team-ml"
WEB_ON_SPOT = REPO / "examples" / "web-on-eks-spot.yaml"
TRAINING_POD = REPO / "examples" / "training-pod.yaml"
AUDIT_WARNING = "Warning: spotguard audit [spot-requires-fault-tolerance]"


@dataclass
class Cluster:
    plane: ControlPlane
    helm_bin: Path
    workdir: Path

    def helm(self, *args: str) -> str:
        result = helm(self.helm_bin, *args, kubeconfig=self.plane.kubeconfig)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def apply(self, manifest: Path) -> tuple[int, str]:
        result = self.plane.kubectl("apply", "-n", TEAM, "-f", str(manifest))
        return result.returncode, result.stdout + result.stderr

    def dry_run(self, manifest: Path) -> tuple[int, str]:
        result = self.plane.kubectl(
            "create", "--dry-run=server", "-o", "json", "-n", TEAM, "-f", str(manifest)
        )
        return result.returncode, result.stdout + result.stderr

    def run_certs_job(self) -> str:
        jobs = json.loads(
            self.plane.kubectl(
                "get", "jobs", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=certs",
                "-o", "json", check=True,
            ).stdout
        )["items"]  # fmt: skip
        (job,) = jobs  # helm removed the previous revision's Job
        result = run_job(self.plane, NAMESPACE, job, self.workdir)
        assert result.returncode == 0, result.stdout + result.stderr
        return str(job["metadata"]["name"]) + ": " + result.stdout


def private_plane(workdir: Path, bin_dir: Path) -> ControlPlane:
    """A control plane of its own (the session's has its own spotguard registered) whose
    Service ClusterIPs are loopback addresses; no controllers: nothing runs Jobs or pods."""
    plane = ControlPlane(
        workdir / "plane",
        bin_dir=bin_dir,
        controllers=False,
        scheduler=False,
        nodes=False,
        extra_apiserver_args=[f"--service-cluster-ip-range={loopback_service_cidr()}"],
    )
    plane.start()
    return plane


@pytest.fixture
def helm_cluster(tmp_path: Path, cluster: ControlPlane) -> Iterator[Cluster]:
    helm_bin = helm_binary()
    plane = private_plane(tmp_path, cluster.bin_dir)
    try:
        plane.ensure_namespace(TEAM)
        yield Cluster(plane, helm_bin, tmp_path)
    finally:
        plane.stop()


def ca_bundles(plane: ControlPlane) -> list[str]:
    bundles = []
    for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
        for hook in get(plane, kind, RELEASE)["webhooks"]:
            bundles.append(hook["clientConfig"].get("caBundle", ""))
    return bundles


def install_in_audit_mode(cluster: Cluster) -> list[str]:
    """helm install, then the Job's command; returns the caBundles it wrote."""
    plane = cluster.plane
    notes = cluster.helm(
        "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
        "--set", "providers={eks,karpenter}", "--set", "mode=audit", *service_port_flags(),
    )  # fmt: skip
    assert "STATUS: deployed" in notes
    installed = f"spotguard {package_version()} is installed in namespace {NAMESPACE}"
    assert f"{installed}, in audit mode" in notes
    assert "--set mode=enforce" in notes  # NOTES.txt says what to do next
    deployment = get(plane, "deployment", RELEASE, NAMESPACE)
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"spotguard:{package_version()}"
    secret = get(plane, "secret", f"{RELEASE}-tls", NAMESPACE)
    assert secret["type"] == "Opaque" and not secret.get("data")  # the chart's, still empty

    job_output = cluster.run_certs_job()
    assert job_output.startswith(f"{RELEASE}-certs-1: ")
    assert "wrote secret" in job_output and "patched caBundle" in job_output
    bundles = ca_bundles(plane)
    # mutate, validate, workloads (templates) and the policy ConfigMap's own webhook
    assert len(bundles) == 4 and all(bundles), "every webhook gets the CA bundle"
    return bundles


def audit_warns(cluster: Cluster, served: ServedDeployment) -> None:
    state = served.wait_ready()
    assert state["policySource"].startswith(f"configmap {NAMESPACE}/{RELEASE}-policy")

    # The API server calls the webhook through the Service (a moment after it is up).
    def audited() -> bool:
        code, output = cluster.dry_run(WEB_ON_SPOT)
        return code == 0 and AUDIT_WARNING in output

    wait_for(audited, 30, "the API server calling spotguard", 0.3)
    code, output = cluster.apply(WEB_ON_SPOT)
    assert code == 0, output
    assert "pod/checkout-api created" in output and AUDIT_WARNING in output
    cluster.plane.kubectl("delete", "pod", "checkout-api", "-n", TEAM, "--wait=false", check=True)


def upgrade_to_enforce(cluster: Cluster, bundles: list[str]) -> None:
    upgraded = cluster.helm(
        "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, "--reuse-values",
        "--set", "mode=enforce",
    )  # fmt: skip
    assert "REVISION: 2" in upgraded and "enforce mode" in upgraded
    assert ca_bundles(cluster.plane) == bundles, "helm upgrade must keep the Job's caBundle"
    assert "certificates are current" in cluster.run_certs_job()  # spotguard-certs-2

    def denied() -> bool:
        code, output = cluster.dry_run(WEB_ON_SPOT)
        return code != 0 and "denied the request" in output

    wait_for(denied, 30, "the enforce policy in force", 0.3)
    code, output = cluster.apply(WEB_ON_SPOT)
    assert code != 0
    assert 'admission webhook "validate.spotguard.dev" denied the request' in output
    assert "spot-requires-fault-tolerance" in output
    code, output = cluster.dry_run(TRAINING_POD)
    assert code == 0, output
    mutated = json.loads(output[output.index("{") :])
    assert "spotguard.dev/injected" in mutated["metadata"]["annotations"]
    assert mutated["spec"]["terminationGracePeriodSeconds"] == 110  # AWS's window, not 15 s


def test_install_audit_upgrade_enforce_uninstall(helm_cluster: Cluster) -> None:
    bundles = install_in_audit_mode(helm_cluster)
    served = serve(helm_cluster.plane, NAMESPACE, RELEASE, helm_cluster.workdir / "server")
    try:
        audit_warns(helm_cluster, served)
        upgrade_to_enforce(helm_cluster, bundles)
        log = served.log_file.read_text()
        assert "Forbidden" not in log and "failed: 403" not in log, log
    finally:
        served.stop()

    before = set(
        spotguard_objects(helm_cluster.plane, NAMESPACE)
    )  # what uninstall must remove: the check sees it
    assert {
        "mutatingwebhookconfiguration.admissionregistration.k8s.io/spotguard",
        "clusterrole.rbac.authorization.k8s.io/spotguard-certs",
        "deployment.apps/spotguard",
        "cronjob.batch/spotguard-certs-rotate",
        "job.batch/spotguard-certs-2",
        "secret/spotguard-tls",  # filled by the Job, owned by the chart
        "configmap/spotguard-policy",
    } <= before, before
    uninstalled = helm_cluster.helm("uninstall", RELEASE, "--namespace", NAMESPACE)
    assert f'release "{RELEASE}" uninstalled' in uninstalled
    assert spotguard_objects(helm_cluster.plane, NAMESPACE) == []
    code, output = helm_cluster.dry_run(WEB_ON_SPOT)
    assert code == 0 and "Warning" not in output, output


def test_kubectl_apply_k_installs_a_working_webhook(tmp_path: Path, cluster: ControlPlane) -> None:
    problem = privileged_ports_problem()
    if problem is not None:
        pytest.skip(f"the kustomize Service listens on 443, and {problem}")
    plane = private_plane(tmp_path, cluster.bin_dir)
    try:
        plane.ensure_namespace(TEAM)
        installed = Cluster(plane, Path("helm-not-used"), tmp_path)
        applied = plane.kubectl("apply", "-k", str(DEPLOY / "overlays" / "eks"))
        assert applied.returncode == 0, applied.stderr
        assert "deployment.apps/spotguard created" in applied.stdout
        job = get(plane, "job", "spotguard-certs", NAMESPACE)
        ran = run_job(plane, NAMESPACE, job, tmp_path)
        assert ran.returncode == 0 and "wrote secret" in ran.stdout, ran.stdout + ran.stderr
        served = serve(plane, NAMESPACE, "spotguard", tmp_path / "server")
        try:
            served.wait_ready()

            def denied() -> bool:
                code, output = installed.dry_run(WEB_ON_SPOT)
                return code != 0 and "denied the request" in output

            wait_for(denied, 30, "the API server calling spotguard", 0.3)
            code, output = installed.dry_run(TRAINING_POD)
            assert code == 0, output
            mutated = json.loads(output[output.index("{") :])
            assert mutated["spec"]["terminationGracePeriodSeconds"] == 110
        finally:
            served.stop()
    finally:
        plane.stop()
