"""Runs every golden case in tests/cases (see tests/golden.py for the layout)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml

from policies.decisions import PodContext
from policies.loader import compile_policy, default_policy
from policies.mutate import mutate_pod
from policies.review import Phase, review
from policies.workloads import template_pod, templates_of, workload_of
from tests.golden import (
    REGENERATE,
    Case,
    all_cases,
    expected_form,
    load_case,
    run_mutate,
    run_response,
    run_validate,
)

CASES = all_cases()
RESPONSE = "expected-response.yaml"


@pytest.mark.parametrize("directory", CASES, ids=[p.name for p in CASES])
def test_golden_case(directory: Path) -> None:
    case = load_case(directory)
    response = expected_form(case, run_response(case))
    if REGENERATE:
        case.write(RESPONSE, response)
    assert response == case.expected(RESPONSE)
    if case.malformed:  # a 400: there is no decision to compare
        assert response.get("httpStatus") == 400 and not case.has("expected.yaml")
        return
    if case.webhook in ("validate", "binding"):
        decision = run_validate(case)
        if REGENERATE:
            case.write("expected.yaml", decision)
        assert decision == case.expected("expected.yaml")
        return
    admitted, summary, patch = run_mutate(case)
    if REGENERATE:
        case.write("expected.yaml", expected_form(case, admitted))
        case.write("expected-decision.yaml", summary)
        if case.has("expected-patch.json"):
            case.write("expected-patch.json", expected_form(case, patch))
    assert expected_form(case, admitted) == case.expected("expected.yaml")
    assert summary == case.expected("expected-decision.yaml")
    if case.has("expected-patch.json"):
        assert expected_form(case, patch) == case.expected("expected-patch.json")
    # The patch, applied the way the API server does, must give exactly the admitted object.
    assert jsonpatch.apply_patch(case.reviewed, patch) == admitted
    # Reinvocation on our own output (reinvocationPolicy: IfNeeded) changes nothing.
    again = review(replace(case.request, object=admitted), case.policy, case.facts, Phase.MUTATE)
    assert again.mutation is None or again.mutation.patched is None, case.name
    if case.subject == "object":
        _pods_from_mutated_templates_are_left_alone(case, admitted)


def _pods_from_mutated_templates_are_left_alone(case: Case, admitted: dict[str, Any]) -> None:
    """A pod created from a template spotguard already mutated is not mutated again."""
    workload = workload_of(admitted, case.policy)
    if workload is None or admitted is case.reviewed:
        return
    context = PodContext(case.request.namespace, "CREATE", case.facts)
    for template in templates_of(admitted, workload, case.policy):
        if template.entry.mutate:
            pod = template_pod(admitted, template, case.request.namespace)
            decision = mutate_pod(pod, context, case.policy, opted_in=template.opted_in)
            assert decision.changes == (), template.path


def test_there_are_cases_of_every_webhook_and_subject() -> None:
    cases = [load_case(directory) for directory in CASES]
    assert {case.webhook for case in cases} == {"mutate", "validate", "binding"}
    assert {case.subject for case in cases} == {"pod", "object", "binding"}


def test_every_reviewed_kind_has_a_denial_case() -> None:
    """Each kind the built-in policy reviews is denied by at least one case, with a
    default policy or one that only adds to it."""
    denied: set[tuple[str, str]] = set()
    for case in map(load_case, CASES):
        if case.subject != "object" or case.webhook != "validate":
            continue
        if run_response(case).get("allowed") is False:
            group = str(case.reviewed["apiVersion"]).rpartition("/")[0]
            denied.add((group, str(case.reviewed["kind"])))
    assert {(w.group, w.kind) for w in default_policy().workloads} <= denied


def test_a_policy_change_that_decides_nothing_differently_rewrites_no_expected_file() -> None:
    """Expected files hold no revision: a policy that differs only in what no case uses
    (one more excluded namespace) gives every mutate case the very same expected output."""
    for directory in CASES:
        case = load_case(directory)
        if case.webhook != "mutate" or case.malformed:
            continue
        document = (
            yaml.safe_load((directory / "policy.yaml").read_text())
            if case.has("policy.yaml")
            else {}
        )
        excluded = [*case.policy.exclude_namespaces, "no-case-uses-this-namespace"]
        document["namespaces"] = {**document.get("namespaces", {}), "exclude": excluded}
        changed = replace(case, policy=compile_policy(document))
        assert changed.policy.revision != case.policy.revision
        admitted, _, patch = run_mutate(changed)
        assert expected_form(changed, admitted) == case.expected("expected.yaml"), case.name
        assert expected_form(changed, run_response(changed)) == case.expected(RESPONSE)
        if case.has("expected-patch.json"):
            assert expected_form(changed, patch) == case.expected("expected-patch.json")
