"""The install manifests in deploy/: what `kubectl apply -k` gives a platform team.

deploy/base is a kustomize Component that every provider overlay (deploy/overlays/<provider>)
completes with its spot presets; options are components (tests/e2e/test_kustomize_options.py
composes them). Three layers of checks:

- Every provider overlay (and deploy/kind) passes a server-side dry run against the real
  API server of the session's control plane. Two things are created for real first: the
  Namespace, because a server-side dry run of namespaced objects in a namespace that does
  not exist yet fails with "namespaces ... not found" (a dry-run Namespace is never
  stored), and stand-ins for the CRDs the components' objects need (tests/e2e/crds/).
- The rendered install (`kubectl kustomize deploy/overlays/eks`, parsed here) has the
  properties promised: replicas, hardening, probes, resources, the Secret's items, the
  PDB, the exact RBAC; the other providers differ from it in the policy's presets only.
- On a private control plane with the eks overlay applied for real, the certificate job's
  command and the server's command run under their own ServiceAccounts' tokens: the RBAC
  is enough for what they do (including the ConfigMap watch, restricted by resourceNames
  through the metadata.name field selector) and refuses what they do not need.
"""

from __future__ import annotations

import json
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
from controlplane.loopback import free_port
from policies.loader import default_document, parse_policy_text
from policies.model import Mode
from policies.presets import PRESETS
from tests.e2e.rendering import PROVIDERS, compose, find, keyed, kustomize, policy_of
from testsupport.installed import ServedDeployment, kubeconfig_for, serve_deployment
from testsupport.server import REPO
from webhook.cli import package_version
from webhook.policy_sources import DEFAULT_CONFIGMAP_KEY
from webhook.registration import render as render_registrations

pytestmark = pytest.mark.e2e

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


# -- rendering ---------------------------------------------------------------------------


render = kustomize


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


@pytest.fixture(scope="module")
def base(cluster: ControlPlane) -> list[Manifest]:
    """The base as a provider overlay installs it (eks)."""
    return render(cluster, INSTALL)


# -- server-side dry run --------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(cluster: ControlPlane, base: list[Manifest]) -> Iterator[ControlPlane]:
    """The cluster with what a dry run cannot create itself: the Namespace and the CRDs."""
    namespace = find(base, "Namespace", NAMESPACE)
    cluster.kubectl("apply", "-f", "-", input=json.dumps(namespace), check=True)
    for crds in STAND_IN_CRDS:
        cluster.kubectl("apply", "-f", str(crds), check=True)
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=30s",
        "crd/certificates.cert-manager.io", "crd/issuers.cert-manager.io",
        "crd/podmonitors.monitoring.coreos.com", "crd/servicemonitors.monitoring.coreos.com",
        "crd/prometheusrules.monitoring.coreos.com",
        check=True,
    )  # fmt: skip
    yield cluster
    # The stand-in CRDs go; the Namespace stays (other tests never use it, and a
    # namespace being deleted cannot be created again until it is gone).
    for crds in STAND_IN_CRDS:
        cluster.kubectl("delete", "-f", str(crds), "--wait=false", "--ignore-not-found")


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
        assert container["image"] == IMAGE  # spotguard's version (tests/test_versions.py)
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
            # Only ignore=true opts a namespace out; "false" must not.
            assert not namespace_selected(selector, {"spotguard.dev/ignore": "true"})
            assert namespace_selected(selector, {"spotguard.dev/ignore": "false"})
    mutating = find(base, "MutatingWebhookConfiguration", "spotguard")
    assert mutating["webhooks"][0]["reinvocationPolicy"] == "IfNeeded"


def test_policy_configmap_has_a_stable_name_and_a_valid_policy(base: list[Manifest]) -> None:
    configmap = find(base, "ConfigMap", "spotguard-policy")  # no name hash
    assert configmap["metadata"]["namespace"] == NAMESPACE
    policy = parse_policy_text(policy_of(base))
    assert policy.mode is Mode.ENFORCE
    assert NAMESPACE in policy.exclude_namespaces


def test_the_base_alone_refuses_to_guess_a_provider(cluster: ControlPlane) -> None:
    """Every preset at once would give each fault-tolerant pod the shortest notice window
    (GKE's 15 s on EKS): the base does not build without a provider overlay."""
    result = cluster.kubectl("kustomize", str(REPO / "deploy/base"))
    assert result.returncode != 0
    assert "spotguard-provider" in result.stderr and "data.presets" in result.stderr


@pytest.mark.parametrize(
    ("overlay", "presets"),
    [
        ("eks", ("eks", "karpenter")),
        ("gke", ("gke",)),
        ("aks", ("aks",)),
        ("generic", ("generic",)),
    ],
)
def test_provider_overlays_differ_in_the_presets_only(
    cluster: ControlPlane, base: list[Manifest], overlay: str, presets: tuple[str, ...]
) -> None:
    documents = render(cluster, f"deploy/overlays/{overlay}")
    policy = parse_policy_text(policy_of(documents))
    assert policy.mode is Mode.ENFORCE
    assert tuple(yaml.safe_load(policy_of(documents))["spotNodes"]["presets"]) == presets
    wanted = {(label.key, label.values) for name in presets for label in PRESETS[name].labels}
    assert {(label.key, label.values) for label in policy.spot_labels} == wanted
    # One provider's window, not the shortest of every preset's.
    usable = default_document()["spotNodes"]["usableNoticeSeconds"]
    assert policy.notice_seconds == usable[PRESETS[presets[0]].provider]
    assert {PRESETS[name].provider for name in presets} == {PRESETS[presets[0]].provider}
    # The policy text differs in its presets line (line 5) and nowhere else.
    lines, base_lines = policy_of(documents).split("\n"), policy_of(base).split("\n")
    assert [i for i, (a, b) in enumerate(zip(lines, base_lines, strict=True)) if a != b] in (
        [],
        [4],
    )
    changed = {key for key, value in keyed(documents).items() if keyed(base).get(key) != value}
    registrations = {
        ("MutatingWebhookConfiguration", "spotguard"),
        ("ValidatingWebhookConfiguration", "spotguard"),
    }
    assert changed - registrations <= {("ConfigMap", "spotguard-policy")}
    assert len(documents) == len(base)
    # The registrations are those rendered for the overlay's own policy.
    rendered = keyed(render_registrations(policy))
    for key in registrations:
        config, expected = keyed(documents)[key], rendered[key]
        assert config["webhooks"] == expected["webhooks"], key
        assert config["metadata"]["annotations"] == expected["metadata"]["annotations"], key


def test_cert_manager_component_replaces_the_cert_job(
    cluster: ControlPlane, base: list[Manifest], tmp_path: Path
) -> None:
    documents = keyed(render(cluster, compose(tmp_path, "eks", ("cert-manager",))))
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


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")


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
