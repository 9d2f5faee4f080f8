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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.harness import ControlPlane
from policies.loader import default_document, parse_policy_text
from policies.model import Mode
from policies.presets import PRESETS
from tests.e2e.install_facts import (
    CERT_JOB_OBJECTS,
    CERTS_ARGS,
    EXPECTED_BINDINGS,
    EXPECTED_RULES,
    IMAGE,
    INSTALL,
    KUSTOMIZATIONS,
    NAMESPACE,
    SECURE_CONTAINER,
    SERVE_ARGS,
    SERVICE_HOST,
    STAND_IN_CRDS,
    Manifest,
    pod_templates,
)
from tests.e2e.rendering import compose, find, keyed, kustomize, policy_of
from testsupport.server import REPO
from webhook.registration import render as render_registrations

pytestmark = pytest.mark.e2e

# -- rendering ---------------------------------------------------------------------------


render = kustomize


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
