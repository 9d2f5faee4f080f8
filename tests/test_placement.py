"""The concrete placement model against kube-scheduler's rules, case by case.

Every expectation here is read off the Go sources of Kubernetes 1.37 (NodeAffinity and
TaintToleration filters, apimachinery's label requirements, ``Toleration.ToleratesTaint``);
tests/e2e/test_scheduler_agreement.py checks the same model against the real scheduler.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.loader import PolicyError, parse_policy_text
from policies.placement import Node, fits, tolerates_every, tolerates_some
from policies.presets import Taint
from policies.selectors import parse_int64, parse_placement

SPOT = Node("spot-1", {"eks.amazonaws.com/capacityType": "SPOT", "rank": "7", "zero": "007"})
ON_DEMAND = Node("od-1", {"eks.amazonaws.com/capacityType": "ON_DEMAND", "rank": "x12"})
BARE = Node("bare-1", {})
EKS = "eks.amazonaws.com/capacityType"
REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"


def expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    expression: dict[str, Any] = {"key": key, "operator": operator}
    if values:
        expression["values"] = list(values)
    return expression


def required(*terms: Any) -> dict[str, Any]:
    return {"affinity": {"nodeAffinity": {REQUIRED: {"nodeSelectorTerms": list(terms)}}}}


def terms_of(spec: dict[str, Any]) -> list[Any]:
    """The required terms a spec built with :func:`required` holds."""
    affinity = (spec.get("affinity") or {}).get("nodeAffinity") or {}
    return list((affinity.get(REQUIRED) or {}).get("nodeSelectorTerms") or [])


def where(spec: dict[str, Any]) -> set[str]:
    """The names of the three nodes the spec fits."""
    return {node.name for node in (SPOT, ON_DEMAND, BARE) if fits(spec, node)}


ALL = {"spot-1", "od-1", "bare-1"}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        (expr(EKS, "In", "SPOT"), {"spot-1"}),
        (expr(EKS, "In", "SPOT", "ON_DEMAND"), {"spot-1", "od-1"}),
        (expr(EKS, "NotIn", "ON_DEMAND"), {"spot-1", "bare-1"}),  # true where absent
        (expr(EKS, "Exists"), {"spot-1", "od-1"}),
        (expr(EKS, "DoesNotExist"), {"bare-1"}),
        (expr("rank", "Gt", "5"), {"spot-1"}),  # "x12" is no integer: no match
        (expr("rank", "Lt", "8"), {"spot-1"}),
        (expr("rank", "Gt", "7"), set()),
        (expr("zero", "Lt", "8"), {"spot-1"}),  # "007" parses as 7
        (expr("zero", "Gt", "06"), {"spot-1"}),  # so does the bound "06"
        (expr("rank", "Gt", "-1"), set()),  # "-1" is no label value: the term fails to parse
        (expr("rank", "Gt", "abc"), set()),  # not an integer: parse error
        (expr("rank", "Gt", "5", "6"), set()),  # Gt takes exactly one value
        (expr("rank", "Gt"), set()),
        (expr("rank", "Lt", "99999999999999999999"), set()),  # beyond int64
        (expr(EKS, "In"), set()),  # In without values: parse error
        (expr(EKS, "NotIn"), set()),
        (expr(EKS, "Exists", "SPOT"), set()),  # Exists with values: parse error
        (expr(EKS, "DoesNotExist", "SPOT"), set()),
        (expr(EKS, "Matches", "SPOT"), set()),  # unknown operator
        (expr("bad key!", "Exists"), set()),  # invalid label key
        (expr("a/b/c", "Exists"), set()),
        (expr("UPPER.example/x", "Exists"), set()),  # prefix must be a lowercase DNS name
        (expr(EKS, "In", "not a value"), set()),  # invalid label value
        (expr(EKS, "NotIn", "x" * 64), set()),  # label values are at most 63 characters
        ({"key": EKS, "operator": "In", "values": "SPOT"}, set()),  # mistyped: no node
        ({"key": EKS, "operator": None}, set()),  # null operator is "": unsupported
    ],
)
def test_each_operator_as_the_scheduler_reads_it(
    expression: dict[str, Any], expected: set[str]
) -> None:
    assert where(required({"matchExpressions": [expression]})) == expected


def test_terms_are_ored_expressions_anded_and_a_broken_term_only_fails_itself() -> None:
    spot_and_ranked = {"matchExpressions": [expr(EKS, "In", "SPOT"), expr("rank", "Exists")]}
    assert where(required(spot_and_ranked)) == {"spot-1"}
    assert (
        where(required({"matchExpressions": [expr(EKS, "In", "SPOT"), expr("x", "Exists")]}))
        == set()
    )
    assert where(required(spot_and_ranked, {"matchExpressions": [expr(EKS, "DoesNotExist")]})) == {
        "spot-1",
        "bare-1",
    }
    broken = {"matchExpressions": [expr(EKS, "In")]}
    assert where(required(broken, {"matchExpressions": [expr(EKS, "Exists")]})) == {
        "spot-1",
        "od-1",
    }


@pytest.mark.parametrize(
    "spec",
    [
        required(),  # an empty nodeSelectorTerms list: API-invalid, matches nothing
        required({}),  # an empty term matches no node
        required(None),  # a null term too
        required({"matchExpressions": [], "matchFields": []}),
        {"affinity": {"nodeAffinity": {REQUIRED: {}}}},
        {"affinity": {"nodeAffinity": {REQUIRED: {"nodeSelectorTerms": None}}}},
        {"affinity": []},  # mistyped: the API could not decode it
        {"affinity": {"nodeAffinity": "x"}},
        required("x"),
        required({"matchExpressions": "x"}),
        {"nodeSelector": ["x"]},
        {"nodeSelector": {EKS: 5}},
    ],
)  # fmt: skip
def test_empty_and_malformed_affinity_matches_no_node(spec: dict[str, Any]) -> None:
    assert where(spec) == set()


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"affinity": None},
        {"affinity": {}},
        {"affinity": {"nodeAffinity": None}},
        {"affinity": {"nodeAffinity": {REQUIRED: None}}},
        {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}},
        {"nodeSelector": {}},
        {"nodeSelector": None},
    ],
)
def test_absent_constraints_match_every_node(spec: dict[str, Any]) -> None:
    assert where(spec) == ALL


def test_node_selector_is_anded_with_the_terms() -> None:
    assert where({"nodeSelector": {EKS: "SPOT"}}) == {"spot-1"}
    assert where({"nodeSelector": {EKS: "SPOT", "rank": "7"}}) == {"spot-1"}
    assert where({"nodeSelector": {EKS: "SPOT", "rank": "8"}}) == set()
    # An empty value still needs the key: exact match, not "absent or empty".
    assert fits({"nodeSelector": {"k": ""}}, Node("n", {"k": ""}))
    assert not fits({"nodeSelector": {"k": ""}}, BARE)
    spec = {
        "nodeSelector": {EKS: "SPOT"},
        **required({"matchExpressions": [expr("rank", "Lt", "5")]}),
    }
    assert where(spec) == set()


def test_match_fields_read_the_node_name() -> None:
    def fields(*items: dict[str, Any]) -> dict[str, Any]:
        return required({"matchFields": list(items)})

    assert where(fields(expr("metadata.name", "In", "od-1"))) == {"od-1"}
    assert where(fields(expr("metadata.name", "NotIn", "od-1"))) == {"spot-1", "bare-1"}
    # Only metadata.name exists; any other field reads as the empty string.
    assert where(fields(expr("metadata.uid", "In", ""))) == ALL
    assert where(fields(expr("metadata.uid", "NotIn", "x"))) == ALL
    assert where(fields(expr("metadata.name", "In", "od-1", "spot-1"))) == set()  # one value
    assert where(fields(expr("metadata.name", "Exists"))) == set()  # In/NotIn only
    exists = [expr(EKS, "Exists")]
    both = required(
        {"matchExpressions": exists, "matchFields": [expr("metadata.name", "NotIn", "od-1")]}
    )
    assert where(both) == {"spot-1"}


TAINTED = Node("t", {}, (Taint("spot", "true", "NoSchedule"),))
EXECUTE = Node("e", {}, (Taint("spot", "true", "NoExecute"),))
PREFER = Node("p", {}, (Taint("spot", "true", "PreferNoSchedule"),))
EMPTY_VALUE = Node("v", {}, (Taint("spot", None, "NoSchedule"),))


@pytest.mark.parametrize(
    ("toleration", "nodes"),
    [
        ({"key": "spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}, "t"),
        ({"key": "spot", "value": "true"}, "te"),  # operator omitted: Equal; effect: all
        ({"key": "spot", "operator": "Exists"}, "tev"),
        ({"operator": "Exists"}, "tev"),  # empty key with Exists: everything
        ({"operator": "Exists", "effect": "NoExecute"}, "e"),
        ({"key": "spot", "value": "false"}, ""),
        ({"key": "spot"}, "v"),  # Equal with the empty value: the taint without a value
        ({"value": "true"}, "te"),  # API-invalid (empty key needs Exists); the scheduler
        ({}, "v"),  # matches any key, and a null or empty toleration is Equal ""
        (None, "v"),
        ({"key": "spot", "operator": "exists"}, ""),  # operators are case-sensitive
        ({"key": "spot", "operator": "Gt", "value": "0"}, ""),  # feature gate off
        ({"key": "other", "operator": "Exists"}, ""),
        ({"key": 5, "operator": "Exists"}, ""),  # mistyped: tolerates nothing
        ("Exists", ""),
    ],
)
def test_tolerations_as_tolerates_taint_says(toleration: Any, nodes: str) -> None:
    spec = {"tolerations": [toleration]}
    tolerated = {n.name for n in (TAINTED, EXECUTE, EMPTY_VALUE) if fits(spec, n)}
    assert tolerated == set(nodes)


def test_prefer_no_schedule_never_blocks_and_every_blocking_taint_must_be_tolerated() -> None:
    assert fits({}, PREFER)
    both = Node("b", {}, (Taint("a", "1", "NoSchedule"), Taint("b", "1", "NoExecute")))
    assert not fits({"tolerations": [{"key": "a", "operator": "Exists"}]}, both)
    assert fits(
        {"tolerations": [{"key": "a", "operator": "Exists"}, {"key": "b", "value": "1"}]}, both
    )


def test_comparison_tolerations_need_the_feature_gate() -> None:
    node = Node("n", {}, (Taint("tier", "5", "NoSchedule"),))
    spec = {"tolerations": [{"key": "tier", "operator": "Gt", "value": "3"}]}
    assert not fits(spec, node)
    assert fits(spec, node, toleration_comparisons=True)
    lower = {"tolerations": [{"key": "tier", "operator": "Lt", "value": "3"}]}
    assert not fits(lower, node, toleration_comparisons=True)
    leading_zero = {"tolerations": [{"key": "tier", "operator": "Gt", "value": "03"}]}
    assert not fits(leading_zero, node, toleration_comparisons=True)  # not a decimal integer


@pytest.mark.parametrize(
    ("text", "number"),
    [("7", 7), ("007", 7), ("+7", 7), ("-7", -7), ("9223372036854775807", 2**63 - 1),
     ("9223372036854775808", None), ("", None), ("1_000", None), (" 1", None), ("1\n", None),
     ("٣", None)],
)  # fmt: skip
def test_integers_parse_as_go_parse_int(text: str, number: int | None) -> None:
    assert parse_int64(text) == number


ANY_VALUE = Taint("pool", None, "NoSchedule")
CHEAP = Taint("pool", "cheap", "NoSchedule")


@pytest.mark.parametrize(
    ("toleration", "taint", "some", "every"),
    [
        ({"key": "pool", "operator": "Exists"}, ANY_VALUE, True, True),
        ({"key": "pool", "operator": "Equal", "value": "x"}, ANY_VALUE, True, False),
        ({"key": "pool", "value": "x", "effect": "NoSchedule"}, ANY_VALUE, True, False),
        ({"key": "pool", "value": "x", "effect": "NoExecute"}, ANY_VALUE, False, False),
        ({"key": "pool"}, ANY_VALUE, True, False),  # the empty value is a value too
        ({"key": "pool", "value": "not a value"}, ANY_VALUE, False, False),
        ({"operator": "Exists"}, ANY_VALUE, True, True),
        ({"key": "pool", "operator": "Gt", "value": "3"}, ANY_VALUE, True, False),
        ({"key": "pool", "operator": "Lt", "value": "0"}, ANY_VALUE, False, False),
        ({"key": "pool", "value": "cheap"}, CHEAP, True, True),
        ({"key": "pool", "value": "dear"}, CHEAP, False, False),
        ({"key": "pool", "operator": "Gt", "value": "3"}, CHEAP, False, False),
        ({"key": "other", "operator": "Exists"}, CHEAP, False, False),
        (None, ANY_VALUE, True, False),  # Equal "" with an empty key: API-invalid
        ([], ANY_VALUE, False, False),
    ],
)
def test_some_or_every_node_with_a_policy_taint(
    toleration: Any, taint: Taint, some: bool, every: bool
) -> None:
    assert tolerates_some(toleration, taint) is some
    assert tolerates_every(toleration, taint) is every


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=12,
)
_FIELDS = st.sampled_from(
    ["nodeSelector", "affinity", "tolerations", "nodeAffinity",
     "requiredDuringSchedulingIgnoredDuringExecution", "nodeSelectorTerms", "matchExpressions",
     "matchFields", "key", "operator", "values", "value", "effect"]
)  # fmt: skip
_ODD = st.recursive(
    _JSON,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_FIELDS, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(spec=_ODD)
def test_no_input_makes_the_model_raise(spec: Any) -> None:
    for node in (SPOT, ON_DEMAND, BARE, TAINTED):
        assert fits(spec, node) in (True, False)
    parse_placement(spec)


def test_policy_spot_classes_and_their_guaranteed_taints() -> None:
    aks = parse_policy_text("spotNodes: {presets: [aks]}")
    assert aks.every_spot_node_tainted
    assert aks.guaranteed_taints("kubernetes.azure.com/scalesetpriority", "spot") == (
        Taint("kubernetes.azure.com/scalesetpriority", "spot", "NoSchedule"),
    )
    distrusted = parse_policy_text("spotNodes: {presets: [aks], guaranteedPresetTaints: false}")
    assert not distrusted.every_spot_node_tainted
    assert distrusted.spot_taints == aks.spot_taints  # still tolerated and denied
    for preset in ("eks", "karpenter", "gke", "generic"):
        assert not parse_policy_text(f"spotNodes: {{presets: [{preset}]}}").every_spot_node_tainted
    own = parse_policy_text(
        "spotNodes:\n  presets: [eks]\n  labels:\n"
        "    - {key: pool, values: [cheap, cheaper], taints: [{key: pool, effect: NoSchedule}]}\n"
        "    - {key: eks.amazonaws.com/capacityType, values: [SPOT],"
        " taints: [{key: spot, value: 'true', effect: PreferNoSchedule}]}\n"
    )
    assert own.spot_values == {EKS: ("SPOT",), "pool": ("cheap", "cheaper")}
    assert own.guaranteed_taints("pool", "cheaper") == (Taint("pool", None, "NoSchedule"),)
    assert Taint("pool", None, "NoSchedule") in own.spot_taints
    assert Taint("spot", "true", "PreferNoSchedule") in own.spot_taints
    # A PreferNoSchedule taint keeps nobody off: EKS spot nodes are still reachable.
    assert not own.every_spot_node_tainted


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("spotNodes: {labels: [{key: pool, values: [a], taints: [{key: pool}]}]}",
         "spotNodes.labels[0].taints[0].effect: required field is missing"),
        ("spotNodes: {labels: [{key: pool, values: [a], taints: [{key: pool, effect: Never}]}]}",
         "spotNodes.labels[0].taints[0].effect: must be one of"),
        ("spotNodes: {guaranteedPresetTaints: 'yes'}",
         "spotNodes.guaranteedPresetTaints: must be a boolean"),
    ],
)  # fmt: skip
def test_the_schema_checks_guaranteed_taints(text: str, problem: str) -> None:
    with pytest.raises(PolicyError) as error:
        parse_policy_text(text)
    assert any(p.startswith(problem) for p in error.value.problems), error.value.problems
