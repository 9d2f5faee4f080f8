"""Node-affinity edits that only ever add, never replace or weaken.

Required ``nodeSelectorTerms`` are ORed by the scheduler, so a new requirement is ANDed
into every existing term; adding a separate term would widen what the pod accepts. A term
that already constrains a key keeps its own constraint: the pod's author was explicit.
"""

from __future__ import annotations

from typing import Any

from policies.pods import JSONObject, json_copy, required_node_selector_terms


def _node_affinity(spec: JSONObject) -> JSONObject:
    affinity = spec.get("affinity")
    if not isinstance(affinity, dict):
        affinity = spec["affinity"] = {}
    node_affinity = affinity.get("nodeAffinity")
    if not isinstance(node_affinity, dict):
        node_affinity = affinity["nodeAffinity"] = {}
    return node_affinity


def and_into_required_terms(spec: JSONObject, requirements: list[JSONObject]) -> list[JSONObject]:
    """AND each requirement into every required term lacking its key; return those added."""
    if not requirements:
        return []
    existing = required_node_selector_terms(spec)
    if not existing:
        node_affinity = _node_affinity(spec)
        node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {
            "nodeSelectorTerms": [{"matchExpressions": json_copy(requirements)}]
        }
        return list(requirements)
    added: dict[str, JSONObject] = {}
    for term in existing:
        expressions: list[Any] = term.get("matchExpressions") or []
        constrained = {expression.get("key") for expression in expressions}
        new = [r for r in requirements if r["key"] not in constrained]
        if new:
            term["matchExpressions"] = expressions + json_copy(new)
            added.update({r["key"]: r for r in new})
    return list(added.values())


def add_preferred_terms(spec: JSONObject, terms: list[JSONObject]) -> list[JSONObject]:
    """Append preferred terms whose expressions are not already preferred; return those added."""
    current = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "preferredDuringSchedulingIgnoredDuringExecution"
    ) or []
    present = [
        expression
        for term in current
        for expression in ((term.get("preference") or {}).get("matchExpressions") or [])
    ]
    new = [
        term
        for term in terms
        if not all(e in present for e in term["preference"]["matchExpressions"])
    ]
    if new:
        node_affinity = _node_affinity(spec)
        node_affinity["preferredDuringSchedulingIgnoredDuringExecution"] = current + json_copy(new)
    return new
