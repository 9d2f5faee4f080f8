"""The validating rules: keep pods that cannot survive preemption off spot nodes.

A pod reaches a spot node by tolerating its taint, by selecting it (nodeSelector or a
required node-affinity term), or, on untainted spot nodes, by accident; the last case is
closed by the mutating ``keep-off-spot`` rule. Each violation names the field and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from policies.decisions import PodContext, ValidationDecision, Violation
from policies.model import Mode, Policy, Rule
from policies.pods import (
    display_name,
    is_node_agent,
    labels_of,
    required_node_selector_terms,
    spec_of,
    tolerates,
)

#: Requests that never put a pod anywhere: nothing to check.
_UNCHECKED_OPERATIONS = frozenset({"DELETE", "CONNECT"})


def validate_pod(
    pod: Mapping[str, Any],
    context: PodContext,
    policy: Policy,
    old_pod: Mapping[str, Any] | None = None,
) -> ValidationDecision:
    """Check a pod being created or updated. Updates are judged only on what they change."""
    if context.operation in _UNCHECKED_OPERATIONS:
        return ValidationDecision()
    if not policy.applies_to_namespace(context.namespace) or is_node_agent(pod):
        return ValidationDecision()
    if context.operation == "UPDATE" and not _placement_changed(pod, old_pod):
        # Controllers update labels, annotations and status of running pods all the time;
        # rejecting those would wedge them. Placement fields are what this policy guards.
        return ValidationDecision()
    violations: list[Violation] = []
    if policy.fault_tolerant.matches(labels_of(pod)):
        violations += _grace_period_violations(pod, policy)
    else:
        violations += _spot_placement_violations(pod, policy)
    return ValidationDecision(violations=tuple(v for v in violations if v.mode is not Mode.OFF))


def _placement_changed(pod: Mapping[str, Any], old_pod: Mapping[str, Any] | None) -> bool:
    """Of a pod's placement fields only tolerations may change after creation."""
    if old_pod is None:
        return True
    return spec_of(pod).get("tolerations") != spec_of(old_pod).get("tolerations")


def _spot_placement_violations(pod: Mapping[str, Any], policy: Policy) -> list[Violation]:
    mode = policy.mode_of(Rule.SPOT_REQUIRES_FAULT_TOLERANCE)
    if mode is Mode.OFF:
        return []
    spec = spec_of(pod)
    fix = (
        f"if pod {display_name(pod)} checkpoints and survives preemption, "
        f"{policy.fault_tolerant.describe_opt_in()}; otherwise remove "
    )

    def violation(field: str, problem: str, what: str, brief: str) -> Violation:
        return Violation(
            Rule.SPOT_REQUIRES_FAULT_TOLERANCE,
            mode,
            field,
            f"pod is not fault-tolerant but {problem}",
            fix + what,
            brief,
        )

    found: list[Violation] = []
    for index, toleration in enumerate(spec.get("tolerations") or []):
        tolerated = [t for t in policy.spot_taints if tolerates(toleration, t)]
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
    for key, value in (spec.get("nodeSelector") or {}).items():
        if policy.is_spot_label(key, str(value)):
            found.append(
                violation(
                    f"spec.nodeSelector[{key}]",
                    f"it selects spot nodes ({key}={value})",
                    "this nodeSelector entry",
                    f"nodeSelector selects spot ({key}={value})",
                )
            )
    prefix = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
    for term_index, term in enumerate(required_node_selector_terms(spec)):
        for expr_index, expression in enumerate(term.get("matchExpressions") or []):
            values = expression.get("values") or []
            if expression.get("operator") == "In" and any(
                policy.is_spot_label(expression.get("key", ""), str(v)) for v in values
            ):
                found.append(
                    violation(
                        f"{prefix}.nodeSelectorTerms[{term_index}].matchExpressions[{expr_index}]",
                        f"it requires spot nodes ({expression.get('key')} In {', '.join(values)})",
                        "this node-affinity requirement",
                        f"required node affinity selects spot ({expression.get('key')})",
                    )
                )
    return found


def _grace_period_violations(pod: Mapping[str, Any], policy: Policy) -> list[Violation]:
    mode = policy.mode_of(Rule.GRACE_PERIOD_FITS_NOTICE)
    grace = spec_of(pod).get("terminationGracePeriodSeconds")
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
