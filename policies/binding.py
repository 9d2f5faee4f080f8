"""The binding check: nothing, the scheduler included, binds a pod that must stay off spot
to a spot node.

A ``pods/binding`` request (and the legacy ``bindings`` resource) carries a Binding
object: ``metadata.name`` is the pod, ``target.name`` the node. It says nothing of the
pod itself, so the stored pod comes from the cluster facts (``ClusterFacts.pod``, a watch
cache), as do the node's labels. The stored pod is already mutated: a fault-tolerant pod
with injected tolerations is judged by its labels, not by its tolerations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from policies.candidates import is_fault_tolerant, off_spot_reasons
from policies.decisions import PodContext, ValidationDecision
from policies.model import Mode, Policy
from policies.nodes import spot_node_violations


def binding_target(binding: Mapping[str, Any]) -> str | None:
    """The node a Binding names, if it names one."""
    target = binding.get("target")
    name = target.get("name") if isinstance(target, dict) else None
    return name if isinstance(name, str) and name else None


def validate_binding(
    binding: Mapping[str, Any],
    pod: Mapping[str, Any] | None,
    context: PodContext,
    policy: Policy,
) -> ValidationDecision:
    """Decide a Binding of ``pod`` (None: the transport could not find it) to its target node.

    A pod that must stay off spot (not fault-tolerant, or a poor candidate) bound to a spot
    node is a ``spot-node-binding`` violation. Whether the pod is exempt (a DaemonSet pod
    whose owner is verified) is the caller's question (:mod:`policies.exemptions`). An
    unknown pod is let through with a warning: the Binding names a pod that
    exists, so only a transport failure gets here, and spotguard fails open.
    """
    if context.operation != "CREATE" or not policy.applies_to_namespace(context.namespace):
        return ValidationDecision()
    node_name = binding_target(binding)
    if node_name is None:
        return ValidationDecision()
    if pod is None:
        name = (binding.get("metadata") or {}).get("name", "(unnamed)")
        return ValidationDecision(
            warnings=(f"spotguard: pod {name} not found; binding to {node_name} not checked",)
        )
    reasons = off_spot_reasons(pod, context, policy, is_fault_tolerant(pod, policy))
    violations, warnings = spot_node_violations(node_name, reasons, context, policy, binding=True)
    return ValidationDecision(
        violations=tuple(v for v in violations if v.mode is not Mode.OFF),
        warnings=tuple(warnings),
    )
