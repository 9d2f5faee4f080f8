"""The mutating rules: what a fault-tolerant pod gets, and what keeps other pods off spot.

Every step injects only what is absent, so running the rules on their own output changes
nothing (the API server may reinvoke the webhook), and appends rather than replaces, so
what the user and other webhooks wrote survives.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from policies.affinity import add_preferred_terms, and_into_required_terms, exclude_spot
from policies.annotations import (
    CHECKPOINT_CONTAINERS,
    INJECTED,
    PRESTOP_COMMAND,
    checkpoint_containers,
    injected_kinds,
    pre_stop_command,
)
from policies.candidates import is_fault_tolerant, poor_candidate_reasons
from policies.decisions import Change, MutationDecision, PodContext
from policies.model import Mode, Policy, Rule
from policies.pods import (
    API_DEFAULT_GRACE_SECONDS,
    JSONObject,
    annotations_of,
    json_copy,
    regular_containers,
)
from policies.presets import Taint
from policies.selectors import parse_toleration

CHECKPOINT_VOLUME = "spotguard-checkpoint"


def mutate_pod(
    pod: Mapping[str, Any], context: PodContext, policy: Policy, *, opted_in: bool = False
) -> MutationDecision:
    """Decide the mutation for a pod being created; the input is never modified.

    ``opted_in`` counts the pod as fault-tolerant whatever its labels (a template whose
    workload kind an operator preset opts in). A fault-tolerant pod that a poor-candidate
    rule in enforce mode wants off spot is kept off spot like any other pod, with a
    warning; in audit mode it is injected as usual, and the warning says what would change.
    Whether the pod is exempt (a DaemonSet or mirror pod) is the caller's question, asked
    from the request's identity (:mod:`policies.exemptions`), never from the pod's fields.
    """
    if context.operation != "CREATE" or not policy.applies_to_namespace(context.namespace):
        return MutationDecision(rule=None, mode=Mode.OFF)
    if (pod.get("spec") or {}).get("nodeName"):
        return MutationDecision(rule=None, mode=Mode.OFF)
    if not is_fault_tolerant(pod, policy, opted_in):
        return _apply(Rule.KEEP_OFF_SPOT, pod, policy)
    poor = poor_candidate_reasons(pod, context, policy)
    enforced = [reason for reason in poor if reason.mode is Mode.ENFORCE]
    if enforced:
        decision = _apply(Rule.KEEP_OFF_SPOT, pod, policy)
        notes = [f"spotguard [{r.rule}]: {r.subject}, so it stays off spot" for r in enforced]
    else:
        decision = _apply(Rule.INJECT, pod, policy)
        notes = [
            f"spotguard audit [{r.rule}]: {r.subject}, so it would stay off spot" for r in poor
        ]
    return replace(decision, warnings=(*notes, *decision.warnings)) if notes else decision


def _apply(rule: Rule, pod: Mapping[str, Any], policy: Policy) -> MutationDecision:
    mode = policy.mode_of(rule)
    if mode is Mode.OFF:
        return MutationDecision(rule=rule, mode=mode)
    mutated: JSONObject = json_copy(pod)
    spec = mutated.setdefault("spec", {})
    warnings: list[str] = []
    if rule is Rule.INJECT:
        changes = _inject_fault_tolerance(mutated, spec, policy, warnings)
    else:
        changes = _keep_off_spot(spec, policy)
    if not changes:
        return MutationDecision(rule=rule, mode=mode, warnings=tuple(warnings))
    _record(mutated, changes, policy.revision)
    return MutationDecision(
        rule=rule, mode=mode, changes=tuple(changes), mutated=mutated, warnings=tuple(warnings)
    )


def _keep_off_spot(spec: JSONObject, policy: Policy) -> list[Change]:
    """Exclude spot from every required term that could reach it (:mod:`policies.placement`)."""
    added = exclude_spot(spec, policy)
    return [Change("nodeAffinity", f"require {_expression(r)}") for r in added]


def _inject_fault_tolerance(
    pod: JSONObject, spec: JSONObject, policy: Policy, warnings: list[str]
) -> list[Change]:
    settings = policy.inject
    changes: list[Change] = []
    if settings.tolerations:
        changes += _add_tolerations(spec, policy.spot_taints)
    changes += _add_affinity(spec, policy)
    if settings.termination_grace_period:
        changes += _set_grace_period(spec, policy.notice_seconds)
    targets = _checkpoint_targets(pod, spec, policy, warnings)
    if settings.pre_stop.enabled:
        changes += _add_pre_stop(pod, targets, policy, warnings)
    changes += _add_checkpoint_storage(spec, targets, policy)
    return changes


def _toleration_for(taint: Taint) -> JSONObject:
    if taint.value is None:
        return {"key": taint.key, "operator": "Exists", "effect": taint.effect}
    return {"key": taint.key, "operator": "Equal", "value": taint.value, "effect": taint.effect}


def _add_tolerations(spec: JSONObject, taints: tuple[Taint, ...]) -> list[Change]:
    """Tolerate each spot taint on every node carrying it: a taint without a value needs
    ``Exists``, whatever ``Equal`` tolerations of its key the pod has."""
    tolerations: list[JSONObject] = spec.get("tolerations") or []
    own = [parsed for parsed in map(parse_toleration, tolerations) if parsed is not None]
    missing = [t for t in taints if not any(tol.tolerates_every_of(t) for tol in own)]
    if not missing:
        return []
    spec["tolerations"] = tolerations + [_toleration_for(t) for t in missing]
    return [Change("tolerations", f"tolerate {t.key}={t.value or '*'}:{t.effect}") for t in missing]


def _add_affinity(spec: JSONObject, policy: Policy) -> list[Change]:
    settings = policy.inject.affinity
    changes: list[Change] = []
    if settings.prefer_spot_weight:
        preferred = [
            {
                "weight": settings.prefer_spot_weight,
                "preference": {
                    "matchExpressions": [
                        {"key": label.key, "operator": "In", "values": list(label.values)}
                    ]
                },
            }
            for label in policy.spot_labels
        ]
        for term in add_preferred_terms(spec, preferred):
            expression = term["preference"]["matchExpressions"][0]
            changes.append(Change("nodeAffinity", f"prefer {expression['key']} In spot"))
    required: list[JSONObject] = []
    if settings.avoid_critical_addons:
        required.append({"key": settings.critical_addons_label, "operator": "DoesNotExist"})
    if settings.instance_types:
        required.append(
            {
                "key": settings.instance_type_label,
                "operator": "In",
                "values": list(settings.instance_types),
            }
        )
    for requirement in and_into_required_terms(spec, required):
        changes.append(Change("nodeAffinity", f"require {_expression(requirement)}"))
    return changes


def _expression(requirement: JSONObject) -> str:
    values = ",".join(requirement.get("values") or [])
    return f"{requirement['key']} {requirement['operator']} {values}".rstrip()


def _set_grace_period(spec: JSONObject, notice_seconds: int) -> list[Change]:
    current = spec.get("terminationGracePeriodSeconds")
    if current not in (None, API_DEFAULT_GRACE_SECONDS) or current == notice_seconds:
        return []
    spec["terminationGracePeriodSeconds"] = notice_seconds
    return [
        Change("terminationGracePeriodSeconds", f"terminationGracePeriodSeconds={notice_seconds}")
    ]


def _checkpoint_targets(
    pod: JSONObject, spec: JSONObject, policy: Policy, warnings: list[str]
) -> list[JSONObject]:
    """Containers that checkpoint: the annotation's list, else the policy's, else all.

    An annotation naming a container the pod does not have is not followed (validation
    reports it); a policy list naming none of the pod's containers hooks nothing, and the
    warning says so rather than letting the pod go to spot without a hook unnoticed.
    """
    containers = list(regular_containers(spec))
    present = [str(c.get("name")) for c in containers if isinstance(c.get("name"), str)]
    listed, problem = checkpoint_containers(annotations_of(pod).get(CHECKPOINT_CONTAINERS), present)
    if problem is not None:
        warnings.append(f"spotguard: {problem.annotation} {problem.problem}; using the policy's")
    names = listed if listed is not None else policy.inject.pre_stop.containers
    targets = [c for c in containers if not names or c.get("name") in names]
    if containers and not targets and policy.inject.pre_stop.enabled:
        warnings.append(
            f"spotguard: no container is named {', '.join(sorted(names))} "
            "(inject.preStop.containers); no checkpoint hook injected"
        )
    return targets


def _pre_stop_command(pod: JSONObject, policy: Policy, warnings: list[str]) -> list[str]:
    """The policy's command, unless the pod's annotation overrides it (JSON list or shell)."""
    command, problem = pre_stop_command(annotations_of(pod).get(PRESTOP_COMMAND))
    if problem is not None:
        warnings.append(f"spotguard: {problem.annotation} {problem.problem}; using the policy's")
    return list(command if command is not None else policy.inject.pre_stop.command)


def _add_pre_stop(
    pod: JSONObject, targets: list[JSONObject], policy: Policy, warnings: list[str]
) -> list[Change]:
    settings = policy.inject.pre_stop
    command = _pre_stop_command(pod, policy, warnings)
    wanted = {"exec": {"command": command}}
    changes: list[Change] = []
    for container in targets:
        lifecycle = container.get("lifecycle") or {}
        existing = lifecycle.get("preStop")
        if existing == wanted:
            continue
        if existing and not settings.replace_existing:
            warnings.append(
                f"spotguard: container {container.get('name')} keeps its own preStop hook; "
                "no checkpoint hook injected"
            )
            continue
        container["lifecycle"] = {**lifecycle, "preStop": wanted}
        changes.append(Change("preStop", f"preStop checkpoint hook in {container.get('name')}"))
    return changes


def _add_checkpoint_storage(
    spec: JSONObject, targets: list[JSONObject], policy: Policy
) -> list[Change]:
    settings = policy.inject.checkpoint
    changes: list[Change] = []
    if settings.claim_name:
        volumes: list[JSONObject] = spec.get("volumes") or []
        if not any(v.get("name") == CHECKPOINT_VOLUME for v in volumes):
            claim = {"claimName": settings.claim_name}
            spec["volumes"] = [
                *volumes,
                {"name": CHECKPOINT_VOLUME, "persistentVolumeClaim": claim},
            ]
            changes.append(Change("checkpointVolume", f"volume from PVC {settings.claim_name}"))
        for container in targets:
            mounts: list[JSONObject] = container.get("volumeMounts") or []
            if not any(m.get("mountPath") == settings.mount_path for m in mounts):
                mount = {"name": CHECKPOINT_VOLUME, "mountPath": settings.mount_path}
                container["volumeMounts"] = [*mounts, mount]
                changes.append(Change("checkpointVolume", f"mount in {container.get('name')}"))
    if settings.env:
        grace = spec.get("terminationGracePeriodSeconds")
        if grace is None:  # absent or null: the API server's default
            grace = API_DEFAULT_GRACE_SECONDS
        reserve = policy.inject.pre_stop.sigterm_reserve_seconds
        hook_budget = max(1, int(grace) - reserve)
        variables = {
            "SPOTGUARD_CHECKPOINT_DIR": settings.mount_path,
            "SPOTGUARD_RESUME": "latest",
            "SPOTGUARD_PRESTOP_TIMEOUT_SECONDS": str(hook_budget),
            "SPOTGUARD_SIGTERM_RESERVE_SECONDS": str(reserve),
        }
        for container in targets:
            env: list[JSONObject] = container.get("env") or []
            names = {item.get("name") for item in env}
            new = [{"name": k, "value": v} for k, v in variables.items() if k not in names]
            if new:
                container["env"] = env + new
                changes.append(Change("env", f"checkpoint env in {container.get('name')}"))
    return changes


def _record(pod: JSONObject, changes: list[Change], revision: str) -> None:
    """Note on the pod what spotguard injected and under which policy revision.

    Kinds a previous record lists are kept; a record anyone else wrote, whatever its
    shape, is replaced (:func:`policies.annotations.injected_kinds` reads it).
    """
    metadata = pod.setdefault("metadata", {})
    annotations = metadata.get("annotations") or {}
    previous = injected_kinds(annotations)
    kinds = sorted(set(previous) | {change.kind for change in changes})
    record = json.dumps({"revision": revision, "injected": kinds}, separators=(",", ":"))
    metadata["annotations"] = {**annotations, INJECTED: record}
