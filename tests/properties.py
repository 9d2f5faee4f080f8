"""The properties every review must have, as plain functions over one generated scenario.

``tests/test_properties.py`` runs them in CI (deterministic, about 20,000 cases) and
``python -m tests.fuzz`` runs them at scale with random seeds. Each ``check_*`` raises
AssertionError with the scenario's story when a property fails, and returns nothing.

What is checked, for every pod, workload and binding the strategies generate:

- no input crashes a verdict: the review returns, or refuses what it cannot read
  (``Malformed``) and only that; the input is never modified;
- the patch applies (as the API server applies it) and gives exactly the patched object;
  mutating the patched object again changes nothing (reinvocation);
- mutation never makes validation worse: every violation in enforce mode of the object as
  mutated is one the object as received already had, at a field its author wrote. So the
  mutated pod passes validation exactly when its author wrote nothing mutation cannot fix:
  a spot toleration or selector on a pod that must stay off spot, a ``spec.nodeName`` of a
  spot (or, with ``unknownNodes: deny``, unknown) node, a grace period longer than the
  notice window, a checkpoint that does not fit, a steering annotation that names nothing;
- a pod that must stay off spot (not fault-tolerant, or a poor candidate, its rule and
  ``keep-off-spot`` in enforce mode) and that validation admits cannot be placed on any
  node the policy counts as spot (:func:`policies.placement.can_reach_spot`, the model
  checked against kube-scheduler);
- a fault-tolerant pod that may use spot (no poor-candidate rule in enforce mode keeps it
  off) tolerates every spot taint when the policy injects tolerations, and has a preStop
  hook in each container the policy (or a valid annotation) picks when it injects hooks;
- a binding of a pod that is not fault-tolerant to a spot node is denied when both rules
  that say so are in enforce mode;
- arbitrary JSON where the rules read is a verdict or ``Malformed``, nothing else.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import jsonpatch
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from policies.annotations import checkpoint_containers, pre_stop_command
from policies.candidates import is_fault_tolerant, poor_candidate_reasons
from policies.decisions import PodContext
from policies.model import Mode, Policy, Rule
from policies.paths import value_at
from policies.placement import can_reach_spot
from policies.pods import annotations_of, regular_containers, spec_of, tolerates
from policies.review import Malformed, Operation, Phase, review
from policies.verdict import Subject, Verdict
from tests.strategies import Batch, Scenario

#: CI's settings: the same cases every run, no example database, no per-example deadline
#: (a shared machine's timing is noise), health checks that only speak of generation speed.
CI = settings(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def run(
    strategy: st.SearchStrategy[Batch],
    check: Callable[[Scenario], None],
    examples: int,
    base: settings = CI,
    *,
    counter: list[int] | None = None,
    seed: int | None = None,
) -> int:
    """Run ``check`` on every scenario of ``examples`` batches; the number of cases run.

    ``counter[0]`` is kept up to date as cases run, so a caller still knows how many ran
    when a property fails (the failure propagates, after hypothesis shrinks it). ``seed``
    fixes hypothesis' random choices, to replay a fuzz run's failing chunk.
    """
    cases = counter if counter is not None else [0]
    start = cases[0]

    @settings(base, max_examples=examples)
    @given(strategy)
    def each(batch: Batch) -> None:
        for scenario in batch.scenarios():
            cases[0] += 1
            check(scenario)

    (each if seed is None else hypothesis_seed(seed)(each))()
    return cases[0] - start


JSON = dict[str, Any]


def _story(scenario: Scenario, verdict: Verdict | None = None) -> str:
    request = scenario.request
    lines = [
        f"operation {request.operation} of {request.kind} by {request.requester}",
        f"object: {request.object}",
        f"policy revision {scenario.policy.revision}: mode {scenario.policy.mode}, "
        f"labels {scenario.policy.spot_labels}, taints {scenario.policy.spot_taints}",
    ]
    if verdict is not None:
        lines.append(f"verdict: {verdict}")
    return "\n".join(lines)


def reviewed(scenario: Scenario, phases: Phase = Phase.BOTH) -> Verdict:
    """The verdict, checking the input is left as it was."""
    before = copy.deepcopy(scenario.request.object)
    verdict = review(scenario.request, scenario.policy, scenario.facts, phases)
    assert scenario.request.object == before, "the review modified its input"
    return verdict


def check_pod(scenario: Scenario) -> None:
    verdict = reviewed(scenario)
    _check_patch(scenario, verdict)
    _check_validation_not_worse(scenario, verdict)
    _check_fault_tolerant_pod(scenario, verdict)
    _check_kept_off_spot(scenario, verdict)


def check_workload(scenario: Scenario) -> None:
    verdict = reviewed(scenario)
    _check_patch(scenario, verdict)
    _check_validation_not_worse(scenario, verdict)


def check_binding(scenario: Scenario) -> None:
    verdict = reviewed(scenario, Phase.VALIDATE)
    policy, request = scenario.policy, scenario.request
    stored = scenario.cluster.pods.get(f"{request.namespace}/{request.name}")
    assert request.object is not None
    node = str(request.object["target"]["name"])
    labels = scenario.cluster.nodes.get(node)
    must_deny = (
        stored is not None
        and not verdict.exemption
        and labels is not None
        and policy.spot_label_of(labels) is not None
        and not policy.opts_in((stored.get("metadata") or {}).get("labels") or {})
        and policy.mode_of(Rule.SPOT_NODE_BINDING) is Mode.ENFORCE
        and policy.mode_of(Rule.SPOT_REQUIRES_FAULT_TOLERANCE) is Mode.ENFORCE
        and policy.applies_to_namespace(request.namespace)
    )
    if must_deny:
        assert not verdict.allowed, "a pod that is not fault-tolerant was bound to spot\n" + (
            _story(scenario, verdict)
        )


def check_junk(scenario: Scenario) -> None:
    try:
        reviewed(scenario)
    except Malformed as error:
        assert error.problems, "Malformed must name what is wrong"


def _check_patch(scenario: Scenario, verdict: Verdict) -> None:
    mutation = verdict.mutation
    if mutation is None or mutation.patched is None:
        return
    original = scenario.request.object
    patch = mutation.patch()
    assert patch, "a patched verdict must patch something\n" + _story(scenario, verdict)
    applied = jsonpatch.apply_patch(original, patch)
    assert applied == mutation.patched, "the patch does not give the patched object\n" + (
        _story(scenario, verdict)
    )
    again = review(
        replace(scenario.request, object=mutation.patched),
        scenario.policy,
        scenario.facts,
        Phase.MUTATE,
    )
    assert again.mutation is None or again.mutation.patched is None, (
        "mutating the patched object changed it again\n" + _story(scenario, again)
    )


_STEP = re.compile(r"([^.\[\]]+)|\[([^\]]*)\]")


def _authored(original: JSON, field: str) -> bool:
    """Whether ``field`` (as a violation names it: ``spec.tolerations[0]``,
    ``metadata.annotations[spotguard.dev/checkpoint-size]``) exists in the object received."""
    steps: list[str | int] = []
    for name, bracket in _STEP.findall(field):
        if name:
            steps.append(name)
        else:
            steps.append(int(bracket) if bracket.isdigit() else bracket)
    return value_at(original, tuple(steps)) is not None


def _check_validation_not_worse(scenario: Scenario, verdict: Verdict) -> None:
    """Enforce-mode violations after mutation are ones the author's own fields cause."""
    if verdict.mutation is None or verdict.mutation.patched is None:
        return
    original = scenario.request.object
    assert original is not None
    before = review(scenario.request, scenario.policy, scenario.facts, Phase.VALIDATE)
    had = {(v.rule, v.field) for v in before.denials}
    for violation in verdict.denials:
        assert (violation.rule, violation.field) in had, (
            f"mutation introduced a denial: {violation.message()}\n" + _story(scenario, verdict)
        )
        assert _authored(original, violation.field), (
            f"a denial names a field the author did not write: {violation.field}\n"
            + _story(scenario, verdict)
        )


def _goes_to_spot(pod: JSON, scenario: Scenario) -> bool:
    """Fault-tolerant and not kept off spot by a poor-candidate rule in enforce mode."""
    policy = scenario.policy
    if not is_fault_tolerant(pod, policy):
        return False
    context = PodContext(scenario.request.namespace, "CREATE", scenario.facts)
    return not any(r.mode is Mode.ENFORCE for r in poor_candidate_reasons(pod, context, policy))


def _check_kept_off_spot(scenario: Scenario, verdict: Verdict) -> None:
    policy, request = scenario.policy, scenario.request
    pod = request.object
    if verdict.mutation is None or pod is None:
        return  # exempt: nothing applies
    if (
        verdict.subject is not Subject.POD
        or verdict.exemption
        or request.operation is not Operation.CREATE
        or spec_of(pod).get("nodeName")
        or not verdict.allowed
        or policy.mode_of(Rule.KEEP_OFF_SPOT) is not Mode.ENFORCE
        or any(w.endswith("nothing injected") for w in verdict.mutation.warnings)
    ):
        return
    if is_fault_tolerant(pod, policy):
        context = PodContext(request.namespace, "CREATE", scenario.facts)
        reasons = poor_candidate_reasons(pod, context, policy)
        if not any(reason.mode is Mode.ENFORCE for reason in reasons):
            return  # it may use spot
    elif policy.mode_of(Rule.SPOT_REQUIRES_FAULT_TOLERANCE) is not Mode.ENFORCE:
        return  # the policy lets pods that are not fault-tolerant onto spot
    result = verdict.mutation.patched if verdict.mutation.patched is not None else pod
    assert not can_reach_spot(spec_of(result), policy), (
        "a pod that must stay off spot, admitted, can still reach a spot node\n"
        + _story(scenario, verdict)
    )


def _check_fault_tolerant_pod(scenario: Scenario, verdict: Verdict) -> None:
    policy, request = scenario.policy, scenario.request
    pod = request.object
    assert pod is not None
    if (
        verdict.subject is not Subject.POD
        or verdict.exemption
        or request.operation is not Operation.CREATE
        or spec_of(pod).get("nodeName")
        or policy.mode_of(Rule.INJECT) is not Mode.ENFORCE
        or not _goes_to_spot(pod, scenario)
    ):
        return
    assert verdict.mutation is not None
    result = verdict.mutation.patched if verdict.mutation.patched is not None else pod
    spec = spec_of(result)
    if policy.inject.tolerations:
        for taint in policy.spot_taints:
            assert any(tolerates(t, taint) for t in spec.get("tolerations") or []), (
                f"a fault-tolerant pod does not tolerate {taint}\n" + _story(scenario, verdict)
            )
    if policy.inject.pre_stop.enabled:
        _check_hooks(scenario, pod, result, policy, verdict)


def _check_hooks(
    scenario: Scenario, pod: JSON, result: JSON, policy: Policy, verdict: Verdict
) -> None:
    names = [str(c.get("name")) for c in regular_containers(spec_of(pod))]
    annotations = annotations_of(pod)
    listed, _ = checkpoint_containers(annotations.get("spotguard.dev/checkpoint-containers"), names)
    chosen = listed if listed is not None else policy.inject.pre_stop.containers
    command, _ = pre_stop_command(annotations.get("spotguard.dev/prestop-command"))
    wanted = list(command if command is not None else policy.inject.pre_stop.command)
    before = {str(c.get("name")): c for c in regular_containers(spec_of(pod))}
    for container in regular_containers(spec_of(result)):
        name = str(container.get("name"))
        if chosen and name not in chosen:
            continue
        hook = (container.get("lifecycle") or {}).get("preStop")
        own = ((before.get(name) or {}).get("lifecycle") or {}).get("preStop")
        if own and not policy.inject.pre_stop.replace_existing:
            assert hook == own, "a container's own hook was replaced\n" + _story(scenario, verdict)
        else:
            assert hook == {"exec": {"command": wanted}}, (
                f"container {name} has no checkpoint hook\n" + _story(scenario, verdict)
            )
