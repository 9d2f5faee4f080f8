"""Is the node a pod is being put on a spot node? The check behind nodeName and bindings.

Tolerations and affinity only steer the scheduler; a pod created with ``spec.nodeName``
skips the scheduler, and anything with the right permission can bind a pod to any node.
Whether the named node is spot is not in the request: the transport supplies the node's
labels (``context.cluster.node_labels``, a watch-backed cache). A node the cache does not
know yet is handled as the policy's ``nodeBinding.unknownNodes`` says.
"""

from __future__ import annotations

from policies.candidates import OffSpotReason
from policies.decisions import PodContext, Violation
from policies.model import Mode, Policy, Rule


def spot_node_violations(
    node_name: str,
    reasons: list[OffSpotReason],
    context: PodContext,
    policy: Policy,
    *,
    binding: bool,
) -> tuple[list[Violation], list[str]]:
    """Violations (and warnings) for putting a pod with these off-spot ``reasons`` on a node.

    ``binding`` picks the wording: a pods/binding request (``target.name``) rather than a pod
    created with ``spec.nodeName``. Each reason's mode caps the ``spot-node-binding`` rule's.
    """
    rule_mode = policy.mode_of(Rule.SPOT_NODE_BINDING)
    reasons = [reason for reason in reasons if reason.mode is not Mode.OFF]
    if rule_mode is Mode.OFF or not reasons:
        return [], []
    field = "target.name" if binding else "spec.nodeName"
    labels = context.cluster.node_labels(node_name)
    if labels is None:
        if not policy.deny_unknown_nodes:
            return [], [f"spotguard: node {node_name} is not known yet; not checked for spot"]
        problem = (
            f"it is being bound to node {node_name}, which spotguard does not know yet"
            if binding
            else f"it names node {node_name} in spec.nodeName, which spotguard does not know yet"
        )
        action = (
            "let the scheduler retry once the node is known"
            if binding
            else "remove spec.nodeName, or retry once the node is registered"
        )
        brief = f"node {node_name} is not known yet"
    else:
        spot_label = policy.spot_label_of(labels)
        if spot_label is None:
            return [], []
        problem = (
            f"it is being bound to spot node {node_name} ({spot_label})"
            if binding
            else f"it names spot node {node_name} ({spot_label}) in spec.nodeName"
        )
        action = (
            "bind it to an on-demand node (the scheduler retries elsewhere)"
            if binding
            else "remove spec.nodeName, or name an on-demand node"
        )
        brief = f"{'bound' if binding else 'spec.nodeName'} to spot node {node_name}"
    violations = [
        Violation(
            Rule.SPOT_NODE_BINDING,
            min(rule_mode, reason.mode),
            field,
            f"{reason.subject} but {problem}",
            reason.fix(action),
            reason.brief + brief,
        )
        for reason in reasons
    ]
    return violations, []
