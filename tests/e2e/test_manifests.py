"""The install manifests in deploy/: what `kubectl apply -k` gives a platform team.

Three layers of checks:

- Every kustomization (the base and each overlay) passes a server-side dry run against
  the real API server of the session's control plane. Two things are created for real
  first: the Namespace, because a server-side dry run of namespaced objects in a namespace
  that does not exist yet fails with "namespaces ... not found" (a dry-run Namespace is
  never stored), and stand-ins for cert-manager's two CRDs (tests/e2e/crds/), which the
  cert-manager overlay's objects need.
- The rendered base (`kubectl kustomize`, parsed here) has the properties promised:
  replicas, hardening, probes, resources, the Secret's items, the PDB, the exact RBAC.
- On a private control plane with the whole base applied for real, the certificate job's
  command and the server's command run under their own ServiceAccounts' tokens: the RBAC
  is enough for what they do (including the ConfigMap watch, restricted by resourceNames
  through the metadata.name field selector) and refuses what they do not need.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.harness import ControlPlane
from devtools.server import REPO, free_port
from policies.loader import default_document, parse_policy_text
from policies.model import Mode
from policies.presets import PRESETS
from webhook.registration import render as render_registrations

pytestmark = pytest.mark.e2e

Manifest = dict[str, Any]

NAMESPACE = "spotguard-system"
OVERLAYS = ("eks", "gke", "aks", "audit", "cert-manager")
KUSTOMIZATIONS = ("deploy/base", *(f"deploy/overlays/{name}" for name in OVERLAYS))
CRDS = REPO / "tests" / "e2e" / "crds"
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
    "--runtime-dir", "/tmp/spotguard", "--namespace", NAMESPACE,
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
    ],
    ("ClusterRole", "spotguard-cluster-reader"): [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list", "watch"]},
        {
            "apiGroups": [""],
            "resources": ["pods", "persistentvolumeclaims", "persistentvolumes"],
            "verbs": ["get"],
        },
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"],
            "resourceNames": ["spotguard"],
            "verbs": ["get", "list", "watch"],
        },
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


# -- rendering ---------------------------------------------------------------------------


def render(cluster: ControlPlane, path: str) -> list[Manifest]:
    result = cluster.kubectl("kustomize", str(REPO / path), check=True)
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def find(documents: list[Manifest], kind: str, name: str) -> Manifest:
    matches = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def keyed(documents: list[Manifest]) -> dict[tuple[str, str], Manifest]:
    return {(d["kind"], d["metadata"]["name"]): d for d in documents}


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


def policy_of(documents: list[Manifest]) -> str:
    text: str = find(documents, "ConfigMap", "spotguard-policy")["data"]["policy.yaml"]
    return text


@pytest.fixture(scope="module")
def base(cluster: ControlPlane) -> list[Manifest]:
    return render(cluster, "deploy/base")


# -- server-side dry run --------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(cluster: ControlPlane, base: list[Manifest]) -> Iterator[ControlPlane]:
    """The cluster with what a dry run cannot create itself: the Namespace and the CRDs."""
    namespace = find(base, "Namespace", NAMESPACE)
    cluster.kubectl("apply", "-f", "-", input=json.dumps(namespace), check=True)
    cluster.kubectl("apply", "-f", str(CRDS), check=True)
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=30s",
        "crd/certificates.cert-manager.io", "crd/issuers.cert-manager.io",
        check=True,
    )  # fmt: skip
    yield cluster
    # The stand-in CRDs go; the Namespace stays (other tests never use it, and a
    # namespace being deleted cannot be created again until it is gone).
    cluster.kubectl("delete", "-f", str(CRDS), "--wait=false", "--ignore-not-found")


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_server_side_dry_run_accepts_every_object(prepared: ControlPlane, path: str) -> None:
    documents = render(prepared, path)
    result = prepared.kubectl("apply", "--dry-run=server", "-k", str(REPO / path))
    assert result.returncode == 0, result.stderr
    # Warnings would include Pod Security "restricted" violations of the pod templates
    # (the namespace warns and enforces restricted).
    assert "Warning" not in result.stderr, result.stderr
    reported = [line for line in result.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(reported) == len(documents), result.stdout


# -- the rendered base --------------------------------------------------------------------


def effective(pod_spec: Manifest, container: Manifest, key: str) -> Any:
    """A securityContext field as the kubelet applies it (container over pod)."""
    value = (container.get("securityContext") or {}).get(key)
    return value if value is not None else (pod_spec.get("securityContext") or {}).get(key)


def spot_label_expressions() -> list[Manifest]:
    """NotIn for every spot label of every preset spotguard knows."""
    labels = {label.key: list(label.values) for p in PRESETS.values() for label in p.labels}
    return [{"key": k, "operator": "NotIn", "values": v} for k, v in labels.items()]


def check_hardened_pod(name: str, template: Manifest, service_account: str) -> None:
    spec = template["spec"]
    assert spec["serviceAccountName"] == service_account
    assert spec["automountServiceAccountToken"] is True  # both talk to the API
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    expressions = terms["nodeSelectorTerms"][0]["matchExpressions"]
    for wanted in spot_label_expressions():
        assert wanted in expressions, f"{name}: may land on spot nodes labelled {wanted['key']}"
    assert len(terms["nodeSelectorTerms"]) == 1  # terms are ORed: one term, all NotIn
    assert {"key": "CriticalAddonsOnly", "operator": "Exists"} in spec["tolerations"]
    for container in spec["containers"]:
        assert effective(spec, container, "runAsNonRoot") is True, name
        assert effective(spec, container, "runAsUser") == 65532, name
        assert effective(spec, container, "seccompProfile") == {"type": "RuntimeDefault"}, name
        context = container["securityContext"]
        for key, value in SECURE_CONTAINER.items():
            assert context[key] == value, f"{name}: securityContext.{key}"
        assert container["image"] == "spotguard:dev"
        assert {"requests", "limits"} <= set(container["resources"]), name
        for section in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][section]), name
        mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
        assert "/tmp" in mounts, f"{name}: /tmp must be writable with a read-only root"


def test_deployment_is_highly_available_and_hardened(base: list[Manifest]) -> None:
    deployment = find(base, "Deployment", "spotguard")
    assert deployment["metadata"]["namespace"] == NAMESPACE
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    template = deployment["spec"]["template"]
    check_hardened_pod("deployment", template, "spotguard")
    spec = template["spec"]
    assert spec["priorityClassName"] == "system-cluster-critical"
    assert spec["terminationGracePeriodSeconds"] == 30
    spread = {c["topologyKey"]: c for c in spec["topologySpreadConstraints"]}
    assert set(spread) == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    assert all(c["whenUnsatisfiable"] == "ScheduleAnyway" for c in spread.values())
    assert all(
        c["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
        for c in spread.values()
    )

    (container,) = spec["containers"]
    assert container["args"] == SERVE_ARGS
    pod_namespace = {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert {"name": "POD_NAMESPACE", "valueFrom": pod_namespace} in container["env"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"https": 8443, "metrics": 9090}
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = container[probe]["httpGet"]
        assert (get["scheme"], get["path"], ports.get(get["port"], get["port"])) == (
            "HTTPS", path, 8443,
        ), probe  # fmt: skip
    assert container["resources"] == {
        "requests": {"cpu": "200m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    }

    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["tmp"]["name"]] and mounts["tmp"]["mountPath"] == "/tmp"
    certs = volumes[mounts["certs"]["name"]]["secret"]
    assert mounts["certs"]["mountPath"] == "/etc/spotguard/certs"
    assert mounts["certs"]["readOnly"] is True
    assert certs["secretName"] == "spotguard-tls"
    # Only the serving pair: without items every key, the CA's private key too, is mounted.
    assert sorted(item["key"] for item in certs["items"]) == ["tls.crt", "tls.key"]
    assert "ca.key" not in json.dumps(certs)
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9090"


def test_disruption_budget_and_service_select_the_server(base: list[Manifest]) -> None:
    deployment = find(base, "Deployment", "spotguard")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    budget = find(base, "PodDisruptionBudget", "spotguard")
    assert budget["spec"]["minAvailable"] == 1
    assert (
        budget["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    )
    service = find(base, "Service", "spotguard")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
    assert ports == {"https": (443, "https"), "metrics": (9090, "metrics")}
    # No other pod in the namespace (the cert job's) is selected by the Service.
    for name, template in pod_templates(base).items():
        if name != "spotguard":
            assert not service["spec"]["selector"].items() <= template["metadata"]["labels"].items()


def test_certificate_job_and_cronjob(base: list[Manifest]) -> None:
    job = find(base, "Job", "spotguard-certs")
    cronjob = find(base, "CronJob", "spotguard-certs-rotate")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert len(cronjob["spec"]["schedule"].split()) == 5
    for name, template in pod_templates(base).items():
        if name == "spotguard":
            continue
        check_hardened_pod(name, template, "spotguard-certs")
        (container,) = template["spec"]["containers"]
        assert container["args"] == CERTS_ARGS, name
        assert "priorityClassName" not in template["spec"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"


def test_rbac_is_exactly_what_is_needed(base: list[Manifest]) -> None:
    objects = keyed(base)
    roles = {k: v["rules"] for k, v in objects.items() if k[0] in ("Role", "ClusterRole")}
    assert roles == EXPECTED_RULES
    for rules in roles.values():
        for rule in rules:
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(field, []), rule
    bindings = {k: v for k, v in objects.items() if k[0] in ("RoleBinding", "ClusterRoleBinding")}
    assert set(bindings) == set(EXPECTED_BINDINGS)
    for key, binding in bindings.items():
        role_kind, role_name, account = EXPECTED_BINDINGS[key]
        assert (binding["roleRef"]["kind"], binding["roleRef"]["name"]) == (role_kind, role_name)
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
        ]
    accounts = {name for kind, name in objects if kind == "ServiceAccount"}
    assert accounts == {"spotguard", "spotguard-certs"}


def namespace_selected(selector: Manifest, labels: dict[str, str]) -> bool:
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def test_webhooks_never_review_spotguards_own_namespace(base: list[Manifest]) -> None:
    labels = dict(find(base, "Namespace", NAMESPACE)["metadata"]["labels"])
    labels["kubernetes.io/metadata.name"] = NAMESPACE  # set by the API server in any case
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    configs = [d for d in base if d["kind"].endswith("WebhookConfiguration")]
    assert len(configs) == 2
    for config in configs:
        for webhook in config["webhooks"]:
            assert webhook["failurePolicy"] == "Ignore"
            assert webhook["sideEffects"] == "None"
            assert webhook["timeoutSeconds"] == 5
            assert webhook["clientConfig"]["service"] == {
                "name": "spotguard", "namespace": NAMESPACE,
                "path": webhook["clientConfig"]["service"]["path"], "port": 443,
            }  # fmt: skip
            selector = webhook["namespaceSelector"]
            if webhook["name"] == "policy.spotguard.dev":
                # The one exception: spotguard's own policy ConfigMap, and nothing else.
                assert namespace_selected(selector, labels)
                assert not namespace_selected(selector, {"team": "ml"})
                assert [r["resources"] for r in webhook["rules"]] == [["configmaps"]]
                assert webhook["objectSelector"] == {
                    "matchLabels": {"spotguard.dev/policy": "true"}
                }
                continue
            assert not namespace_selected(selector, labels)
            assert namespace_selected(selector, {"team": "ml"})
    mutating = find(base, "MutatingWebhookConfiguration", "spotguard")
    assert mutating["webhooks"][0]["reinvocationPolicy"] == "IfNeeded"


def test_policy_configmap_has_a_stable_name_and_a_valid_policy(base: list[Manifest]) -> None:
    configmap = find(base, "ConfigMap", "spotguard-policy")  # no name hash
    assert configmap["metadata"]["namespace"] == NAMESPACE
    policy = parse_policy_text(policy_of(base))
    assert policy.mode is Mode.ENFORCE
    assert NAMESPACE in policy.exclude_namespaces


@pytest.mark.parametrize(
    ("overlay", "mode", "presets"),
    [
        ("eks", Mode.ENFORCE, ("eks", "karpenter")),
        ("gke", Mode.ENFORCE, ("gke",)),
        ("aks", Mode.ENFORCE, ("aks",)),
        ("audit", Mode.AUDIT, ("eks", "karpenter", "gke", "aks", "generic")),
    ],
)
def test_policy_overlays_change_only_the_policy(
    cluster: ControlPlane,
    base: list[Manifest],
    overlay: str,
    mode: Mode,
    presets: tuple[str, ...],
) -> None:
    documents = render(cluster, f"deploy/overlays/{overlay}")
    policy = parse_policy_text(policy_of(documents))
    assert policy.mode is mode
    wanted = {(label.key, label.values) for name in presets for label in PRESETS[name].labels}
    assert {(label.key, label.values) for label in policy.spot_labels} == wanted
    usable = default_document()["spotNodes"]["usableNoticeSeconds"]
    assert policy.notice_seconds == min(usable[PRESETS[name].provider] for name in presets)
    changed = {key for key, value in keyed(documents).items() if keyed(base).get(key) != value}
    registrations = {
        ("MutatingWebhookConfiguration", "spotguard"),
        ("ValidatingWebhookConfiguration", "spotguard"),
    }
    assert changed - registrations == {("ConfigMap", "spotguard-policy")}
    assert len(documents) == len(base)
    # The registrations are those rendered for the overlay's own policy.
    rendered = keyed(render_registrations(policy))
    for key in registrations:
        assert keyed(documents)[key] == rendered[key], key


def test_cert_manager_overlay_replaces_the_cert_job(
    cluster: ControlPlane, base: list[Manifest]
) -> None:
    documents = keyed(render(cluster, "deploy/overlays/cert-manager"))
    base_objects = keyed(base)
    assert not CERT_JOB_OBJECTS & set(documents)
    assert set(base_objects) >= CERT_JOB_OBJECTS
    serving = documents[("Certificate", "spotguard-serving")]
    assert serving["metadata"]["namespace"] == NAMESPACE
    assert serving["spec"]["secretName"] == "spotguard-tls"
    assert SERVICE_HOST in serving["spec"]["dnsNames"]
    assert serving["spec"]["issuerRef"]["name"] == "spotguard-ca"
    ca = documents[("Certificate", "spotguard-ca")]
    assert ca["spec"]["isCA"] is True
    assert ca["spec"]["issuerRef"]["name"] == "spotguard-selfsigned"
    ca_issuer = documents[("Issuer", "spotguard-ca")]
    assert ca_issuer["spec"]["ca"]["secretName"] == ca["spec"]["secretName"]
    assert "selfSigned" in documents[("Issuer", "spotguard-selfsigned")]["spec"]
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        config = documents[(kind, "spotguard")]
        annotations = config["metadata"]["annotations"]
        assert annotations["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/spotguard-serving"
        assert config["webhooks"] == base_objects[(kind, "spotguard")]["webhooks"]
    # Everything else is the base, unchanged.
    for key, value in documents.items():
        if key[0] not in ("Certificate", "Issuer") and not key[0].endswith("Configuration"):
            assert value == base_objects[key], key


# -- live: the base applied for real, each command under its own identity -----------------


@dataclass
class Live:
    plane: ControlPlane
    documents: list[Manifest]
    workdir: Path

    def kubeconfig_for(self, account: str) -> Path:
        """A kubeconfig holding a token of ServiceAccount ``account``."""
        token = self.plane.kubectl(
            "create", "token", account, "-n", NAMESPACE, "--duration=1h", check=True
        ).stdout.strip()
        path = self.workdir / f"{account}.kubeconfig"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "plane",
                    "cluster": {
                        "server": self.plane.server,
                        "certificate-authority": str(self.plane.ca_file),
                    },
                }
            ],
            "users": [{"name": account, "user": {"token": token}}],
            "contexts": [{"name": account, "context": {"cluster": "plane", "user": account}}],
            "current-context": account,
        }
        path.write_text(yaml.safe_dump(config))
        return path

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
        # A real apply creates the Namespace before the objects in it.
        plane.kubectl("apply", "-k", str(REPO / "deploy/base"), check=True)
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


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to ``address`` while verifying the certificate for ``server_name``, as the API
    server does when it calls the Service."""

    def __init__(self, address: str, port: int, server_name: str, context: ssl.SSLContext):
        super().__init__(server_name, port, timeout=5, context=context)
        self._address = address
        self._tls = context

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")


def stop(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM (the graceful path), then SIGKILL to the whole process group."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@dataclass
class Served:
    """``spotguard serve`` with the Deployment's arguments, the files its Secret volume
    mounts, and the server ServiceAccount's token, checked the way the API server would."""

    process: subprocess.Popen[bytes]
    port: int
    log_file: Path
    context: ssl.SSLContext

    def readyz(self) -> Manifest | None:
        if self.process.poll() is not None:
            raise AssertionError(f"spotguard serve exited:\n{self.log_file.read_text()}")
        connection = PinnedHTTPSConnection("127.0.0.1", self.port, SERVICE_HOST, self.context)
        try:
            connection.request("GET", "/readyz")
            body: Manifest = json.loads(connection.getresponse().read())
            return body
        except OSError:
            return None
        finally:
            connection.close()

    def wait_for_state(self, key: str, timeout: float = 20) -> Manifest:
        """The /readyz body once ``key`` is set in it."""
        state: Manifest = wait_for(lambda: (s := self.readyz()) and s.get(key) and s, timeout, key)
        return state


@pytest.fixture
def served(
    live: Live, certificates: subprocess.CompletedProcess[str], tmp_path: Path
) -> Iterator[Served]:
    assert certificates.returncode == 0, certificates.stdout + certificates.stderr
    pod = find(live.documents, "Deployment", "spotguard")["spec"]["template"]["spec"]
    # The Secret's files as the kubelet mounts them: only the volume's items.
    secret = live.get("secret", "spotguard-tls")
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    cert_dir = tmp_path / "certs"
    cert_dir.mkdir()
    for item in volume["secret"]["items"]:
        (cert_dir / item["path"]).write_bytes(base64.b64decode(secret["data"][item["key"]]))
    assert sorted(p.name for p in cert_dir.iterdir()) == ["tls.crt", "tls.key"]

    # The Deployment's own arguments, with local addresses and directories.
    port = free_port()
    local = {
        "--bind": f"127.0.0.1:{port}",
        "--metrics-bind": f"127.0.0.1:{free_port()}",
        "--cert-dir": str(cert_dir),
        "--runtime-dir": str(tmp_path / "run"),
    }
    args = list(pod["containers"][0]["args"])
    for index, arg in enumerate(args[:-1]):
        args[index + 1] = local.get(arg, args[index + 1])
    kubeconfig = live.kubeconfig_for("spotguard")
    command = [sys.executable, "-m", "webhook", *args, "--kubeconfig", str(kubeconfig),
               "--workers", "1", "--shutdown-delay", "0"]  # fmt: skip
    log_file = tmp_path / "serve.log"
    with log_file.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    # Trust exactly what the API server trusts: the caBundle the cert job wrote.
    webhook = live.get("validatingwebhookconfiguration", "spotguard")["webhooks"][0]
    ca_bundle = base64.b64decode(webhook["clientConfig"]["caBundle"]).decode()
    try:
        yield Served(process, port, log_file, ssl.create_default_context(cadata=ca_bundle))
    finally:
        stop(process)
    log = log_file.read_text()
    assert "Forbidden" not in log and "failed: 403" not in log, log


def set_policy(live: Live, text: str) -> None:
    patch = json.dumps({"data": {"policy.yaml": text}})
    live.plane.kubectl(
        "patch", "configmap", "spotguard-policy", "-n", NAMESPACE, "-p", patch, check=True
    )


def test_server_identity_can_watch_its_policy_and_record_events(live: Live, served: Served) -> None:
    state = served.wait_for_state("policyRevision", timeout=30)
    assert state["policyRevision"] == parse_policy_text(policy_of(live.documents)).revision
    # It reads its own webhook registration, and finds that it sends what the policy needs.
    assert served.wait_for_state("registrationCoversPolicy")["registrationProblems"] == []

    # A new revision arrives through the watch (list + watch with the name field selector).
    audit = "apiVersion: spotguard.dev/v1alpha1\nkind: SpotPolicy\nmode: audit\n"
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
    assert live.can(SERVER_SA, "list", "nodes", namespace="default")
    assert live.can(SERVER_SA, "get", "pods/some-pod", namespace="default")
    assert live.can(SERVER_SA, "watch", "configmaps/spotguard-policy")
    assert live.can(SERVER_SA, "watch", "validatingwebhookconfigurations/spotguard")
    for verb, resource in [
        ("list", "mutatingwebhookconfigurations"),  # without the field selector
        ("get", "validatingwebhookconfigurations/someone-elses"),
        ("patch", "mutatingwebhookconfigurations/spotguard"),
        ("list", "configmaps"),  # without the metadata.name field selector
        ("get", "configmaps/other"),
        ("update", "configmaps/spotguard-policy"),
        ("get", "secrets/spotguard-tls"),
        ("get", "nodes/some-node"),
        ("create", "pods"),
        ("list", "pods"),
        ("delete", "events"),
    ]:
        assert not live.can(SERVER_SA, verb, resource), f"spotguard may {verb} {resource}"


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
