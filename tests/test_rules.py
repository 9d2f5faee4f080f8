"""Pure rule helpers: selectors and Kubernetes' toleration-matches-taint semantics."""

from __future__ import annotations

from typing import Any

import pytest

from devtools.reviews import training_pod
from policies.decisions import PodContext
from policies.loader import default_policy, parse_policy_text
from policies.model import LabelSelector, SelectorRequirement
from policies.mutate import mutate_pod
from policies.pods import tolerates
from policies.presets import Taint

SPOT = Taint("spot", "true", "NoSchedule")


@pytest.mark.parametrize(
    ("toleration", "expected"),
    [
        ({"key": "spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}, True),
        ({"key": "spot", "value": "true"}, True),  # operator defaults to Equal, any effect
        ({"key": "spot", "operator": "Exists"}, True),
        ({"operator": "Exists"}, True),  # tolerates everything
        ({"operator": "Exists", "effect": "NoExecute"}, False),
        ({"key": "spot", "operator": "Equal", "value": "false"}, False),
        ({"key": "spot", "operator": "Equal", "value": "true", "effect": "NoExecute"}, False),
        ({"key": "other", "operator": "Exists"}, False),
    ],
)
def test_toleration_matching(toleration: dict[str, Any], expected: bool) -> None:
    assert tolerates(toleration, SPOT) is expected


def test_a_taint_with_any_value_needs_exists() -> None:
    any_value = Taint("pool", None, "NoSchedule")
    assert tolerates({"key": "pool", "operator": "Exists"}, any_value)
    assert not tolerates({"key": "pool", "operator": "Equal", "value": "x"}, any_value)


def test_label_selector_operators() -> None:
    selector = LabelSelector(
        match_labels=(("team", "ml"),),
        match_expressions=(
            SelectorRequirement("tier", "In", frozenset({"train", "tune"})),
            SelectorRequirement("legacy", "DoesNotExist", frozenset()),
            SelectorRequirement("env", "NotIn", frozenset({"prod"})),
        ),
    )
    assert selector.matches({"team": "ml", "tier": "train"})
    assert not selector.matches({"team": "ml", "tier": "serve"})
    assert not selector.matches({"team": "ml", "tier": "train", "legacy": "1"})
    assert not selector.matches({"team": "ml", "tier": "train", "env": "prod"})
    assert not selector.matches({"tier": "train"})


def test_custom_selector_opts_pods_in() -> None:
    policy = parse_policy_text(
        "faultTolerant:\n  matchLabels: {}\n"
        "  matchExpressions: [{key: training.kubeflow.org/job-name, operator: Exists}]\n"
    )
    pod = training_pod()
    pod["metadata"]["labels"] = {"training.kubeflow.org/job-name": "bert"}
    assert mutate_pod(pod, PodContext("ml"), policy).rule is not None
    decision = mutate_pod(pod, PodContext("ml"), policy)
    assert decision.rule and decision.rule.value == "inject"


def test_mutation_never_changes_its_input() -> None:
    pod = training_pod()
    before = repr(pod)
    decision = mutate_pod(pod, PodContext("ml"), default_policy())
    assert decision.changes
    assert repr(pod) == before


def test_pods_bound_to_a_node_or_updated_are_not_mutated() -> None:
    pod = training_pod()
    pod["spec"]["nodeName"] = "node-1"
    assert mutate_pod(pod, PodContext("ml"), default_policy()).changes == ()
    assert mutate_pod(training_pod(), PodContext("ml", "UPDATE"), default_policy()).changes == ()


def test_grace_period_set_only_when_unchosen() -> None:
    pod = training_pod()
    pod["spec"]["terminationGracePeriodSeconds"] = 12
    mutated = mutate_pod(pod, PodContext("ml"), default_policy()).mutated
    assert mutated is not None and mutated["spec"]["terminationGracePeriodSeconds"] == 12
    del pod["spec"]["terminationGracePeriodSeconds"]
    mutated = mutate_pod(pod, PodContext("ml"), default_policy()).mutated
    assert mutated is not None and mutated["spec"]["terminationGracePeriodSeconds"] == 15
