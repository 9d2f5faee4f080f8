"""The validating rules: keep pods that cannot survive preemption off spot nodes.

A pod reaches a spot node by tolerating its taint, by selecting it (nodeSelector or a
required node-affinity term), or, on untainted spot nodes, by accident; the last case is
closed by the mutating ``keep-off-spot`` rule, and a pod put on a node directly
(``spec.nodeName``) is checked against that node's labels. "Pods that must stay off spot"
are those not fault-tolerant and the poor candidates among those that are
(:mod:`policies.candidates`). Pods that will go to spot are also checked for what spot
asks of them: a grace period and a checkpoint that fit the notice window, and steering
annotations the checkpoint hook can follow. Each violation names the field and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from policies.annotations import (
    CHECKPOINT_CONTAINERS,
    PRESTOP_COMMAND,
    checkpoint_containers,
    pre_stop_command,
)
from policies.budget import checkpoint_budget_violations
from policies.candidates import OffSpotReason, is_fault_tolerant, off_spot_reasons
from policies.decisions import PodContext, ValidationDecision, Violation
from policies.model import Mode, Policy, Rule
from policies.nodes import spot_node_violations
from policies.placement import spot_exclusion, spot_selection
from policies.pods import annotations_of, chosen_grace, regular_containers, spec_of
from policies.selectors import parse_placement, parse_toleration

#: Requests that never put a pod anywhere: nothing to check.
_UNCHECKED_OPERATIONS = frozenset({"DELETE", "CONNECT"})
_TOLERATION_FIELD = re.compile(r"^spec\.tolerations\[(\d+)\]")


def validate_pod(
    pod: Mapping[str, Any],
    context: PodContext,
    policy: Policy,
    old_pod: Mapping[str, Any] | None = None,
    *,
    opted_in: bool = False,
) -> ValidationDecision:
    """Check a pod being created or updated. Updates are judged only on what they change.

    ``opted_in`` counts the pod as fault-tolerant whatever its labels: a template whose
    workload kind an operator preset opts in (its pods will carry the operator's labels).
    A pod created with ``spec.nodeName`` is checked against that node's labels, looked up
    through ``context.cluster``. On UPDATE the only placement field a pod may change is
    its tolerations (it may only add some), so an update is judged on the tolerations it
    adds: labels, annotations and status change all the time on running pods, and a pod
    admitted before spotguard (or this policy) must not have every later update denied.
    Whether the pod is exempt (a DaemonSet or mirror pod) is the caller's question, asked
    from the request's identity (:mod:`policies.exemptions`), never from the pod's fields.
    """
    if context.operation in _UNCHECKED_OPERATIONS:
        return ValidationDecision()
    if not policy.applies_to_namespace(context.namespace):
        return ValidationDecision()
    if context.operation == "UPDATE" and not _placement_changed(pod, old_pod):
        return ValidationDecision()
    fault_tolerant = is_fault_tolerant(pod, policy, opted_in)
    reasons = off_spot_reasons(pod, context, policy, fault_tolerant)
    violations: list[Violation] = []
    if fault_tolerant and not any(reason.mode is Mode.ENFORCE for reason in reasons):
        # Going to spot: what spot asks of it. Pods kept off spot get none of this.
        violations += _grace_period_violations(pod, policy)
        violations += checkpoint_budget_violations(pod, policy)
        violations += steering_violations(pod, policy)
    for reason in reasons:
        violations += spot_placement_violations(pod, policy, reason)
    warnings: list[str] = []
    node_name = spec_of(pod).get("nodeName")
    if context.operation == "CREATE" and node_name:
        found, warnings = spot_node_violations(
            str(node_name), reasons, context, policy, binding=False
        )
        violations += found
    if context.operation == "UPDATE" and old_pod is not None:
        violations = _added_by_update(violations, pod, old_pod)
    return ValidationDecision(
        violations=tuple(v for v in violations if v.mode is not Mode.OFF),
        warnings=tuple(warnings),
    )


def _placement_changed(pod: Mapping[str, Any], old_pod: Mapping[str, Any] | None) -> bool:
    """Of a pod's placement fields only tolerations may change after creation."""
    if old_pod is None:
        return True
    return spec_of(pod).get("tolerations") != spec_of(old_pod).get("tolerations")


def _added_by_update(
    violations: list[Violation], pod: Mapping[str, Any], old_pod: Mapping[str, Any]
) -> list[Violation]:
    """The violations an update causes: those of the tolerations it adds.

    Each new toleration is looked up among the old ones by its canonical JSON, not by a
    scan of them all: a pod may list thousands, and a scan per violation was quadratic
    (16,000 tolerations took seconds). The fields a toleration has are strings and an
    integer (policies.shapes), so equal tolerations have equal JSON.
    """
    old = spec_of(old_pod).get("tolerations") or []
    new = spec_of(pod).get("tolerations") or []
    old_keys = {_canonical(toleration) for toleration in old}
    kept: list[Violation] = []
    for violation in violations:
        match = _TOLERATION_FIELD.match(violation.field)
        if match and int(match[1]) < len(new) and not _kept(new[int(match[1])], old, old_keys):
            kept.append(violation)
    return kept


def _canonical(value: Any) -> bytes | None:
    """``value`` as JSON with sorted keys; None for what JSON cannot hold (a CLI's YAML)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return None


def _kept(toleration: Any, old: list[Any], old_keys: set[bytes | None]) -> bool:
    """Whether the pod had ``toleration`` before the update."""
    key = _canonical(toleration)
    if key is not None and None not in old_keys:
        return key in old_keys
    return toleration in old  # what JSON cannot hold: compared the slow way


def steering_violations(pod: Mapping[str, Any], policy: Policy) -> list[Violation]:
    """Steering annotations the injected hook cannot follow (rule ``inject``).

    A typo in ``checkpoint-containers`` would otherwise hook nothing while the pod still
    goes to spot, and a malformed ``prestop-command`` would run as shell text.
    """
    mode = policy.mode_of(Rule.INJECT)
    if mode is Mode.OFF or not policy.inject.pre_stop.enabled:
        return []
    annotations = annotations_of(pod)
    names = [str(c.get("name")) for c in regular_containers(spec_of(pod))]
    problems = [
        pre_stop_command(annotations.get(PRESTOP_COMMAND))[1],
        checkpoint_containers(annotations.get(CHECKPOINT_CONTAINERS), names)[1],
    ]
    return [
        Violation(Rule.INJECT, mode, p.field, p.problem, p.fix, p.brief)
        for p in problems
        if p is not None
    ]


def spot_placement_violations(
    pod: Mapping[str, Any], policy: Policy, reason: OffSpotReason
) -> list[Violation]:
    """Where a pod that must stay off spot tolerates or selects spot nodes anyway.

    Judged by the placement model (:mod:`policies.placement`): a toleration that tolerates
    a spot taint on some node (an ``Equal`` toleration of a taint the policy gives without
    a value included), a nodeSelector entry with a spot value, a required term whose own
    requirements leave only spot nodes (``In``, or ``NotIn``/``Exists``/``Gt``/``Lt``
    combined so that only spot values remain). A term that merely could reach spot is
    the keep-off-spot mutation's business, not a violation.
    """
    if reason.mode is Mode.OFF:
        return []
    spec = spec_of(pod)

    def violation(field: str, problem: str, what: str, brief: str) -> Violation:
        return Violation(
            reason.rule,
            reason.mode,
            field,
            f"{reason.subject} but {problem}",
            reason.fix(f"remove {what}"),
            reason.brief + brief,
        )

    found: list[Violation] = []
    tolerations = spec.get("tolerations")
    for index, toleration in enumerate(tolerations if isinstance(tolerations, list) else []):
        parsed = parse_toleration(toleration)
        tolerated = [t for t in policy.spot_taints if parsed and parsed.tolerates_some_of(t)]
        if tolerated:
            taint = tolerated[0]
            found.append(
                violation(
                    f"spec.tolerations[{index}]",
                    f"it tolerates the spot taint {taint.key}={taint.value or '*'}:{taint.effect}",
                    "this toleration",
                    f"tolerates spot taint {taint.key}",
                )
            )
    selection = spot_selection(spec, policy)
    for key in selection.node_selector:
        value = spec["nodeSelector"][key]
        found.append(
            violation(
                f"spec.nodeSelector[{key}]",
                f"it selects spot nodes ({key}={value})",
                "this nodeSelector entry",
                f"nodeSelector selects spot ({key}={value})",
            )
        )
    forcing = [(index, key) for index, keys in selection.terms.items() for key in keys]
    raw_terms = parse_placement(spec).raw_terms if forcing else ()
    for term_index, key in forcing:
        field = f"{_REQUIRED}.nodeSelectorTerms[{term_index}]"
        ours = spot_exclusion(key, policy)
        expressions = [
            (index, expression)
            for index, expression in enumerate(raw_terms[term_index].get("matchExpressions") or [])
            if isinstance(expression, dict) and expression.get("key") == key and expression != ours
        ]
        described = "; ".join(_describe(expression) for _, expression in expressions)
        if len(expressions) == 1:
            field += f".matchExpressions[{expressions[0][0]}]"
        found.append(
            violation(
                field,
                f"it requires spot nodes ({described})",
                "this node-affinity requirement"
                if len(expressions) == 1
                else "these node-affinity requirements",
                f"required node affinity selects spot ({key})",
            )
        )
    return found


_REQUIRED = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"


def _describe(expression: Mapping[str, Any]) -> str:
    values = expression.get("values")
    shown = ", ".join(str(v) for v in values) if isinstance(values, list) else ""
    return f"{expression.get('key')} {expression.get('operator')} {shown}".rstrip()


def _grace_period_violations(pod: Mapping[str, Any], policy: Policy) -> list[Violation]:
    mode = policy.mode_of(Rule.GRACE_PERIOD_FITS_NOTICE)
    grace = chosen_grace(spec_of(pod), policy.inject.termination_grace_period)
    if mode is Mode.OFF or grace is None or grace <= policy.notice_seconds:
        return []
    return [
        Violation(
            Rule.GRACE_PERIOD_FITS_NOTICE,
            mode,
            "spec.terminationGracePeriodSeconds",
            f"{grace}s exceeds the {policy.notice_seconds}s a spot node gives on preemption",
            f"set it to {policy.notice_seconds} or less and checkpoint periodically, so the "
            "final save only flushes the newest checkpoint",
            f"grace period {grace}s exceeds the {policy.notice_seconds}s spot notice window",
        )
    ]
