"""Match conditions never skip a review that matters, under any generated policy.

The property tests' own strategies (tests/strategies: every preset combination, custom
spot labels and taints, every global and rule mode, operator presets, template mutation, a
CRD kind, trusted identities; pods, workloads and bindings built from the policy's own spot
labels and taints, from every kind of requester) draw batches of reviews under one
policy each. For every batch the policy's registrations are rendered, the API server's own
evaluator (webhook-match) decides each request, and spotguard's entry point
(:func:`policies.review.review`) judges the object the evaluator decoded:

- a review a webhook's conditions skip gets nothing from that webhook: no patch, no audited
  change, no violation of any mode, no warning; for pods also as spotguard's mutation
  leaves them (what the validating webhook sees);
- the one documented exception: a binding by one of the policy's trusted schedulers is
  skipped whatever it binds (README, "Bindings"); every other binding is sent;
- no condition ever errs, on arbitrary JSON where the rules read too.

``SPOTGUARD_PROOF_BATCHES`` sets the batches per kind of review (default 150, 4 to 8
reviews each).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from policies.model import Policy
from policies.review import Request, Requester
from tests.strategies import Batch, batches, junk_batches
from tests.test_match_conditions import (
    harvest,
    judged,
    mutated,
    mutation_skip_is_safe,
    validation_output,
)
from testsupport.webhook_match import Decision, Matcher, write_registrations
from testsupport.webhook_match import request as admission_request
from webhook.registration import (
    MUTATING_WEBHOOK,
    VALIDATING_WEBHOOK,
    WORKLOADS_WEBHOOK,
    Endpoint,
    render,
)

pytestmark = [
    pytest.mark.toolchain,
    pytest.mark.properties,
    pytest.mark.skipif(
        shutil.which("go") is None, reason="needs Go to build the API server's evaluator"
    ),
]

BATCHES = int(os.environ.get("SPOTGUARD_PROOF_BATCHES", "150"))
SOMEONE = Requester("alice", frozenset({"system:authenticated"}))


class Registrations:
    """Each drawn policy's registrations, in a file the evaluator compiles once."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._files: dict[str, Path] = {}

    def of(self, policy: Policy) -> Path:
        if policy.revision not in self._files:
            documents = render(policy, Endpoint(url="https://127.0.0.1:9/"))
            path = self._directory / f"{policy.revision}.yaml"
            self._files[policy.revision] = write_registrations(documents, path)
        return self._files[policy.revision]


@pytest.fixture(scope="module")
def evaluator() -> Iterator[tuple[Matcher, Registrations]]:
    with tempfile.TemporaryDirectory(prefix="registrations-") as tmp, Matcher(echo=True) as m:
        yield m, Registrations(Path(tmp))


def wire(request: Request, policy: Policy, registrations: Path) -> dict[str, Any]:
    """The AdmissionRequest the API server would evaluate the conditions on."""
    group, version, kind = request.kind
    if request.sub_resource == "binding" or (kind == "Pod" and not group):
        resource = "pods"
    else:
        workload = policy.reviewed_kind(group, version, kind)
        resource = workload.resource if workload else kind.lower() + "s"
    requester = request.requester
    return admission_request(
        request.object,
        group=group,
        version=version,
        kind=kind,
        resource=resource,
        sub_resource=request.sub_resource,
        operation=str(request.operation),
        old=request.old_object,
        namespace=request.namespace,
        username=requester.username if requester else "",
        groups=sorted(requester.groups) if requester else (),
        name=request.name,
        registrations=registrations,
    )


def _webhook(request: Request) -> str:
    """The webhook that validates what ``request`` is about."""
    group, _, kind = request.kind
    pod_or_binding = not group and kind in ("Pod", "Binding")
    return VALIDATING_WEBHOOK if pod_or_binding else WORKLOADS_WEBHOOK


def _check_batches(
    evaluator: tuple[Matcher, Registrations], drawn: list[Batch], counts: dict[str, int]
) -> None:
    matcher, registrations = evaluator
    for batch in drawn:
        path = registrations.of(batch.policy)
        facts = batch.cluster.facts()
        requests = list(batch.requests)
        # The strategies bind as the scheduler; the same bindings by someone else too.
        requests += [
            replace(r, requester=SOMEONE) for r in batch.requests if r.sub_resource == "binding"
        ]
        sent = [wire(request, batch.policy, path) for request in requests]
        second: list[dict[str, Any]] = []
        for original, wired, decision in zip(requests, sent, matcher.decide(sent), strict=True):
            assert not decision.errors, f"a condition failed (a bypass): {decision.errors}"
            if decision.decode_error:  # the API server would refuse it before admission
                counts["refused by the API server"] = counts.get("refused by the API server", 0) + 1
                continue
            asked = judged(wired, decision) if decision.object is not None else original
            label = _check(batch.policy, original, asked, decision, facts)
            counts[label] = counts.get(label, 0) + 1
            after = mutated(asked, batch.policy, facts) if asked.kind.kind == "Pod" else None
            if after is not None:
                second.append(wire(_with_object(asked, after), batch.policy, path))
        for wired, decision in zip(second, matcher.decide(second), strict=True):
            assert not decision.errors, decision.errors
            if decision.decode_error or decision.object is None:
                continue
            counts["mutated pods"] = counts.get("mutated pods", 0) + 1
            if not decision.called(VALIDATING_WEBHOOK):
                asked = judged(wired, decision)
                assert not validation_output(asked, batch.policy, facts), asked


def _kind(request: Request) -> str:
    return (
        "bindings"
        if request.sub_resource == "binding"
        else ("pods" if request.kind.kind == "Pod" and not request.kind.group else "workloads")
    )


def _with_object(request: Request, obj: dict[str, Any]) -> Request:
    return Request(
        request.kind, request.operation, request.namespace, obj, request.old_object,
        request.sub_resource, request.name, request.requester,
    )  # fmt: skip


def _check(
    policy: Policy, original: Request, asked: Request, decision: Decision, facts: Any
) -> str:
    """Assert what a skip may skip; the kind of review checked, for the counts."""
    webhook = _webhook(original)
    if original.sub_resource == "binding":
        trusted = original.requester is not None and (
            original.requester.username in policy.trusted_schedulers
        )
        if trusted:  # skipped by design, whatever it binds
            assert not decision.called(webhook), asked
            return "bindings by a trusted scheduler"
        if not decision.called(webhook):
            reason = decision.reasons.get(webhook)
            assert not validation_output(asked, policy, facts), (
                f"binding skipped ({reason}): {asked}"
            )
        return "bindings"
    if not decision.called(MUTATING_WEBHOOK):
        safe = mutation_skip_is_safe(asked, decision, policy, facts, webhook)
        assert safe, f"mutation skipped: {asked}"
    if not decision.called(webhook):
        assert not validation_output(asked, policy, facts), f"validation skipped: {asked}"
    return _kind(original)


@pytest.mark.parametrize("kind", ["pod", "workload", "binding"])
def test_skipped_reviews_need_nothing_under_any_policy(
    evaluator: tuple[Matcher, Registrations], kind: str
) -> None:
    counts: dict[str, int] = {}
    _check_batches(evaluator, harvest(batches(kind), BATCHES, batch=1), counts)
    print(f"\n{kind} batches: checked {counts}")
    assert sum(counts.values()) >= BATCHES * 4


def test_conditions_never_err_on_junk(evaluator: tuple[Matcher, Registrations]) -> None:
    counts: dict[str, int] = {}
    _check_batches(evaluator, harvest(junk_batches(), BATCHES, batch=1), counts)
    print(f"\njunk batches: checked {counts}")
    assert sum(counts.values()) >= BATCHES * 4
