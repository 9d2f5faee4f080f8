"""Runs every golden case in tests/cases (see tests/golden.py for the layout)."""

from __future__ import annotations

from pathlib import Path

import jsonpatch
import pytest

from policies.mutate import mutate_pod
from tests.golden import REGENERATE, all_cases, load_case, run_mutate, run_validate

CASES = all_cases()


@pytest.mark.parametrize("directory", CASES, ids=[p.name for p in CASES])
def test_golden_case(directory: Path) -> None:
    case = load_case(directory)
    if case.webhook == "validate":
        decision = run_validate(case)
        if REGENERATE:
            case.write("expected.yaml", decision)
        assert decision == case.expected("expected.yaml")
        return
    admitted, summary, patch = run_mutate(case)
    if REGENERATE:
        case.write("expected.yaml", admitted)
        case.write("expected-decision.yaml", summary)
        if case.has("expected-patch.json"):
            case.write("expected-patch.json", patch)
    assert admitted == case.expected("expected.yaml")
    assert summary == case.expected("expected-decision.yaml")
    if case.has("expected-patch.json"):
        assert patch == case.expected("expected-patch.json")
    # The patch, applied the way the API server does, must give exactly the admitted pod.
    assert jsonpatch.apply_patch(case.pod, patch) == admitted
    # Reinvocation on our own output (reinvocationPolicy: IfNeeded) changes nothing.
    again = mutate_pod(admitted, case.context, case.policy)
    if summary["mode"] == "enforce":
        assert again.changes == ()


def test_there_are_cases_of_both_webhooks() -> None:
    kinds = {load_case(directory).webhook for directory in CASES}
    assert kinds == {"mutate", "validate"}
