"""The symbolic placement model (could a spot node host this pod?) and the affinity edits
built on it, checked case by case and against the concrete model on generated pods and
generated spot nodes of every spot class."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from policies.affinity import add_preferred_terms, and_into_required_terms, exclude_spot
from policies.loader import default_policy, parse_policy_text
from policies.model import Policy
from policies.placement import Node, can_reach_spot, fits, spot_reach, spot_selection
from policies.pods import json_copy
from policies.presets import Taint
from policies.selectors import parse_int64
from tests.test_placement import expr, required, terms_of

EKS = "eks.amazonaws.com/capacityType"
AKS = "kubernetes.azure.com/scalesetpriority"
DEFAULT = default_policy()
AKS_ONLY = parse_policy_text("spotNodes: {presets: [aks]}")
#: AKS (tainted), an integer-valued label whose nodes always carry a taint of any value,
#: an untainted label, and a taint no label guarantees.
CUSTOM = parse_policy_text(
    "spotNodes:\n"
    "  presets: [aks]\n"
    "  labels:\n"
    "    - {key: tier, values: ['1', '2'], taints: [{key: tier, effect: NoSchedule}]}\n"
    "    - {key: pool, values: [cheap]}\n"
    "  taints: [{key: spot, effect: NoExecute}]\n"
)


def keys_of(requirements: tuple[dict[str, Any], ...]) -> list[str]:
    return [r["key"] for r in requirements]


UNTAINTED_KEYS = [k for k in DEFAULT.spot_values if k != AKS]


@pytest.mark.parametrize(
    ("spec", "exclusions", "forcing"),
    [
        ({}, UNTAINTED_KEYS, ()),
        ({"tolerations": [{"operator": "Exists"}]}, list(DEFAULT.spot_values), ()),
        (required({"matchExpressions": [expr(EKS, "NotIn", "ON_DEMAND")]}), UNTAINTED_KEYS, ()),
        (required({"matchExpressions": [expr(EKS, "Exists")]}), UNTAINTED_KEYS, ()),
        (required({"matchExpressions": [expr(EKS, "Exists"), expr(EKS, "NotIn", "ON_DEMAND")]}),
         UNTAINTED_KEYS, ()),  # the label may hold any other value: not only spot
        (required({"matchExpressions": [expr(EKS, "In", "SPOT")]}), [EKS], (EKS,)),
        (required({"matchExpressions": [expr(EKS, "In", "SPOT", "ON_DEMAND"),
                                        expr(EKS, "NotIn", "ON_DEMAND")]}), [EKS], (EKS,)),
        (required({"matchExpressions": [expr(EKS, "In", "SPOT", "ON_DEMAND")]}),
         UNTAINTED_KEYS, ()),
        (required({"matchExpressions": [expr("lifecycle", "In", "spot"), expr(EKS, "In", "SPOT")]}),
         [EKS], (EKS, "lifecycle")),  # one exclusion suffices; keys in policy order
        (required({"matchExpressions": [expr(AKS, "In", "spot")]}), [], (AKS,)),  # tainted
        (required({"matchFields": [expr("metadata.name", "In", "node-1")]}), UNTAINTED_KEYS, ()),
        (required({"matchFields": [expr("metadata.name", "In", "a"),
                                   expr("metadata.name", "In", "b")]}), [], ()),
        (required({"matchExpressions": [expr(k, "NotIn", *v) for k, v in
                                        DEFAULT.spot_values.items() if k != AKS]}), [], ()),
        (required({}), [], ()),
        (required({"matchExpressions": [expr(EKS, "In")]}), [], ()),  # API-invalid
        ({"nodeSelector": {EKS: "SPOT"}}, [EKS], ()),
        ({"nodeSelector": {AKS: "spot"}}, [], ()),
    ],
)  # fmt: skip
def test_what_each_term_reaches(spec: dict[str, Any], exclusions: list[str], forcing: Any) -> None:
    reach = spot_reach(spec, DEFAULT)
    [term] = reach.terms
    assert keys_of(term.exclusions) == exclusions
    assert term.reaches_spot is bool(exclusions)
    assert spot_selection(spec, DEFAULT).terms.get(0, ()) == forcing


def test_required_affinity_without_terms_is_left_to_the_api_server() -> None:
    reach = spot_reach(required(), DEFAULT)
    assert reach.required == "invalid" and reach.terms == () and not reach.reaches_spot
    assert spot_reach({}, DEFAULT).required == "absent"
    assert spot_reach(required({}), DEFAULT).required == "terms"


def test_node_selector_entries_that_name_spot_values() -> None:
    spec = {"nodeSelector": {EKS: "SPOT", "zone": "a", AKS: "regular", "lifecycle": "spot"}}
    assert spot_selection(spec, DEFAULT).node_selector == (EKS, "lifecycle")


def test_a_tainted_class_is_reachable_only_by_tolerating_its_taint() -> None:
    assert not can_reach_spot({}, AKS_ONLY)
    for toleration in (
        {"key": AKS, "operator": "Exists"},
        {"key": AKS, "value": "spot"},
        {"operator": "Exists", "effect": "NoSchedule"},
    ):
        assert can_reach_spot({"tolerations": [toleration]}, AKS_ONLY), toleration
    assert not can_reach_spot({"tolerations": [{"key": AKS, "value": "regular"}]}, AKS_ONLY)
    assert not can_reach_spot({"tolerations": [{"key": AKS, "effect": "NoExecute",
                                                "operator": "Exists"}]}, AKS_ONLY)  # fmt: skip
    # A guaranteed taint of any value: an Equal toleration with any value opens some nodes.
    assert can_reach_spot({"tolerations": [{"key": "tier", "value": "x"}]}, CUSTOM)


def test_the_exclusions_of_a_term_already_excluded_are_none_but_its_selection_is_seen() -> None:
    spec = required({"matchExpressions": [expr(EKS, "In", "SPOT")]})
    assert exclude_spot(spec, DEFAULT) == [{"key": EKS, "operator": "NotIn", "values": ["SPOT"]}]
    [term] = spot_reach(spec, DEFAULT).terms
    assert not term.reaches_spot and term.exclusions == ()
    assert spot_selection(spec, DEFAULT).terms == {0: (EKS,)}  # still a spot selection


def test_gt_and_lt_on_an_integer_spot_label() -> None:
    lower = required({"matchExpressions": [expr("tier", "Lt", "3")]})
    policy = parse_policy_text("spotNodes: {presets: [], noticeWindowSeconds: 30,"
                               " labels: [{key: tier, values: ['1', '2']}]}")  # fmt: skip
    [term] = spot_reach(lower, policy).terms
    assert keys_of(term.exclusions) == ["tier"]
    assert not spot_selection(lower, policy).terms  # "0" or "01" remain
    both = required({"matchExpressions": [expr("tier", "Lt", "3"), expr("tier", "In", "1", "5")]})
    assert spot_selection(both, policy).terms == {0: ("tier",)}
    none = required({"matchExpressions": [expr("tier", "Gt", "9223372036854775807")]})
    assert not can_reach_spot(none, policy)


# -- never widen, never repair ----------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        required(),
        required({}),
        required(None, {"matchExpressions": [expr(EKS, "In")]}),
        {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}}},
        {"affinity": "x"},
        {"affinity": {"nodeAffinity": []}},
    ],
)
def test_terms_that_match_nothing_and_invalid_affinity_stay_as_they_are(
    spec: dict[str, Any],
) -> None:
    before = json_copy(spec)
    assert exclude_spot(spec, DEFAULT) == []
    requirement = {"key": "CriticalAddonsOnly", "operator": "DoesNotExist"}
    assert and_into_required_terms(spec, [requirement]) == []
    assert spec == before


@pytest.mark.parametrize(
    "spec",
    [
        {"affinity": "x"},
        {"affinity": {"nodeAffinity": []}},
        {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": {}}}},
        {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [1]}}},
    ],
)
def test_mistyped_affinity_gets_no_preferred_terms(spec: dict[str, Any]) -> None:
    before = json_copy(spec)
    term = {"weight": 1, "preference": {"matchExpressions": [expr(EKS, "In", "SPOT")]}}
    assert add_preferred_terms(spec, [term]) == []
    assert spec == before


def test_fault_tolerant_requirements_go_into_every_matchable_term_lacking_the_key() -> None:
    requirement = {"key": "CriticalAddonsOnly", "operator": "DoesNotExist"}
    spec = required(
        {}, {"matchExpressions": [expr("zone", "In", "a")]},
        {"matchExpressions": [expr("CriticalAddonsOnly", "Exists")]},
        {"matchFields": [expr("metadata.name", "In", "n1")]},
    )  # fmt: skip
    assert and_into_required_terms(spec, [requirement]) == [requirement]
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"] == [
        {},
        {"matchExpressions": [expr("zone", "In", "a"), requirement]},
        {"matchExpressions": [expr("CriticalAddonsOnly", "Exists")]},
        {"matchFields": [expr("metadata.name", "In", "n1")], "matchExpressions": [requirement]},
    ]
    assert and_into_required_terms(spec, [requirement]) == []
    fresh: dict[str, Any] = {}
    assert and_into_required_terms(fresh, [requirement]) == [requirement]
    assert fresh == required({"matchExpressions": [requirement]})


# -- the symbolic model against the concrete one ------------------------------------------

KEYS = [EKS, AKS, "tier", "pool", "zone"]
VALUES = ["SPOT", "ON_DEMAND", "spot", "cheap", "1", "2", "01", "3", "a", ""]
BOUNDS = ["0", "1", "2", "01", "abc", "9223372036854775807"]
TOLERATIONS = [
    {"operator": "Exists"},
    {"key": AKS, "value": "spot"},
    {"key": AKS, "value": "regular", "effect": "NoSchedule"},
    {"key": "tier", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "tier", "value": "x"},
    {"key": "tier", "operator": "Gt", "value": "5"},
    {"key": "spot", "operator": "Exists"},
    {"key": "other", "operator": "Exists"},
]
TAINT_VALUES = ["x", "7", "0", "", "spot"]
EXTRA_TAINTS = [Taint("spot", "1", "NoExecute"), Taint("zone", "a", "PreferNoSchedule")]
KEY = st.sampled_from(KEYS)
EXPRESSION = st.one_of(
    st.builds(lambda k, o, v: {"key": k, "operator": o, "values": v}, KEY,
              st.sampled_from(["In", "NotIn"]), st.lists(st.sampled_from(VALUES), max_size=3)),
    st.builds(lambda k, o: {"key": k, "operator": o}, KEY,
              st.sampled_from(["Exists", "DoesNotExist"])),
    st.builds(lambda k, o, v: {"key": k, "operator": o, "values": [v]}, KEY,
              st.sampled_from(["Gt", "Lt"]), st.sampled_from(BOUNDS)),
)  # fmt: skip
FIELD = st.builds(
    lambda o, v: {"key": "metadata.name", "operator": o, "values": [v]},
    st.sampled_from(["In", "NotIn"]),
    st.sampled_from(["n1", "n2"]),
)
TERM = st.one_of(
    st.none(),
    st.builds(
        lambda e, f: {
            **({"matchExpressions": e} if e else {}),
            **({"matchFields": f} if f else {}),
        },
        st.lists(EXPRESSION, max_size=3),
        st.lists(FIELD, max_size=1),
    ),
)


def _spec(selector: dict[str, str], terms: list[Any] | None, tolerations: list[Any]) -> Any:
    spec: dict[str, Any] = {} if terms is None else required(*terms)
    if selector:
        spec["nodeSelector"] = selector
    if tolerations:
        spec["tolerations"] = tolerations
    return spec


SPEC = st.builds(
    _spec,
    st.dictionaries(KEY, st.sampled_from(VALUES), max_size=2),
    st.none() | st.lists(TERM, max_size=3),
    st.lists(st.sampled_from(TOLERATIONS), max_size=2),
)
POLICIES = {"default": DEFAULT, "aks": AKS_ONLY, "custom": CUSTOM}


def _is_spot(labels: dict[str, str], policy: Policy) -> bool:
    return any(labels.get(key) in values for key, values in policy.spot_values.items())


def _taints_of(labels: dict[str, str], policy: Policy, values: Iterator[str]) -> tuple[Taint, ...]:
    """The guaranteed taints of every class the node is in, each value-less one given a value."""
    taints = {t for key, value in labels.items() for t in policy.guaranteed_taints(key, value)}
    return tuple(
        Taint(t.key, next(values) if t.value is None else t.value, t.effect) for t in taints
    )


@st.composite
def nodes(draw: st.DrawFn, policy: Policy, spot: bool) -> Node:
    keys = st.sampled_from([*KEYS, *policy.spot_values])
    labels = draw(st.dictionaries(keys, st.sampled_from(VALUES), max_size=4))
    if spot:
        spot_class = draw(st.sampled_from(policy.spot_classes))
        labels[spot_class.key] = spot_class.value
    else:
        labels = {k: v for k, v in labels.items() if v not in policy.spot_values.get(k, ())}
    values = iter(draw(st.lists(st.sampled_from(TAINT_VALUES), min_size=8, max_size=8)))
    extra = draw(st.lists(st.sampled_from(EXTRA_TAINTS), max_size=1))
    taints = _taints_of(labels, policy, values) + tuple(extra)
    return Node(draw(st.sampled_from(["n1", "n2", "n3"])), labels, taints)


def _fits_either_way(spec: Any, node: Node) -> bool:
    """Fits with or without the comparison-tolerations feature gate."""
    return fits(spec, node) or fits(spec, node, toleration_comparisons=True)


@settings(max_examples=300, deadline=None)
@given(spec=SPEC, data=st.data())
def test_the_symbolic_model_agrees_with_the_concrete_one(spec: Any, data: st.DataObject) -> None:
    policy = POLICIES[data.draw(st.sampled_from(sorted(POLICIES)))]
    spot_nodes = data.draw(st.lists(nodes(policy, spot=True), min_size=1, max_size=6))
    other_nodes = data.draw(st.lists(nodes(policy, spot=False), min_size=1, max_size=4))
    reach = spot_reach(spec, policy)
    # Sound: a generated spot node the pod fits means the model says spot is reachable.
    if any(_fits_either_way(spec, node) for node in spot_nodes):
        assert reach.reaches_spot
    mutated = json_copy(spec)
    added = exclude_spot(mutated, policy)
    assert bool(added) is reach.reaches_spot
    # After keep-off-spot no spot node fits; every other node fits exactly as before.
    assert not any(_fits_either_way(mutated, node) for node in spot_nodes)
    for node in other_nodes:
        assert fits(mutated, node) == fits(spec, node)
    # Idempotent, and the term's own selection is still recognised.
    again = json_copy(mutated)
    assert exclude_spot(again, policy) == [] and again == mutated
    assert not spot_reach(mutated, policy).reaches_spot
    selection = spot_selection(spec, policy)
    if reach.required == "terms":
        assert spot_selection(mutated, policy) == selection
    # Only-spot terms match no generated node that is not spot.
    for index in selection.terms:
        alone = required(terms_of(spec)[index])
        for node in [*spot_nodes, *other_nodes]:
            if fits(alone, Node(node.name, node.labels)):
                assert _is_spot(dict(node.labels), policy)


def _brute_force_spot_nodes(spec: Any, policy: Policy) -> Iterator[Node]:
    """Every spot node made of the values this spec and policy name, per key, and integers
    around every bound: an independent search over whole nodes, not key by key."""
    expressions = [e for t in terms_of(spec) if t for e in t.get("matchExpressions", [])]
    named: dict[str, set[str]] = {k: set(v) for k, v in policy.spot_values.items()}
    for key, value in (spec.get("nodeSelector") or {}).items():
        named.setdefault(key, set()).add(value)
    for expression in expressions:
        values = named.setdefault(expression["key"], set())
        for value in expression.get("values", []):
            number = parse_int64(value)
            near = [] if number is None else [max(number + d, 0) for d in (-1, 0, 1)]
            values |= {value, *(str(n) for n in near), *("0" + str(n) for n in near)}
    keys = sorted(named)
    choices = [[None, "fresh-value", *sorted(named[k])] for k in keys]
    names = ["fresh-node", "n1", "n2"]
    taint_values = ["fresh-value", "", "0", "6", "4", *TAINT_VALUES]
    for combination in itertools.product(*choices):
        labels = {k: v for k, v in zip(keys, combination, strict=True) if v is not None}
        if not _is_spot(labels, policy):
            continue
        taint_keys = {t for k, v in labels.items() for t in policy.guaranteed_taints(k, v)}
        open_values = [t for t in taint_keys if t.value is None]
        for chosen in itertools.product(taint_values, repeat=len(open_values)):
            given_values = dict(zip(open_values, chosen, strict=True))
            taints = tuple(Taint(t.key, given_values.get(t, t.value), t.effect) for t in taint_keys)
            for name in names:
                yield Node(name, labels, taints)


@settings(max_examples=120, deadline=None)
@given(spec=SPEC)
@example(spec={"nodeSelector": {"tier": "1"}, "tolerations": [{"key": "tier", "value": "x"}]})
@example(spec={"nodeSelector": {"tier": "2"}, "tolerations": [{"key": "tier", "operator": "Gt",
                                                               "value": "5"}]})  # fmt: skip
@example(spec={"nodeSelector": {"tier": "2"}, "tolerations": [{"key": "tier", "value": ""}]})
@example(spec={"nodeSelector": {"pool": "cheap"}, "tolerations": [{"key": "pool", "value": ""}]})
@example(spec=required({"matchExpressions": [expr("tier", "Gt", "1"), expr("tier", "Lt", "3")]}))
@example(spec={**required({"matchExpressions": [expr("tier", "Gt", "0"), expr("tier", "Lt", "3"),
                                                expr("pool", "DoesNotExist")]}),
               "tolerations": [{"key": "tier", "operator": "Exists"}]})  # fmt: skip
@example(spec=required({"matchFields": [expr("metadata.name", "In", "n1"),
                                        expr("metadata.name", "In", "n2")]}))  # fmt: skip
@example(spec=required({"matchFields": [expr("metadata.name", "In", "")]}))
def test_reachable_spot_has_a_witness_node(spec: Any) -> None:
    """Complete: when the model says spot is reachable, a brute-force search finds a spot
    node the pod fits (the comparison gate on, as the model assumes for Lt/Gt)."""
    named_keys = {e["key"] for t in terms_of(spec) if t for e in t.get("matchExpressions", [])}
    assume(len(named_keys | set(spec.get("nodeSelector") or {})) <= 3)
    found = any(
        fits(spec, node, toleration_comparisons=True)
        for node in _brute_force_spot_nodes(spec, CUSTOM)
    )
    assert found is can_reach_spot(spec, CUSTOM)
