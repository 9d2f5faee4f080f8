"""Where a pod can run, by kube-scheduler's rules: the one model every placement rule uses.

Two layers:

- concrete (:func:`fits`): can this pod spec be bound to this node (name, labels,
  taints)? Exactly the Filter phase of the scheduler's NodeAffinity and TaintToleration
  plugins, parse errors included (:mod:`policies.selectors` mirrors the Go code);
- symbolic, over the nodes the policy counts as spot: could ANY of them host the pod
  (:func:`can_reach_spot`; per term, and what to AND in to exclude spot:
  :func:`spot_reach`), and which parts of the spec select ONLY spot nodes
  (:func:`spot_selection`)? A spot node carries a spot label value; its other labels and
  its name are unknown (any value, or absent); it carries at least the taints its spot
  class guarantees (:class:`policies.model.SpotClass`) and maybe no other. Each
  requirement of a node selector constrains one label key, so every key is solved on its
  own, over a finite set of candidate values that stands for all the others (absent,
  every value named, a fresh string, integers around the ``Gt``/``Lt`` bounds).

Tolerations against the policy's spot taints ask one of two questions: does a toleration
tolerate SOME node carrying the taint (:func:`tolerates_some`, what validation denies) or
EVERY node carrying it (:func:`tolerates_every`, what injection makes sure of)? They differ
for a taint the policy gives without a value (any value): an ``Equal`` toleration of the
key tolerates some such nodes, not all of them.

Nothing here raises on decoded JSON: what the API server could not decode matches nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from policies.model import Policy
from policies.presets import Taint
from policies.selectors import (
    INT64_MAX,
    NAME_FIELD,
    FieldRequirement,
    Placement,
    Requirement,
    Term,
    Toleration,
    parse_placement,
    parse_term,
    parse_toleration,
)

JSONObject = dict[str, Any]


@dataclass(frozen=True)
class Node:
    """A concrete node as the scheduler sees it. A taint value None is the empty value."""

    name: str
    labels: Mapping[str, str]
    taints: tuple[Taint, ...] = ()

    @classmethod
    def from_api(cls, node: Mapping[str, Any]) -> Node:
        """From a Node object as the API returns it."""
        metadata = node.get("metadata") or {}
        taints = tuple(
            Taint(str(t.get("key", "")), str(t.get("value") or ""), str(t.get("effect", "")))
            for t in (node.get("spec") or {}).get("taints") or []
        )
        return cls(str(metadata.get("name", "")), dict(metadata.get("labels") or {}), taints)


def fits(spec: Mapping[str, Any], node: Node, *, toleration_comparisons: bool = False) -> bool:
    """Whether the scheduler's NodeAffinity and TaintToleration filters let a pod with this
    spec onto ``node``. ``toleration_comparisons``: the alpha feature gate
    TaintTolerationComparisonOperators (off by default), which gives ``Lt``/``Gt``
    tolerations a meaning."""
    placement = parse_placement(spec)
    return placement.matches(node.name, node.labels) and placement.tolerates_node(
        node.taints, comparisons=toleration_comparisons
    )


def tolerates_some(toleration: Any, taint: Taint) -> bool:
    """Whether ``toleration`` tolerates the taint of SOME node carrying ``taint`` (value
    None: any value). A toleration that does opens such nodes to the pod. ``Lt``/``Gt``
    count as the feature gate defines them: the API server admits them only with it on."""
    parsed = parse_toleration(toleration)
    return parsed is not None and parsed.tolerates_some_of(taint)


def tolerates_every(toleration: Any, taint: Taint) -> bool:
    """Whether ``toleration`` tolerates ``taint`` on EVERY node carrying it, whatever its
    value where the policy gives none: what a fault-tolerant pod needs. ``Lt``/``Gt`` never
    count (the feature gate may be off), so injection adds a toleration that always does."""
    parsed = parse_toleration(toleration)
    return parsed is not None and parsed.tolerates_every_of(taint)


@dataclass(frozen=True)
class TermReach:
    """What one required term (``index``) can reach, ANDed with the nodeSelector; with no
    required node affinity, a single entry (``index`` None) for the nodeSelector alone.
    ``exclusions``: the requirements to AND into the term so that no spot node could host
    the pod through it (empty when none can: its tolerations against each class's
    guaranteed taints count)."""

    index: int | None
    exclusions: tuple[JSONObject, ...]

    @property
    def reaches_spot(self) -> bool:
        return bool(self.exclusions)


@dataclass(frozen=True)
class SpotReach:
    """How a pod spec's required placement can reach the policy's spot nodes."""

    #: ``absent`` (no required node affinity), ``terms``, or ``invalid``: required node
    #: affinity with no term at all (an empty ``nodeSelectorTerms`` list, which the API
    #: rejects, or a mistyped field). It matches no node: left for the API server to reject.
    required: str
    terms: tuple[TermReach, ...]

    @property
    def reaches_spot(self) -> bool:
        return any(term.reaches_spot for term in self.terms)


@dataclass(frozen=True)
class SpotSelection:
    """The parts of a pod spec's node selection that select ONLY spot nodes (labels only):
    every node they match is spot, and some spot node matches. An explicit choice of spot.

    ``node_selector``: nodeSelector keys whose entry is a spot value. ``terms``: required
    term index -> the spot label keys whose requirements in it leave only spot values.
    Terms are judged as their author wrote them: the exclusions spotguard ANDs in are left
    out, so a term a keep-off-spot mutation emptied still shows the selection it was.
    """

    node_selector: tuple[str, ...]
    terms: Mapping[int, tuple[str, ...]]


def spot_exclusion(key: str, policy: Policy) -> JSONObject:
    """The requirement that keeps a term off every spot value of label ``key``."""
    return {"key": key, "operator": "NotIn", "values": list(policy.spot_values[key])}


def spot_reach(spec: Mapping[str, Any], policy: Policy) -> SpotReach:
    """Which required terms of ``spec`` (or, without any, its nodeSelector alone) let a
    spot node host the pod, and what to AND into each to exclude spot."""
    placement = parse_placement(spec)
    solver = _Solver(policy, placement.tolerations)
    if placement.required is None:
        return SpotReach("absent", (solver.reach(None, None, placement),))
    if not placement.required:
        return SpotReach("invalid", ())
    terms = tuple(
        solver.reach(index, term, placement) for index, term in enumerate(placement.required)
    )
    return SpotReach("terms", terms)


def can_reach_spot(spec: Mapping[str, Any], policy: Policy) -> bool:
    """Whether some node the policy counts as spot could host a pod with this spec."""
    return spot_reach(spec, policy).reaches_spot


def spot_selection(spec: Mapping[str, Any], policy: Policy) -> SpotSelection:
    """Where ``spec``'s nodeSelector or required terms select only spot nodes."""
    placement = parse_placement(spec)
    node_selector = tuple(
        key
        for key, value in placement.node_selector or ()
        if value in policy.spot_values.get(key, ())
    )
    terms: dict[int, tuple[str, ...]] = {}
    if placement.required:
        solver = _Solver(policy, ())
        for index, term in enumerate(placement.required):
            forcing = solver.forcing_keys(_authored(placement.raw_terms[index], term, policy))
            if forcing:
                terms[index] = forcing
    return SpotSelection(node_selector, terms)


# -- solving, key by key ----------------------------------------------------------------


class _KeyOptions(NamedTuple):
    """Which kinds of value one label key can take on a node matching a conjunction."""

    non_spot: bool  # absent, or a value that is no spot value of the key
    spot: bool  # a spot value
    spot_tolerated: bool  # a spot value whose class's blocking taints the pod tolerates

    @property
    def satisfiable(self) -> bool:
        return self.non_spot or self.spot


def candidate_values(
    requirements: Sequence[Requirement], spot_values: Sequence[str]
) -> Iterator[str | None]:
    """Label values (None: absent) that stand for every value a node could carry.

    A requirement only tells apart: absence, the values it names, and integers on either
    side of a ``Gt``/``Lt`` bound; every other value behaves like a fresh string. Node
    label values are label values, so integers are 0 to the int64 maximum, written with
    any number of leading zeros (each spelling a different string for ``In``/``NotIn``).
    """
    yield None
    named = [v for r in requirements if r.operator in ("In", "NotIn") for v in r.values]
    literals = dict.fromkeys([*spot_values, *named])
    yield from literals
    fresh = "spotguard-any-other-value"
    while fresh in literals:
        fresh += "-x"
    yield fresh
    greater = [r.bound for r in requirements if r.operator == "Gt"]
    less = [r.bound for r in requirements if r.operator == "Lt"]
    if not greater and not less:
        return
    low = max([*greater, -1]) + 1
    high = min([*less, INT64_MAX + 1]) - 1
    spellings = len(literals) + 1  # one of these many is not a named value
    for number in range(max(low, 0), min(high, max(low, 0) + spellings) + 1):
        for zeros in range(spellings + 1):
            text = "0" * zeros + str(number)
            if len(text) > 63:
                break
            yield text


class _Conjunction:
    """ANDed label requirements and node-name requirements (a nodeSelector with a term)."""

    def __init__(self, requirements: Sequence[Requirement], fields: Sequence[FieldRequirement]):
        self.by_key: dict[str, list[Requirement]] = {}
        for requirement in requirements:
            self.by_key.setdefault(requirement.key, []).append(requirement)
        self.fields = fields

    def names_possible(self) -> bool:
        """Some node name meets the field requirements (names are unknown, never empty)."""
        wanted = [f.value for f in self.fields if f.key == NAME_FIELD and f.operator == "In"]
        name = wanted[0] if wanted else "spotguard-any-node"
        while not wanted and name in {f.value for f in self.fields}:
            name += "-x"
        return bool(name) and all(f.matches({NAME_FIELD: name}) for f in self.fields)


class _Solver:
    """Solves the conjunctions of one pod. A key no requirement names can be absent (not
    spot) or take any spot value, so only the keys a conjunction names are searched."""

    def __init__(self, policy: Policy, tolerations: Sequence[Toleration]):
        self.policy = policy
        #: ``(key, value)`` of the spot classes whose blocking taints the pod does not
        #: tolerate: no node of theirs can host it.
        self.closed = frozenset(
            spot_class
            for spot_class, taints in policy.blocking_taints.items()
            if not all(any(t.tolerates_some_of(taint) for t in tolerations) for taint in taints)
        )

        self.closed_keys = frozenset(key for key, _ in self.closed)

    def _open(self, key: str) -> bool:
        """Some spot value of ``key`` (no other requirement on it) lets the pod in."""
        if key not in self.closed_keys:
            return True
        return any((key, value) not in self.closed for value in self.policy.spot_values[key])

    def options(self, key: str, requirements: Sequence[Requirement]) -> _KeyOptions:
        spot_values = self.policy.spot_values.get(key, ())
        non_spot = spot = tolerated = False
        for value in candidate_values(requirements, spot_values):
            if not all(r.matches({} if value is None else {key: value}) for r in requirements):
                continue
            if value is None or value not in spot_values:
                non_spot = True
            else:
                spot, tolerated = True, tolerated or (key, value) not in self.closed
        return _KeyOptions(non_spot, spot, tolerated)

    def solve(self, conjunction: _Conjunction) -> dict[str, _KeyOptions] | None:
        """The options of every key the conjunction names; None if no node name fits."""
        if not conjunction.names_possible():
            return None
        return {key: self.options(key, r) for key, r in conjunction.by_key.items()}

    def reach(self, index: int | None, term: Term | None, placement: Placement) -> TermReach:
        """``term`` None: no required node affinity, the nodeSelector alone."""
        if placement.node_selector is None or (term is not None and not term.matchable):
            return TermReach(index, ())
        selector = [Requirement(k, "In", (v,)) for k, v in placement.node_selector]
        requirements = [*selector, *(term.requirements if term else ())]
        options = self.solve(_Conjunction(requirements, term.fields if term else ()))
        # A spot node fits if one key takes a tolerated spot value and every other key a
        # value whose taints the pod tolerates (a value that is not spot brings none).
        if options is None or not all(o.non_spot or o.spot_tolerated for o in options.values()):
            return TermReach(index, ())
        return TermReach(index, self._exclusions(options))

    def _exclusions(self, options: Mapping[str, _KeyOptions]) -> tuple[JSONObject, ...]:
        """The fewest exclusions that leave no spot node: one, for a key that can only take
        spot values (the term then matches nothing); else one for every key through which
        a spot node fits, since each of them alone lets one in."""
        reaching = [
            key
            for key in self.policy.spot_values
            if (options[key].spot_tolerated if key in options else self._open(key))
        ]
        only_spot = [key for key in reaching if key in options and not options[key].non_spot]
        return tuple(spot_exclusion(key, self.policy) for key in (only_spot[:1] or reaching))

    def forcing_keys(self, term: Term) -> tuple[str, ...]:
        """The spot keys left with only spot values, if the term (labels only) matches a
        node: then every node it matches is spot. Empty otherwise."""
        spot_values = self.policy.spot_values
        if not term.matchable or not any(r.key in spot_values for r in term.requirements):
            return ()  # a term that names no spot label also matches nodes that are not spot
        options = self.solve(_Conjunction(term.requirements, term.fields))
        if options is None or not all(o.satisfiable for o in options.values()):
            return ()
        return tuple(key for key in spot_values if key in options and not options[key].non_spot)


def _is_exclusion(expression: Any, policy: Policy) -> bool:
    """Whether a ``matchExpressions`` item is one spotguard ANDs in (:func:`spot_exclusion`)."""
    return (
        isinstance(expression, dict)
        and expression.get("operator") == "NotIn"
        and expression.get("key") in policy.spot_values
        and expression == spot_exclusion(expression["key"], policy)
    )


def _authored(raw_term: Any, term: Term, policy: Policy) -> Term:
    """The term without the exclusions spotguard ANDs in: what its author selected."""
    expressions = raw_term.get("matchExpressions") if isinstance(raw_term, dict) else None
    if not isinstance(expressions, list) or not any(_is_exclusion(e, policy) for e in expressions):
        return term
    kept = [e for e in expressions if not _is_exclusion(e, policy)]
    return parse_term({**raw_term, "matchExpressions": kept})
