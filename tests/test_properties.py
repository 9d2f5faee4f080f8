"""Property-based tests of the domain's entry point (the properties: tests/properties.py).

Deterministic in CI (``derandomize``): the same 20,000-odd generated cases every run, so
a failure reproduces. ``make fuzz`` runs the same properties on a million random ones.
"""

from __future__ import annotations

from tests.properties import check_binding, check_junk, check_pod, check_workload, run
from tests.strategies import batches, junk_batches


# Batches hold 4 to 8 reviews: the quotas below are met with room to spare.
def test_pods() -> None:
    assert run(batches("pod"), check_pod, examples=1_700) >= 9_000


def test_workloads_of_every_reviewed_kind() -> None:
    assert run(batches("workload"), check_workload, examples=900) >= 4_500


def test_bindings() -> None:
    assert run(batches("binding"), check_binding, examples=600) >= 3_000


def test_arbitrary_json_where_the_rules_read() -> None:
    assert run(junk_batches(), check_junk, examples=600) >= 3_000
