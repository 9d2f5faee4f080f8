"""The policy document: defaults, schema errors with paths, presets, modes."""

from __future__ import annotations

import pytest

from policies.loader import PolicyError, default_policy, parse_policy_text
from policies.model import Mode, Rule
from policies.presets import Taint


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as error:
        parse_policy_text(text)
    return error.value.problems


def test_empty_document_is_the_built_in_default() -> None:
    assert parse_policy_text("").revision == default_policy().revision
    assert parse_policy_text("mode: enforce\n").revision == default_policy().revision


def test_errors_name_the_field_by_path() -> None:
    text = """
spotNodes:
  taints:
    - {key: spot, value: "true", effect: NoSchedule}
    - {key: spot, value: "true", effect: Sometimes}
inject:
  nodeAffinity:
    preferSpotWeight: 500
  preStop:
    containres: [trainer]
rules:
  inject: {mode: loud}
"""
    assert problems(text) == [
        "inject.nodeAffinity.preferSpotWeight: must be at most 100",
        "inject.preStop.containres: unknown field",
        "rules.inject.mode: must be one of enforce, audit, off",
        "spotNodes.taints[1].effect: must be one of NoSchedule, PreferNoSchedule, NoExecute",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mode: [", "(document): not valid YAML"),
        ("- a\n- b\n", "(document): must be a mapping"),
        ("spotNodes: {presets: [azure]}", "spotNodes.presets[0]: must be one of aks, eks,"),
        ("spotNodes: {presets: [], labels: [], taints: []}", "spotNodes: name at least one"),
        (
            "spotNodes: {presets: [], labels: [{key: pool, values: [cheap]}]}",
            "spotNodes.noticeWindowSeconds: required when no preset",
        ),
        (
            "faultTolerant: {matchExpressions: [{key: a, operator: In}]}",
            "faultTolerant.matchExpressions[0].values: must not be empty for operator In",
        ),
        ("inject: {checkpoint: {mountPath: data}}", "inject.checkpoint.mountPath: must match ^/"),
        ("namespaces: {exclude: kube-system}", "namespaces.exclude: must be a list"),
    ],
)
def test_invalid_documents_are_refused(text: str, expected: str) -> None:
    assert any(p.startswith(expected) for p in problems(text)), problems(text)


def test_a_yaml_alias_bomb_is_refused_before_the_schema_walks_it() -> None:
    """Seven levels of nine aliases: 9**7 values from a few hundred bytes of text."""
    lines = ["x0: &l0 [x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 8):
        lines.append(f"x{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    lines.append("mode: *l7")
    assert problems("\n".join(lines)) == [
        "(document): expands to more than 100000 values (YAML aliases)"
    ]


def test_an_alias_inside_the_value_it_names_is_refused() -> None:
    assert problems("mode: &m [*m]") == [
        "(document): a YAML alias refers to the value that contains it"
    ]


@pytest.mark.parametrize("levels", [600, 5000])
def test_nesting_past_the_recursion_limit_is_refused_not_raised(levels: int) -> None:
    assert problems("mode: " + "[" * levels + "]" * levels) == ["(document): nested too deeply"]


def test_presets_combine_and_the_notice_window_is_the_shortest() -> None:
    policy = parse_policy_text("spotNodes: {presets: [eks, aks]}")
    assert {label.key for label in policy.spot_labels} == {
        "eks.amazonaws.com/capacityType",
        "kubernetes.azure.com/scalesetpriority",
    }
    assert policy.spot_taints == (
        Taint("kubernetes.azure.com/scalesetpriority", "spot", "NoSchedule"),
    )
    assert policy.notice_seconds == 30
    assert parse_policy_text("spotNodes: {presets: [eks]}").notice_seconds == 110
    assert parse_policy_text("spotNodes: {noticeWindowSeconds: 45}").notice_seconds == 45


def test_extra_labels_and_taints_add_to_presets() -> None:
    policy = parse_policy_text(
        "spotNodes:\n  presets: [eks]\n  labels: [{key: pool, values: [cheap]}]\n"
        "  taints: [{key: pool, effect: NoExecute}]\n"
    )
    assert policy.is_spot_label("pool", "cheap") and policy.is_spot_label(
        "eks.amazonaws.com/capacityType", "SPOT"
    )
    assert Taint("pool", None, "NoExecute") in policy.spot_taints


def test_global_mode_caps_every_rule() -> None:
    policy = parse_policy_text("mode: audit\nrules: {gracePeriodFitsNotice: {mode: enforce}}")
    assert all(policy.mode_of(rule) is Mode.AUDIT for rule in Rule)
    off = parse_policy_text("mode: off")
    assert all(off.mode_of(rule) is Mode.OFF for rule in Rule)
    mixed = parse_policy_text("rules: {keepOffSpot: {mode: off}}")
    assert mixed.mode_of(Rule.KEEP_OFF_SPOT) is Mode.OFF
    assert mixed.mode_of(Rule.INJECT) is Mode.ENFORCE


def test_revision_depends_on_content_only() -> None:
    a = parse_policy_text("mode: audit\nspotNodes: {presets: [gke]}")
    b = parse_policy_text("spotNodes:\n  presets: [gke]\nmode: audit\n")
    assert a.revision == b.revision != default_policy().revision


def test_namespace_include_and_exclude() -> None:
    policy = parse_policy_text("namespaces: {include: [ml, research], exclude: [research]}")
    assert policy.applies_to_namespace("ml")
    assert not policy.applies_to_namespace("research")
    assert not policy.applies_to_namespace("web")
    assert not default_policy().applies_to_namespace("kube-system")
    assert not default_policy().applies_to_namespace("spotguard-system")


def test_a_selector_replaces_the_default_one_whole() -> None:
    policy = parse_policy_text("faultTolerant: {matchLabels: {team: ml}}")
    assert policy.fault_tolerant.matches({"team": "ml"})
    assert not policy.fault_tolerant.matches({"spotguard.dev/fault-tolerant": "true"})
    assert problems("faultTolerant: {}") == ["faultTolerant: must not be empty"]
