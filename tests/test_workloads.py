"""Workload templates: the path language, the policy's kinds, and objects under review."""

from __future__ import annotations

from typing import Any

import pytest

from policies.decisions import PodContext
from policies.loader import PolicyError, default_policy, parse_policy_text
from policies.model import Mode
from policies.objects import mutate_object, validate_object
from policies.paths import locate, parse_path, render, value_at
from policies.workloads import (
    describe_object,
    object_shape_problems,
    templates_of,
    webhook_rules,
    workload_of,
)


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as error:
        parse_policy_text(text)
    return error.value.problems


def deployment(
    tolerations: list[dict[str, Any]] | None = None, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "web", "image": "registry.example/web:1"}]}
    if tolerations is not None:
        spec["tolerations"] = tolerations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "template": {"metadata": {"labels": {"app": "web", **(labels or {})}}, "spec": spec}
        },
    }


SPOT_TOLERATION = {"key": "spot", "operator": "Exists"}
FT = {"spotguard.dev/fault-tolerant": "true"}


# --- the path language -------------------------------------------------------------------


def test_paths_fan_out_over_lists_and_maps_in_document_order() -> None:
    document = {
        "spec": {
            "replicas": {"Master": {"template": {"a": 1}}, "Worker": {"template": {"b": 2}}},
            "jobs": [{"template": {"c": 3}}, {"other": {}}, {"template": {"d": 4}}],
        }
    }
    found = list(locate(document, parse_path("spec.replicas.*.template")))
    assert [render(location) for location, _ in found] == [
        "spec.replicas.Master.template",
        "spec.replicas.Worker.template",
    ]
    found = list(locate(document, parse_path("spec.jobs[*].template")))
    assert [(render(loc), node) for loc, node in found] == [
        ("spec.jobs[0].template", {"c": 3}),
        ("spec.jobs[2].template", {"d": 4}),
    ]
    assert value_at(document, ("spec", "jobs", 2, "template")) == {"d": 4}
    assert value_at(document, ("spec", "jobs", 7, "template")) is None


@pytest.mark.parametrize(
    "document",
    [{}, {"spec": None}, {"spec": []}, {"spec": {"jobs": {"not": "a list"}}}, "text"],
)
def test_missing_or_mistyped_fields_yield_nothing(document: Any) -> None:
    assert list(locate(document, parse_path("spec.jobs[*].template"))) == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "must not be empty"),
        ("spec..template", "segment ''"),
        ("spec.jobs[0].template", "segment 'jobs[0]'"),
        ("spec.$ref", "segment '$ref'"),
        ("*.template", "must start with a field name"),
    ],
)
def test_bad_paths_are_explained(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("[", r"\[").replace("$", r"\$")):
        parse_path(text)


# --- the policy's kinds --------------------------------------------------------------------


def test_every_default_kind_has_templates_and_a_plural() -> None:
    kinds = {(w.group, w.kind): w for w in default_policy().workloads}
    assert ("apps", "DaemonSet") not in kinds  # exempt: not worth a review per write
    assert kinds[("batch.volcano.sh", "Job")].resource == "jobs"
    assert kinds[("ray.io", "RayCluster")].resource == "rayclusters"
    assert all(w.templates for w in kinds.values())


def test_extra_kinds_add_or_replace_and_declare_versions_and_plurals() -> None:
    policy = parse_policy_text(
        "workloads:\n  extraKinds:\n"
        "    - {group: example.com, kind: Policy, resource: policies, versions: [v1],\n"
        "       templatePaths: [spec.template]}\n"
        "    - {group: apps, kind: Deployment, templatePaths: []}\n"
    )
    custom = policy.workload_kind("example.com/v1", "Policy")
    assert custom is not None and custom.resource == "policies"
    assert policy.workload_kind("example.com/v2", "Policy") is None
    replaced = policy.workload_kind("apps/v1", "Deployment")
    assert replaced is not None and replaced.templates == ()
    assert policy.workload_kind("v1", "Pod") is None


def test_workload_errors_name_the_field() -> None:
    shape = (
        "workloads:\n  extraKinds:\n"
        "    - {group: a.io, kind: Run, templatePaths: [ok, {path: ok, mutate: maybe}]}\n"
    )
    assert problems(shape) == [
        "workloads.extraKinds[0].templatePaths[1]: must be a template path, or a mapping with "
        "path (and podSpec, mutate, operatorOptIn)"
    ]
    semantic = (
        "workloads:\n  kinds:\n"
        "    - {group: a.io, kind: Run, templatePaths: ['spec.x[1]']}\n"
        "    - {group: a.io, kind: Run, templatePaths: [spec.template]}\n"
    )
    assert problems(semantic) == [
        "workloads.kinds[0].templatePaths[0]: segment 'x[1]' is not a field name, name[*] "
        "(list items) or * (map values)",
        "workloads.kinds[1]: Run of group 'a.io' listed twice",
    ]


def test_operator_presets_merge_beside_the_default_selector() -> None:
    policy = parse_policy_text("faultTolerant: {operatorPresets: [ray]}")
    assert policy.opts_in(FT)
    assert policy.opts_in({"ray.io/cluster": "c", "ray.io/node-type": "worker"})
    assert not policy.opts_in({"ray.io/cluster": "c", "ray.io/node-type": "head"})
    # A selector replaces the default selector whole but keeps the presets given beside it.
    only_team = parse_policy_text("faultTolerant: {matchLabels: {team: ml}}")
    assert not only_team.opts_in(FT) and only_team.opts_in({"team": "ml"})


def test_an_empty_selector_opts_nothing_in() -> None:
    assert problems("faultTolerant: {matchLabels: {}}")[0].startswith(
        "faultTolerant: name matchLabels, matchExpressions or operatorPresets"
    )
    presets_only = parse_policy_text(
        "faultTolerant: {matchLabels: {}, matchExpressions: [], operatorPresets: [volcano]}"
    )
    assert not presets_only.opts_in({"app": "web"})
    assert presets_only.opts_in({"volcano.sh/job-name": "resnet"})
    assert problems("faultTolerant: {operatorPresets: [slurm]}") == [
        "faultTolerant.operatorPresets[0]: must be one of jobset, kubeflow, ray, volcano"
    ]


def test_webhook_rules_follow_the_policy() -> None:
    validate = webhook_rules(default_policy(), "validate") + webhook_rules(
        default_policy(), "workloads"
    )
    resources = {r for rule in validate for r in rule["resources"]}
    assert {"pods", "pods/binding", "bindings", "deployments", "pytorchjobs", "jobsets"} <= (
        resources
    )
    assert all(rule["scope"] == "Namespaced" for rule in validate)
    assert webhook_rules(default_policy(), "mutate") == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    mutating = webhook_rules(parse_policy_text("workloads: {mutateTemplates: true}"), "mutate")
    assert any("rayjobs" in rule["resources"] for rule in mutating)


# --- objects under review ------------------------------------------------------------------


def test_shape_problems_of_templates_are_named_by_path() -> None:
    policy = default_policy()
    bad = deployment()
    bad["spec"]["template"]["spec"]["tolerations"] = {"key": "spot"}
    assert object_shape_problems(bad, policy) == [
        "object.spec.template.spec.tolerations: must be a list"
    ]
    not_a_template = {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": "text"}}
    assert object_shape_problems(not_a_template, policy) == [
        "object.spec.template: must be a mapping"
    ]
    override = {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "spec": {"podSpecOverrides": [{"nodeSelector": ["x"]}]},
    }
    assert object_shape_problems(override, policy) == [
        "object.spec.podSpecOverrides[0].nodeSelector: must be a mapping"
    ]
    assert object_shape_problems({"apiVersion": "v1", "kind": "ConfigMap"}, policy) == []
    assert object_shape_problems([], policy) == ["object: must be a mapping"]


def test_objects_are_not_reviewed_where_pods_are_not() -> None:
    policy = default_policy()
    denied = deployment([SPOT_TOLERATION])
    assert validate_object(denied, PodContext("shop"), policy).denials
    assert not validate_object(denied, PodContext("kube-system"), policy).violations
    assert not validate_object(denied, PodContext("shop", "DELETE"), policy).violations
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    assert validate_object(config_map, PodContext("shop"), policy).violations == ()


def test_namespace_comes_from_the_object_when_the_request_has_none() -> None:
    policy = parse_policy_text("namespaces: {include: [ml]}")
    job = deployment([SPOT_TOLERATION])
    job["metadata"]["namespace"] = "ml"
    assert validate_object(job, PodContext(""), policy).denials
    job["metadata"]["namespace"] = "web"
    assert not validate_object(job, PodContext(""), policy).violations


def test_an_update_without_the_old_object_is_judged_whole() -> None:
    decision = validate_object(
        deployment([SPOT_TOLERATION]), PodContext("shop", "UPDATE"), (default_policy())
    )
    assert decision.denials


def test_operator_opt_in_respects_operator_opt_in_false() -> None:
    policy = parse_policy_text("faultTolerant: {operatorPresets: [ray]}")
    cluster = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "c"},
        "spec": {
            "headGroupSpec": {"template": {"spec": {}}},
            "workerGroupSpecs": [{"template": {"spec": {}}}, {"template": {"spec": {}}}],
        },
    }
    workload = workload_of(cluster, policy)
    assert workload is not None
    found = [(t.path, t.opted_in) for t in templates_of(cluster, workload, policy)]
    assert found == [
        ("spec.headGroupSpec.template", False),
        ("spec.workerGroupSpecs[0].template", True),
        ("spec.workerGroupSpecs[1].template", True),
    ]
    assert describe_object(cluster) == "RayCluster c"
    assert describe_object({"kind": "Job", "metadata": {"generateName": "x-"}}) == "Job x-*"


def test_template_mutation_is_off_by_default_and_never_touches_the_input() -> None:
    ft = deployment(labels=FT)
    assert mutate_object(ft, PodContext("ml"), default_policy()).templates == ()
    policy = parse_policy_text("workloads: {mutateTemplates: true}")
    before = repr(ft)
    result = mutate_object(ft, PodContext("ml"), policy)
    assert result.changes and result.mutated is not None
    assert repr(ft) == before
    annotations = result.mutated["spec"]["template"]["metadata"]["annotations"]
    assert "spotguard.dev/injected" in annotations


def test_template_mutation_on_update_only_for_changed_templates() -> None:
    policy = parse_policy_text("workloads: {mutateTemplates: true}")
    old = deployment(labels=FT)
    new = deployment(labels=FT)
    new["metadata"]["labels"] = {"touched": "by-a-controller"}
    assert mutate_object(new, PodContext("ml", "UPDATE"), policy, old).templates == ()
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example/web:2"
    assert mutate_object(new, PodContext("ml", "UPDATE"), policy, old).changes


def test_template_mutation_in_audit_mode_reports_without_patching() -> None:
    policy = parse_policy_text("mode: audit\nworkloads: {mutateTemplates: true}")
    result = mutate_object(deployment(labels=FT), PodContext("ml"), policy)
    assert result.mutated is None and result.changes == ()
    assert [t.path for t in result.audited] == ["spec.template"]
    assert result.audited[0].decision.mode is Mode.AUDIT


def test_template_warnings_name_their_template() -> None:
    policy = parse_policy_text("workloads: {mutateTemplates: true}")
    stateful = deployment(labels=FT)
    stateful["kind"] = "StatefulSet"
    result = mutate_object(stateful, PodContext("ml"), policy)
    assert result.warnings == (
        "spotguard [stateful-workload]: pod is owned by StatefulSet web, so it stays off spot "
        "(in spec.template)",
    )
    # With template mutation on, validation leaves that warning to the mutating webhook.
    assert validate_object(stateful, PodContext("ml"), policy).warnings == ()


def test_the_transport_can_ask_by_admission_request_kind() -> None:
    policy = default_policy()
    volcano = policy.reviewed_kind("batch.volcano.sh", "v1alpha1", "Job")
    assert volcano is not None and volcano.operators == ("volcano",)
    assert policy.reviewed_kind("apps", "v1", "DaemonSet") is None
    assert policy.reviewed_kind("", "v1", "Pod") is None
