"""What the shipped install is meant to be, shared by the tests of the rendered manifests
(test_manifests.py) and of the identities they create (test_install_identities.py)."""

from __future__ import annotations

from typing import Any

from tests.e2e.rendering import PROVIDERS
from testsupport.server import REPO
from webhook.cli import package_version

Manifest = dict[str, Any]

NAMESPACE = "spotguard-system"
KUSTOMIZATIONS = (*(f"deploy/overlays/{name}" for name in PROVIDERS), "deploy/kind")
#: The provider overlay the structural and live tests install.
INSTALL = "deploy/overlays/eks"
CRDS = REPO / "tests" / "e2e" / "crds"
POLICY_REPORT_CRD = REPO / "deploy/helm/spotguard/files/policy-reports/policyreport-crd.yaml"
#: Stand-ins for the CRDs of the components' objects (cert-manager, Prometheus Operator).
STAND_IN_CRDS = (CRDS / "cert-manager.yaml", CRDS / "prometheus-operator.yaml")
IMAGE = f"spotguard:{package_version()}"
SERVICE_HOST = f"spotguard.{NAMESPACE}.svc"  # the name the API server verifies
SERVER_SA = f"system:serviceaccount:{NAMESPACE}:spotguard"
CERTS_SA = f"system:serviceaccount:{NAMESPACE}:spotguard-certs"
SECURE_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
SERVE_ARGS = [
    "serve", "--bind", "0.0.0.0:8443", "--cert-dir", "/etc/spotguard/certs",
    "--policy-configmap", f"{NAMESPACE}/spotguard-policy", "--metrics-bind", "0.0.0.0:9090",
    "--runtime-dir", "/tmp/spotguard", "--namespace", NAMESPACE, "--audit-interval", "300",
]  # fmt: skip
CERTS_ARGS = [
    "certs", "ensure", "--namespace", NAMESPACE, "--secret", "spotguard-tls",
    "--service", "spotguard", "--webhook-config", "spotguard",
]  # fmt: skip

# (kind, name) -> the rules, exactly. Nothing else may be granted.
EXPECTED_RULES: dict[tuple[str, str], list[Manifest]] = {
    ("Role", "spotguard"): [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["spotguard-policy"],
            "verbs": ["get", "list", "watch"],
        },
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["spotguard-audit"],
            "verbs": ["get", "update"],
        },
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    ],
    ("ClusterRole", "spotguard-cluster-reader"): [
        {
            "apiGroups": [""],
            "resources": ["nodes", "pods", "persistentvolumeclaims", "persistentvolumes"],
            "verbs": ["list", "watch"],
        },
        {"apiGroups": ["apps"], "resources": ["daemonsets"], "verbs": ["list", "watch"]},
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"],
            "resourceNames": ["spotguard"],
            "verbs": ["list", "watch"],
        },
    ],
    ("ClusterRole", "spotguard-audit"): [
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list"]},
        {
            "apiGroups": ["apps"],
            "resources": ["deployments", "statefulsets", "replicasets"],
            "verbs": ["list"],
        },
        {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": ["list"]},
        {
            "apiGroups": ["kubeflow.org"],
            "resources": ["pytorchjobs", "tfjobs", "mpijobs"],
            "verbs": ["list"],
        },
        {"apiGroups": ["trainer.kubeflow.org"], "resources": ["trainjobs"], "verbs": ["list"]},
        {"apiGroups": ["jobset.x-k8s.io"], "resources": ["jobsets"], "verbs": ["list"]},
        {"apiGroups": ["ray.io"], "resources": ["rayjobs", "rayclusters"], "verbs": ["list"]},
        {"apiGroups": ["batch.volcano.sh"], "resources": ["jobs"], "verbs": ["list"]},
        {
            "apiGroups": ["wgpolicyk8s.io"],
            "resources": ["policyreports"],
            "verbs": ["list", "create", "patch", "delete"],
        },
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
    ],
    ("Role", "spotguard-certs"): [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["spotguard-tls"],
            "verbs": ["get", "update", "patch"],
        },
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
    ],
    ("ClusterRole", "spotguard-certs"): [
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"],
            "resourceNames": ["spotguard"],
            "verbs": ["get", "patch"],
        },
    ],
}
# (binding kind, name) -> (role kind, role name, ServiceAccount)
EXPECTED_BINDINGS = {
    ("RoleBinding", "spotguard"): ("Role", "spotguard", "spotguard"),
    ("ClusterRoleBinding", "spotguard-cluster-reader"): (
        "ClusterRole", "spotguard-cluster-reader", "spotguard",
    ),
    ("ClusterRoleBinding", "spotguard-audit"): ("ClusterRole", "spotguard-audit", "spotguard"),
    ("RoleBinding", "spotguard-certs"): ("Role", "spotguard-certs", "spotguard-certs"),
    ("ClusterRoleBinding", "spotguard-certs"): (
        "ClusterRole", "spotguard-certs", "spotguard-certs",
    ),
}  # fmt: skip
CERT_JOB_OBJECTS = {
    ("Job", "spotguard-certs"),
    ("CronJob", "spotguard-certs-rotate"),
    ("ServiceAccount", "spotguard-certs"),
    *(kind_name for kind_name in EXPECTED_RULES if kind_name[1] == "spotguard-certs"),
    *(kind_name for kind_name in EXPECTED_BINDINGS if kind_name[1] == "spotguard-certs"),
}


def pod_templates(documents: list[Manifest]) -> dict[str, Manifest]:
    """Each workload's pod template, by workload name."""
    templates = {}
    for document in documents:
        spec = document.get("spec") or {}
        if document["kind"] in ("Deployment", "Job"):
            templates[document["metadata"]["name"]] = spec["template"]
        elif document["kind"] == "CronJob":
            templates[document["metadata"]["name"]] = spec["jobTemplate"]["spec"]["template"]
    return templates
