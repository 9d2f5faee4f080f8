"""The Helm chart renders what kustomize renders (deploy/helm/spotguard vs deploy/).

For each provider, and for each option (a kustomize component, a chart value), the
objects of `helm template` and of `kubectl kustomize` are the same, field for field, and
the policies compile to the same revision. The documented differences, and only those, are
normalised away first:

- labels Helm adds (instance, version, managed-by, helm.sh/chart) and the part-of label,
  which the chart puts on every object and kustomize on the base's only;
- the Namespace: kustomize creates spotguard-system, Helm installs into the release's;
- the chart owns the TLS Secret (created empty, filled by the certificate Job), so that
  `helm uninstall` removes it; kustomize leaves it to the Job;
- the certificate Job is named after the release revision (a Job's template cannot change
  on upgrade); kustomize's is spotguard-certs;
- the policy's text: the chart writes the values as YAML, kustomize keeps its comments.

Then what the chart alone decides: it refuses to guess a provider, `helm lint` passes, the
schema refuses bad values, and values (another namespace, extra kinds, replicas, the
failure policy) reach every object that depends on them.
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
from policies.model import Mode, Rule
from policies.operators import OPERATOR_PRESETS
from policies.presets import PRESETS
from policies.workloads import webhook_rules
from tests.e2e.rendering import (
    COMPONENT_VALUES,
    COMPONENTS,
    PROVIDER_VALUES,
    PROVIDERS,
    Manifest,
    compose,
    find,
    helm,
    helm_binary,
    helm_template,
    kustomize,
    merge_values,
    policy_of,
)
from testsupport.helmcli import CHART
from testsupport.shipped_registrations import chart_registrations
from webhook.registration import coverage_problems

pytestmark = pytest.mark.e2e

HELM_ONLY_LABELS = {
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
    "app.kubernetes.io/part-of",
}
CRDS = Path(__file__).parent / "crds"


@pytest.fixture(scope="module")
def helm_bin() -> Path:
    return helm_binary()


def strip_labels(node: Any) -> Any:
    """A copy without the labels only one of the two installs sets."""
    if isinstance(node, dict):
        copy = {}
        for key, value in node.items():
            kept = value
            if key in ("labels", "matchLabels") and isinstance(value, dict):
                kept = {k: v for k, v in value.items() if k not in HELM_ONLY_LABELS}
                if not kept and key == "labels":
                    continue
            copy[key] = strip_labels(kept)
        return copy
    if isinstance(node, list):
        return [strip_labels(item) for item in node]
    return node


def normalised(documents: list[Manifest]) -> dict[tuple[str, str], Manifest]:
    """Objects by (kind, name), with the documented differences taken out."""
    objects = {}
    for document in documents:
        kind, name = document["kind"], document["metadata"]["name"]
        if kind == "Namespace" or (kind == "Secret" and name == "spotguard-tls"):
            continue
        copy = strip_labels(document)  # a copy: the caller's documents stay as rendered
        if kind == "Job" and name.startswith("spotguard-certs-"):
            name = copy["metadata"]["name"] = "spotguard-certs"
        if kind == "ConfigMap" and name == "spotguard-policy":
            copy["data"] = {"revision": parse_policy_text(copy["data"]["policy.yaml"]).revision}
        objects[(kind, name)] = copy
    return objects


def assert_same_objects(from_helm: list[Manifest], from_kustomize: list[Manifest]) -> None:
    chart, base = normalised(from_helm), normalised(from_kustomize)
    assert sorted(chart) == sorted(base)
    for key in base:
        assert chart[key] == base[key], f"{key[0]}/{key[1]} differs"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_each_provider_renders_what_its_overlay_renders(
    cluster: ControlPlane, helm_bin: Path, provider: str
) -> None:
    from_helm = helm_template(helm_bin, {"providers": PROVIDER_VALUES[provider]})
    from_kustomize = kustomize(cluster, f"deploy/overlays/{provider}")
    assert_same_objects(from_helm, from_kustomize)
    # The documented differences exist as documented.
    secret = find(from_helm, "Secret", "spotguard-tls")
    assert secret["type"] == "Opaque" and "data" not in secret
    assert find(from_helm, "Job", "spotguard-certs-1")
    assert find(from_kustomize, "Namespace", "spotguard-system")


@pytest.mark.parametrize("components", [(c,) for c in COMPONENTS] + [COMPONENTS], ids=str)
def test_each_option_renders_what_its_component_renders(
    cluster: ControlPlane, helm_bin: Path, tmp_path: Path, components: tuple[str, ...]
) -> None:
    values = merge_values(
        {"providers": PROVIDER_VALUES["gke"]}, *(COMPONENT_VALUES[c] for c in components)
    )
    from_helm = helm_template(helm_bin, values)
    from_kustomize = kustomize(cluster, compose(tmp_path, "gke", components))
    assert_same_objects(from_helm, from_kustomize)


def test_registrations_are_what_the_renderer_gives() -> None:
    """The seam for generated registrations: one data block, written by the renderer."""
    expected = chart_registrations()
    assert expected.path == CHART / "files" / "webhooks.yaml"
    assert expected.path.read_text() == expected.text, "python -m testsupport.shipped_registrations"


def _policy(documents: list[Manifest]) -> str:
    (configmap,) = [
        d
        for d in documents
        if d["kind"] == "ConfigMap" and d["metadata"].get("labels", {}).get("spotguard.dev/policy")
    ]
    text: str = configmap["data"]["policy.yaml"]
    return text


def _registrations(documents: list[Manifest]) -> tuple[Manifest, Manifest]:
    mutating = next(d for d in documents if d["kind"] == "MutatingWebhookConfiguration")
    validating = next(d for d in documents if d["kind"] == "ValidatingWebhookConfiguration")
    return mutating, validating


@pytest.mark.parametrize(
    "values",
    [
        {"providers": ["aks"]},
        {"providers": ["eks", "aks"], "noticeWindowSeconds": 30, "mode": "audit"},
        {"providers": ["gke"], "webhook": {"excludeNamespaces": ["batch", "a-team"]}},
        {"providers": ["generic"], "rules": {"keepOffSpot": "off"}},
        {"providers": ["aks"], "mode": "audit"},
        {"providers": ["aks"], "rules": {"spotRequiresFaultTolerance": "audit"}},
        {"providers": ["aks"], "rules": {"spotRequiresFaultTolerance": "off"}},
    ],
    ids=[
        "one provider",
        "providers without a rendering",
        "namespaces",
        "rules",
        "a dry run",
        "placement audited",
        "placement off",
    ],
)
def test_conditioned_registrations_cover_the_policy_they_ship_with(
    helm_bin: Path, values: dict[str, Any]
) -> None:
    """With the chart's own values, the match conditions stay, in any release namespace,
    and the server would find that they cover its policy."""
    documents = helm_template(helm_bin, values, namespace="ml-platform", release="guard")
    mutating, validating = _registrations(documents)
    assert all("matchConditions" in w or "objectSelector" in w for w in mutating["webhooks"])
    policy = parse_policy_text(_policy(documents))
    assert coverage_problems(mutating, validating, policy) == []
    excluded = validating["webhooks"][0]["namespaceSelector"]["matchExpressions"][0]["values"]
    assert excluded == sorted(policy.exclude_namespaces) and "ml-platform" in excluded


def test_values_beyond_the_rendered_ones_register_without_conditions(helm_bin: Path) -> None:
    for values in (
        {"providers": ["aks"], "faultTolerant": {"operatorPresets": ["ray"]}},
        {
            "providers": ["aks"],
            "policy": {"spotNodes": {"labels": [{"key": "pool", "values": ["x"]}]}},
        },
        {"providers": ["aks"], "noticeWindowSeconds": 10},
        {"providers": ["aks"], "webhook": {"matchConditions": False}},
    ):
        documents = helm_template(helm_bin, values)
        mutating, validating = _registrations(documents)
        for config in (mutating, validating):
            assert "annotations" not in config["metadata"]
            assert all("matchConditions" not in w for w in config["webhooks"])
        policy = parse_policy_text(_policy(documents))
        assert coverage_problems(mutating, validating, policy) == [], values


def test_chart_knows_the_presets_rules_and_operator_presets_spotguard_has() -> None:
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    block = helpers.split('define "spotguard.presetProviders" -}}')[1].split("{{- end")[0]
    assert yaml.safe_load(block) == {name: preset.provider for name, preset in PRESETS.items()}
    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]
    assert set(schema["providers"]["items"]["enum"]) == set(PRESETS)
    assert set(schema["rules"]["propertyNames"]["enum"]) == set(default_document()["rules"])
    operators = schema["faultTolerant"]["properties"]["operatorPresets"]["items"]["enum"]
    assert set(operators) == set(OPERATOR_PRESETS)


# -- what only the chart decides ----------------------------------------------------------


def test_no_provider_is_refused_with_the_reason(helm_bin: Path) -> None:
    result = helm(helm_bin, "template", "spotguard", str(CHART), values={})
    assert result.returncode != 0
    assert "providers is required" in result.stderr
    assert "does not guess" in result.stderr


def test_providers_with_different_windows_need_a_stated_window(helm_bin: Path) -> None:
    mixed = {"providers": ["eks", "aks"]}
    refused = helm(helm_bin, "template", "spotguard", str(CHART), values=mixed)
    assert refused.returncode != 0
    assert "notice windows differ: set noticeWindowSeconds" in refused.stderr
    documents = helm_template(helm_bin, {**mixed, "noticeWindowSeconds": 30})
    policy = parse_policy_text(policy_of(documents))
    assert policy.notice_seconds == 30
    labels = {label.key for label in policy.spot_labels}
    assert labels == {"eks.amazonaws.com/capacityType", "kubernetes.azure.com/scalesetpriority"}
    # Same provider, one window: no question asked.
    aws = parse_policy_text(policy_of(helm_template(helm_bin, {"providers": ["karpenter"]})))
    assert aws.notice_seconds == 110


@pytest.mark.parametrize(
    "values",
    [{"providers": ["ek"]}, {"provider": "eks"}, {"providers": ["eks"], "mode": "strict"},
     {"providers": ["eks"], "rules": {"injection": "audit"}},
     {"providers": ["eks"], "webhook": {"failurePolicy": "Sometimes"}}],
    ids=["unknown preset", "misspelt key", "unknown mode", "unknown rule", "bad failurePolicy"],
)  # fmt: skip
def test_schema_refuses_bad_values(helm_bin: Path, values: dict[str, Any]) -> None:
    result = helm(helm_bin, "template", "spotguard", str(CHART), values=values)
    assert result.returncode != 0
    assert "don't meet the specifications of the schema" in result.stderr, result.stderr


def test_policy_keys_with_their_own_values_are_refused_in_policy(helm_bin: Path) -> None:
    refused: list[dict[str, Any]] = [
        {"mode": "audit"},
        {"spotNodes": {"presets": ["gke"]}},
        {"workloads": {}},
    ]
    for policy in refused:
        values = {"providers": ["eks"], "policy": policy}
        result = helm(helm_bin, "template", "spotguard", str(CHART), values=values)
        assert result.returncode != 0, policy
        assert "policy." in result.stderr


def test_helm_lint_passes_for_every_provider_and_every_option(helm_bin: Path) -> None:
    everything = merge_values(*COMPONENT_VALUES.values())
    for provider in PROVIDERS:
        for extra in ({}, everything):
            values = merge_values({"providers": PROVIDER_VALUES[provider]}, extra)
            result = helm(helm_bin, "lint", "--strict", str(CHART), values=values)
            assert result.returncode == 0, result.stdout + result.stderr
            assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def expanded(rules: list[Manifest]) -> set[tuple[str, str, str, str]]:
    """Webhook rules as (group, version, resource, operation) sets: equal meaning."""
    return {
        (group, version, resource, operation)
        for rule in rules
        for group in rule["apiGroups"]
        for version in rule["apiVersions"]
        for resource in rule["resources"]
        for operation in rule["operations"]
    }


def test_values_reach_every_object_that_depends_on_them(helm_bin: Path) -> None:
    extra_kind = {
        "group": "example.com", "kind": "TrainingRun", "resource": "trainingruns",
        "templatePaths": ["spec.worker.template"],
    }  # fmt: skip
    values = {
        "providers": ["aks"],
        "replicas": 3,
        "extraKinds": [extra_kind],
        "rules": {"keepOffSpot": "audit"},
        "faultTolerant": {"operatorPresets": ["kubeflow"]},
        "webhook": {"failurePolicy": "Fail", "timeoutSeconds": 3, "excludeNamespaces": ["batch"]},
        "service": {"port": 8443},
        "image": {"repository": "registry.example/spotguard", "tag": "0.1.0-rc1"},
        "policy": {"inject": {"nodeAffinity": {"instanceTypes": ["Standard_NC6s_v3"]}}},
    }
    documents = helm_template(helm_bin, values, namespace="guard", release="spot")
    names = {(d["kind"], d["metadata"]["name"]) for d in documents}
    assert ("Deployment", "spot-spotguard") in names
    deployment = find(documents, "Deployment", "spot-spotguard")
    assert deployment["metadata"]["namespace"] == "guard"
    assert deployment["spec"]["replicas"] == 3
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example/spotguard:0.1.0-rc1"
    args = container["args"]
    assert args[args.index("--policy-configmap") + 1] == "guard/spot-spotguard-policy"
    assert args[args.index("--namespace") + 1] == "guard"

    configmap = find(documents, "ConfigMap", "spot-spotguard-policy")
    policy = parse_policy_text(configmap["data"]["policy.yaml"])
    assert {"guard", "batch", "kube-system"} <= policy.exclude_namespaces
    assert policy.mode_of(Rule.KEEP_OFF_SPOT) is Mode.AUDIT
    assert policy.operator_presets == frozenset({"kubeflow"})
    assert policy.inject.affinity.instance_types == ("Standard_NC6s_v3",)

    validating = find(documents, "ValidatingWebhookConfiguration", "spot-spotguard")
    mutating = find(documents, "MutatingWebhookConfiguration", "spot-spotguard")
    hooks = {hook["name"]: hook for config in (validating, mutating) for hook in config["webhooks"]}
    for hook in hooks.values():
        assert hook["failurePolicy"] == "Fail" and hook["timeoutSeconds"] == 3
        service = hook["clientConfig"]["service"]
        assert (service["name"], service["namespace"], service["port"]) == (
            "spot-spotguard", "guard", 8443,
        )  # fmt: skip
    # The registration follows the policy: its extra kind is sent to the validating webhook.
    for name, webhook in (
        ("validate.spotguard.dev", "validate"),
        ("workloads.spotguard.dev", "workloads"),
        ("mutate.spotguard.dev", "mutate"),
    ):
        assert expanded(hooks[name]["rules"]) == expanded(webhook_rules(policy, webhook)), name
    assert coverage_problems(mutating, validating, policy) == []  # sent without conditions
    excluded = hooks["validate.spotguard.dev"]["namespaceSelector"]["matchExpressions"][0]
    assert {"guard", "batch"} <= set(excluded["values"]) and "spotguard-system" not in excluded[
        "values"
    ]
    assert hooks["policy.spotguard.dev"]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "guard"}
    }
    service = find(documents, "Service", "spot-spotguard")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]}["https"] == 8443
    job = find(documents, "Job", "spot-spotguard-certs-1")
    job_args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert job_args == [
        "certs", "ensure", "--namespace", "guard", "--secret", "spot-spotguard-tls",
        "--service", "spot-spotguard", "--webhook-config", "spot-spotguard",
    ]  # fmt: skip
    rules = {(d["kind"], d["metadata"]["name"]): d.get("rules", []) for d in documents}
    assert rules[("Role", "spot-spotguard")][0]["resourceNames"] == ["spot-spotguard-policy"]
    assert rules[("Role", "spot-spotguard-certs")][0]["resourceNames"] == ["spot-spotguard-tls"]
    assert rules[("ClusterRole", "spot-spotguard-certs")][0]["resourceNames"] == ["spot-spotguard"]


@pytest.fixture(scope="module")
def stand_ins(cluster: ControlPlane) -> Iterator[ControlPlane]:
    for crds in ("cert-manager.yaml", "prometheus-operator.yaml"):
        cluster.kubectl("apply", "-f", str(CRDS / crds), check=True)
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=30s",
        "crd/certificates.cert-manager.io", "crd/servicemonitors.monitoring.coreos.com",
        check=True,
    )  # fmt: skip
    yield cluster
    for crds in ("cert-manager.yaml", "prometheus-operator.yaml"):
        cluster.kubectl("delete", "-f", str(CRDS / crds), "--wait=false", "--ignore-not-found")


@pytest.mark.parametrize(
    "options",
    [
        {},
        merge_values(
            *COMPONENT_VALUES.values(), {"metrics": {"serviceMonitor": {"enabled": True}}}
        ),
        {"providers": ["aks"]},  # the mutating webhook's objectSelector
    ],
    ids=["defaults", "every option", "aks"],
)
def test_rendered_chart_passes_a_server_side_dry_run(
    stand_ins: ControlPlane, helm_bin: Path, options: dict[str, Any]
) -> None:
    namespace = "spotguard-chart-dry-run"  # not spotguard-system: the session's webhook is there
    stand_ins.ensure_namespace(namespace)
    documents = helm_template(
        helm_bin, merge_values({"providers": ["eks", "karpenter"]}, options), namespace=namespace
    )
    manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": documents})
    result = stand_ins.kubectl("apply", "--dry-run=server", "-f", "-", input=manifest)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr
    reported = [line for line in result.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(reported) == len(documents), result.stdout
