"""Workload objects under review: their templates judged by the pod rules, at apply time.

A pod that a controller creates and spotguard rejects shows up only as an event nobody
reads. Checking the templates of Deployments, Jobs, PyTorchJobs, ... when they are applied
makes ``kubectl apply`` fail at once, with the message the pod would get and the field
prefixed by the template's path. The rules themselves stay in :func:`validate_pod` and
:func:`mutate_pod`: this module only finds templates and maps fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from policies.candidates import is_fault_tolerant, poor_candidate_reasons
from policies.decisions import (
    ObjectMutation,
    PodContext,
    TemplateMutation,
    ValidationDecision,
    Violation,
)
from policies.model import Mode, Policy, Rule, WorkloadKind
from policies.mutate import mutate_pod
from policies.paths import value_at
from policies.pods import JSONObject, json_copy
from policies.validate import validate_pod
from policies.workloads import Template, template_pod, templates_of, workload_of

_REVIEWED_OPERATIONS = frozenset({"CREATE", "UPDATE"})


def _namespace(obj: Mapping[str, Any], context: PodContext) -> str:
    return context.namespace or str((obj.get("metadata") or {}).get("namespace") or "")


def _reviewed(
    obj: Mapping[str, Any], context: PodContext, policy: Policy
) -> tuple[WorkloadKind, str, PodContext] | None:
    """(kind, namespace, context for its pods) of an object the policy reviews, else None.

    Templates are judged as pods being created, in the object's namespace.
    """
    if context.operation not in _REVIEWED_OPERATIONS:
        return None
    namespace = _namespace(obj, context)
    workload = workload_of(obj, policy)
    if workload is None or not policy.applies_to_namespace(namespace):
        return None
    return workload, namespace, PodContext(namespace, "CREATE", context.cluster)


def _unchanged(template: Template, old_obj: Mapping[str, Any] | None, context: PodContext) -> bool:
    """On UPDATE a template equal to the stored one is not judged again.

    Controllers update old objects' metadata (finalizers, labels) all the time; denying
    those because of a template admitted before spotguard (or before this policy) would
    wedge them, deletion included.
    """
    if context.operation != "UPDATE" or old_obj is None:
        return False
    return bool(value_at(old_obj, template.location) == template.node)


def validate_object(
    obj: Mapping[str, Any],
    context: PodContext,
    policy: Policy,
    old_obj: Mapping[str, Any] | None = None,
) -> ValidationDecision:
    """Check every pod template of a workload object; kinds the policy does not list pass.

    Each template is validated as a pod being created (``validate_pod``), with the
    object's namespace and the object as owner; violations name the object's field
    (``spec.template.spec.tolerations[0]``). Warnings also say when templates labelled
    fault-tolerant will be kept off spot (a poor candidate), so the user hears it at apply.
    """
    reviewed = _reviewed(obj, context, policy)
    if reviewed is None:
        return ValidationDecision()
    workload, namespace, pod_context = reviewed
    violations: list[Violation] = []
    warnings: list[str] = []
    for template in templates_of(obj, workload, policy):
        if _unchanged(template, old_obj, context):
            continue
        pod = template_pod(obj, template, namespace)
        decision = validate_pod(pod, pod_context, policy, opted_in=template.opted_in)
        violations += [replace(v, field=template.field(v.field)) for v in decision.violations]
        warnings += decision.warnings
        if not (policy.mutate_templates and template.entry.mutate):
            denied = {v.rule for v in decision.violations}
            warnings += _kept_off_spot(pod, template, pod_context, policy, denied)
    return ValidationDecision(tuple(violations), tuple(dict.fromkeys(warnings)))


def _kept_off_spot(
    pod: JSONObject, template: Template, context: PodContext, policy: Policy, denied: set[Rule]
) -> list[str]:
    """Say at apply time when a fault-tolerant template's pods will be kept off spot.

    Its pods are mutated when created, by a controller, where nobody reads the warning.
    Rules that already produced a violation for this template are not repeated.
    """
    if not is_fault_tolerant(pod, policy, template.opted_in):
        return []
    notes: list[str] = []
    for reason in poor_candidate_reasons(pod, context, policy):
        if reason.rule in denied:
            continue
        if reason.mode is Mode.ENFORCE:
            notes.append(
                f"spotguard [{reason.rule}]: {template.path}: {reason.subject}, "
                "so its pods stay off spot"
            )
        else:
            notes.append(
                f"spotguard audit [{reason.rule}]: {template.path}: {reason.subject}, "
                "so its pods would stay off spot"
            )
    return notes


def mutate_object(
    obj: Mapping[str, Any],
    context: PodContext,
    policy: Policy,
    old_obj: Mapping[str, Any] | None = None,
) -> ObjectMutation:
    """Mutate a workload object's templates as their pods would be (``workloads.mutateTemplates``).

    Off by default: pods are mutated when created anyway. When on, each template (except
    those the policy marks ``mutate: false``) gets what ``mutate_pod`` would give its pods;
    a pod later created from it gets nothing more, since every injection is idempotent.
    The input is never modified.
    """
    reviewed = _reviewed(obj, context, policy) if policy.mutate_templates else None
    if reviewed is None:
        return ObjectMutation()
    workload, namespace, pod_context = reviewed
    results: list[TemplateMutation] = []
    mutated: JSONObject | None = None
    for template in templates_of(obj, workload, policy):
        if not template.entry.mutate or _unchanged(template, old_obj, context):
            continue
        pod = template_pod(obj, template, namespace)
        decision = mutate_pod(pod, pod_context, policy, opted_in=template.opted_in)
        if decision.rule is None and not decision.warnings:
            continue
        results.append(TemplateMutation(template.path, decision))
        if decision.mode is Mode.ENFORCE and decision.changes and decision.mutated is not None:
            if mutated is None:
                mutated = json_copy(dict(obj))
            _write_back(mutated, template, decision.mutated)
    return ObjectMutation(templates=tuple(results), mutated=mutated)


def _write_back(obj: JSONObject, template: Template, pod: JSONObject) -> None:
    """Put the mutated pod's spec (and spotguard's annotation) back into the template."""
    node = value_at(obj, template.location)
    assert isinstance(node, dict)
    if template.entry.pod_spec:
        node.update(pod.get("spec") or {})
        return
    node["spec"] = pod.get("spec") or {}
    annotations = (pod.get("metadata") or {}).get("annotations")
    metadata = node.get("metadata") or {}
    if annotations is not None and annotations != metadata.get("annotations"):
        node["metadata"] = {**metadata, "annotations": annotations}
