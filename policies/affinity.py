"""Node-affinity edits that only ever narrow, never replace, widen or repair.

Required ``nodeSelectorTerms`` are ORed by the scheduler, so a new requirement is ANDed
into existing terms; adding a separate term would widen what the pod accepts. Three kinds
of term are left exactly as they are:

- an empty (or null) term matches no node: ANDing anything into it would make it match;
- a term the scheduler cannot parse matches no node either, and the API server rejects
  the pod anyway (an ``In`` without values, say);
- an empty ``nodeSelectorTerms`` list is invalid: filling it would make an invalid pod
  valid. Only a pod without required node affinity gets a new term.
"""

from __future__ import annotations

from typing import Any

from policies.model import Policy
from policies.placement import spot_reach
from policies.pods import JSONObject, json_copy
from policies.selectors import parse_term, raw_required_terms

PREFERRED = "preferredDuringSchedulingIgnoredDuringExecution"


def _node_affinity(spec: JSONObject) -> JSONObject | None:
    """``spec.affinity.nodeAffinity``, created if absent; None where a field is mistyped."""
    affinity = spec.get("affinity")
    if affinity is None:
        affinity = spec["affinity"] = {}
    node_affinity = affinity.get("nodeAffinity") if isinstance(affinity, dict) else None
    if isinstance(affinity, dict) and node_affinity is None:
        node_affinity = affinity["nodeAffinity"] = {}
    return node_affinity if isinstance(node_affinity, dict) else None


def _add_required_term(spec: JSONObject, requirements: list[JSONObject]) -> bool:
    node_affinity = _node_affinity(spec)
    if node_affinity is None:
        return False
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {
        "nodeSelectorTerms": [{"matchExpressions": json_copy(requirements)}]
    }
    return True


def _raw_terms(spec: JSONObject) -> list[Any]:
    required = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    terms: list[Any] = required["nodeSelectorTerms"]
    return terms


def _and_into(term: JSONObject, requirements: list[JSONObject]) -> None:
    term["matchExpressions"] = [*(term.get("matchExpressions") or []), *json_copy(requirements)]


def and_into_required_terms(spec: JSONObject, requirements: list[JSONObject]) -> list[JSONObject]:
    """AND each requirement into every term that can match a node and does not constrain its
    key yet (the pod's author was explicit there); return the requirements added."""
    if not requirements:
        return []
    raw_terms = raw_required_terms(spec)
    if raw_terms is None:
        return list(requirements) if _add_required_term(spec, requirements) else []
    added: dict[str, JSONObject] = {}
    for raw in raw_terms:
        term = parse_term(raw)
        if not term.matchable:
            continue
        constrained = {requirement.key for requirement in term.requirements}
        new = [r for r in requirements if r["key"] not in constrained]
        if new:
            _and_into(raw, new)
            added.update({r["key"]: r for r in new})
    return list(added.values())


def exclude_spot(spec: JSONObject, policy: Policy) -> list[JSONObject]:
    """AND into every term that could reach a spot node exactly the requirements that keep
    it off spot, whatever the term already says about those keys (``NotIn [ON_DEMAND]``,
    ``Exists`` or ``Gt`` all still reach spot); return the requirements added. Nothing is
    added when the pod cannot reach spot (every spot node it could match has a taint it
    does not tolerate, or its terms match no node)."""
    reach = spot_reach(spec, policy)
    added: dict[str, JSONObject] = {}
    if reach.required == "absent":
        exclusions = list(reach.terms[0].exclusions)
        if exclusions and _add_required_term(spec, exclusions):
            added.update({r["key"]: r for r in exclusions})
        return list(added.values())
    raw_terms = _raw_terms(spec) if reach.terms else []
    for term in reach.terms:
        if term.exclusions and term.index is not None:
            _and_into(raw_terms[term.index], list(term.exclusions))
            added.update({r["key"]: r for r in term.exclusions})
    return list(added.values())


def add_preferred_terms(spec: JSONObject, terms: list[JSONObject]) -> list[JSONObject]:
    """Append preferred terms whose expressions are not already preferred; return those
    added (none where the affinity is mistyped: it is left for the API server to reject)."""
    affinity = spec.get("affinity")
    node_affinity = affinity.get("nodeAffinity") if isinstance(affinity, dict) else None
    current = node_affinity.get(PREFERRED) if isinstance(node_affinity, dict) else None
    current = [] if current is None else current
    if not isinstance(current, list) or not all(isinstance(t, dict) for t in current):
        return []
    present = [
        expression
        for term in current
        if isinstance(term.get("preference"), dict)
        for expression in (term["preference"].get("matchExpressions") or [])
    ]
    new = [
        term
        for term in terms
        if not all(e in present for e in term["preference"]["matchExpressions"])
    ]
    if new:
        node_affinity = _node_affinity(spec)
        if node_affinity is None:
            return []
        node_affinity[PREFERRED] = current + json_copy(new)
    return new
