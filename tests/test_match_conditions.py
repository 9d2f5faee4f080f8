"""The registrations' match conditions never skip a review that matters.

The API server's own evaluator decides (``webhook-match``, built from the pinned
k8s.io/apiserver: namespace and object selectors, rules, matchConditions compiled and run
as kube-apiserver does); spotguard's rules judge the same object (as the API server
decoded and defaulted it). For every generated pod, pod update and workload, under
policies that cover every preset, mode and opt-in mechanism:

- a review the mutating webhook's conditions skip gets no patch and no warning from the
  mutating rules;
- a review the validating webhook's conditions skip gets no violation (of any mode) and
  no warning from the validating rules, for the pod as created and as spotguard's
  mutation leaves it (the validating webhook sees the mutated pod);
- no condition ever raises an error (with failurePolicy Ignore an error is a skip), even
  on custom resources holding arbitrary JSON.

The objects are drawn by Hypothesis once per run (deterministically) and every one is
checked under every policy. ``SPOTGUARD_PROOF_CASES`` sets how many pods are drawn
(default 1,200; half as many pod updates and workloads).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.decisions import ClusterFacts
from policies.loader import default_policy, parse_policy_text
from policies.model import Policy
from policies.pods import JSONObject
from policies.relevance import Relevance, missing_coverage, relevance_of
from policies.review import (
    GroupVersionKind,
    Malformed,
    Operation,
    Phase,
    Request,
    requester_from_user_info,
    review,
)
from policies.verdict import MutationVerdict
from tests import relevance_strategies as gen
from testsupport.webhook_match import Decision, Matcher, compile_errors, decide
from testsupport.webhook_match import request as admission_request
from webhook.registration import (
    MUTATING_WEBHOOK,
    VALIDATING_WEBHOOK,
    WORKLOADS_WEBHOOK,
    Endpoint,
    render,
    render_relevance,
)

pytestmark = [
    pytest.mark.toolchain,
    pytest.mark.properties,
    pytest.mark.skipif(
        shutil.which("go") is None, reason="needs Go to build the API server's evaluator"
    ),
]

#: Generated objects per kind of review (pods, updates, workloads), checked under every
#: policy below.
CORPUS = int(os.environ.get("SPOTGUARD_PROOF_CASES", "1200"))
BATCH = 40
NAMESPACE = "team"
FACTS = ClusterFacts.from_data(
    {
        "spot-1": {"eks.amazonaws.com/capacityType": "SPOT", "pool": "cheap"},
        "od-1": {"eks.amazonaws.com/capacityType": "ON_DEMAND"},
    },
    [f"{NAMESPACE}/local-data"],
)

#: Every preset, both modes, rules off, custom labels and taints, every opt-in mechanism.
POLICIES = {
    "default": "",
    "audit": "mode: audit\n",
    "eks": "spotNodes: {presets: [eks, karpenter]}\n",
    "aks": "spotNodes: {presets: [aks]}\n",
    "gke-custom": (
        "spotNodes: {presets: [gke], labels: [{key: pool, values: [cheap]}],"
        " taints: [{key: pool, effect: NoExecute}]}\n"
    ),
    "operators": "faultTolerant: {operatorPresets: [kubeflow, jobset, ray, volcano]}\n",
    "selector": (
        "faultTolerant: {matchExpressions: [{key: team, operator: In, values: [ml]},"
        " {key: tier, operator: NotIn, values: [gpu]}, {key: app, operator: DoesNotExist}]}\n"
    ),
    "rules-off": (
        "rules: {spotRequiresFaultTolerance: {mode: off}, keepOffSpot: {mode: off},"
        " latencyCritical: {mode: off}, gracePeriodFitsNotice: {mode: off}}\n"
    ),
    "templates": "workloads: {mutateTemplates: true}\nnamespaces: {include: [team, ml]}\n",
}


def harvest(strategy: st.SearchStrategy[Any], count: int, batch: int = BATCH) -> list[Any]:
    """``count`` values drawn by Hypothesis (deterministically, ``batch`` per example), to
    check under every policy: the evaluator and the rules are fast, drawing is what costs."""
    drawn: list[Any] = []

    @settings(
        max_examples=max(1, count // batch),
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(strategy, min_size=batch, max_size=batch))
    def draw(batch: list[Any]) -> None:
        drawn.extend(batch)

    draw()
    return drawn


@dataclass
class Proof:
    """One policy, its registrations running in the evaluator, and what was checked."""

    policy: Policy
    matcher: Matcher
    checked: dict[str, int] = field(default_factory=dict)

    def count(self, what: str) -> None:
        self.checked[what] = self.checked.get(what, 0) + 1

    def decide(self, requests: list[dict[str, Any]]) -> list[Decision]:
        return self.matcher.decide(requests)


@pytest.fixture(scope="module", params=sorted(POLICIES))
def proof(request: pytest.FixtureRequest) -> Iterator[Proof]:
    policy = parse_policy_text(POLICIES[request.param])
    registrations = render(policy, Endpoint(url="https://127.0.0.1:9/"))
    with Matcher(registrations, echo=True) as matcher:
        checked = Proof(policy, matcher)
        yield checked
    print(f"\n{request.param}: checked {checked.checked}")


@pytest.fixture(scope="module")
def pods() -> list[dict[str, Any]]:
    return harvest(gen.pods, CORPUS)


def _update_of(old: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """``old`` with labels, annotations, or tolerations (only added) changed."""
    new = {**old, "metadata": {**old["metadata"]}, "spec": {**old["spec"]}}
    if "labels" in change:
        new["metadata"]["labels"] = change["labels"]
    if "annotations" in change:
        new["metadata"]["annotations"] = change["annotations"]
    if "tolerations" in change:
        added = change["tolerations"]
        new["spec"]["tolerations"] = [*(old["spec"].get("tolerations") or []), *added]
    return new


_changes = gen.record(
    {},
    {
        "labels": gen.pod_labels,
        "annotations": gen.pod_annotations,
        "tolerations": st.lists(gen.toleration, min_size=1, max_size=2),
    },
)


@pytest.fixture(scope="module")
def updates() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    pairs = harvest(st.tuples(gen.pods, _changes), CORPUS // 2)
    return [(old, _update_of(old, change)) for old, change in pairs]


WORKLOADS = {
    "Deployment": (gen.deployments, "apps", "v1", "deployments"),
    "Job": (gen.jobs, "batch", "v1", "jobs"),
    "PyTorchJob": (gen.pytorchjobs, "kubeflow.org", "v1", "pytorchjobs"),
    "JobSet": (gen.jobsets, "jobset.x-k8s.io", "v1alpha2", "jobsets"),
}
#: (kind, object, operation, the other object an UPDATE starts from).
_workloads = st.sampled_from(sorted(WORKLOADS)).flatmap(
    lambda kind: st.tuples(
        st.just(kind),
        WORKLOADS[kind][0],
        st.sampled_from(("create", "update-unchanged", "update")),
        WORKLOADS[kind][0],
    )
)


@pytest.fixture(scope="module")
def workloads() -> list[tuple[str, Any, str, Any]]:
    return harvest(_workloads, CORPUS // 2)


def _no_errors(decision: Decision) -> None:
    assert not decision.errors, f"a match condition failed (a bypass): {decision.errors}"


def judged(sent: dict[str, Any], decision: Decision) -> Request:
    """The request as spotguard's entry point gets it: the object as the API server
    decoded and defaulted it (what the conditions saw)."""
    kind = sent["kind"]
    return Request(
        GroupVersionKind(kind["group"], kind["version"], kind["kind"]),
        Operation(sent["operation"]),
        sent["namespace"],
        decision.object,
        decision.old_object,
        sent["subResource"],
        sent["name"],
        requester_from_user_info(sent["userInfo"]),
    )


def mutation_output(
    request: Request, policy: Policy, facts: ClusterFacts = FACTS
) -> tuple[Any, ...]:
    """Everything the mutating webhook would answer beyond "allowed": a patch, what audit
    mode would change, warnings. A malformed request is answered 400, which failurePolicy
    Ignore treats as a skip."""
    try:
        return _answered(review(request, policy, facts, Phase.MUTATE).mutation)
    except Malformed:
        return ()


def _answered(mutation: MutationVerdict | None) -> tuple[Any, ...]:
    if mutation is None:
        return ()
    patched = (mutation.patched,) if mutation.patched is not None else ()
    return (*patched, *mutation.changes, *mutation.audited, *mutation.warnings)


def validation_output(
    request: Request, policy: Policy, facts: ClusterFacts = FACTS
) -> tuple[Any, ...]:
    """Every violation (of any mode) and warning the validating webhook would answer."""
    try:
        verdict = review(request, policy, facts, Phase.VALIDATE)
    except Malformed:
        return ()
    return (*verdict.violations, *verdict.validation_warnings)


def mutation_skip_is_safe(
    request: Request,
    decision: Decision,
    policy: Policy,
    facts: ClusterFacts = FACTS,
    validating: str = VALIDATING_WEBHOOK,
) -> bool:
    """A skipped mutation loses nothing when it would have answered nothing, or when the
    validating webhook is called and judges the object, unpatched, at least as strongly:
    it denies what the mutation would have patched, and reports (a violation of any mode)
    what it would only have warned about (keep-off-spot under an enforced or audited
    spot-requires-fault-tolerance: relevance.keep_off_spot_is_moot)."""
    try:
        mutation = review(request, policy, facts, Phase.MUTATE).mutation
        if not _answered(mutation):
            return True
        validation = review(request, policy, facts, Phase.VALIDATE).validation
    except Malformed:
        return True  # answered 400, which failurePolicy Ignore treats as a skip
    if not decision.called(validating) or validation is None:
        return False
    if mutation is not None and mutation.patched is not None:
        return bool(validation.denials)
    return bool(validation.violations)


def mutated(request: Request, policy: Policy, facts: ClusterFacts = FACTS) -> JSONObject | None:
    """The object as spotguard's mutation leaves it, when it patches it."""
    try:
        verdict = review(request, policy, facts, Phase.MUTATE)
    except Malformed:
        return None
    return verdict.mutation.patched if verdict.mutation else None


def test_skipped_pod_creates_need_nothing(proof: Proof, pods: list[dict[str, Any]]) -> None:
    sent = [admission_request(p, namespace=NAMESPACE) for p in pods]
    patched: list[dict[str, Any]] = []
    for request, decision in zip(sent, proof.decide(sent), strict=True):
        _no_errors(decision)
        if decision.decode_error or decision.object is None:
            continue
        proof.count("pod creates")
        asked = judged(request, decision)
        if not decision.called(MUTATING_WEBHOOK):
            assert mutation_skip_is_safe(asked, decision, proof.policy), (
                f"mutation skipped: {asked}"
            )
        if not decision.called(VALIDATING_WEBHOOK):
            assert not validation_output(asked, proof.policy), f"validation skipped: {asked}"
        after = mutated(asked, proof.policy)
        if after is not None:
            patched.append(after)
    # What the validating webhook sees after spotguard's own mutation.
    sent = [admission_request(p, namespace=NAMESPACE) for p in patched]
    for request, decision in zip(sent, proof.decide(sent), strict=True):
        _no_errors(decision)
        if decision.decode_error or decision.object is None:
            continue
        proof.count("mutated pods")
        if not decision.called(VALIDATING_WEBHOOK):
            asked = judged(request, decision)
            assert not validation_output(asked, proof.policy), f"validation skipped: {asked}"
    assert proof.checked["pod creates"] >= len(pods) * 0.9


def test_skipped_pod_updates_need_nothing(
    proof: Proof, updates: list[tuple[dict[str, Any], dict[str, Any]]]
) -> None:
    sent = [
        admission_request(new, old=old, operation="UPDATE", namespace=NAMESPACE)
        for old, new in updates
    ]
    for request, decision in zip(sent, proof.decide(sent), strict=True):
        _no_errors(decision)
        if decision.decode_error or decision.object is None:
            continue
        proof.count("pod updates")
        if not decision.called(VALIDATING_WEBHOOK):
            asked = judged(request, decision)
            assert not validation_output(asked, proof.policy), f"update skipped: {asked}"
    assert proof.checked["pod updates"] >= len(updates) * 0.9


def test_skipped_workload_reviews_need_nothing(
    proof: Proof, workloads: list[tuple[str, Any, str, Any]]
) -> None:
    sent = []
    for kind, obj, operation, other in workloads:
        _, group, version, resource = WORKLOADS[kind]
        updated = operation != "create"
        old = (obj if operation == "update-unchanged" else other) if updated else None
        sent.append(
            admission_request(
                obj,
                group=group,
                version=version,
                kind=kind,
                resource=resource,
                old=old,
                operation="UPDATE" if updated else "CREATE",
                namespace=NAMESPACE,
            )
        )
    for request, decision in zip(sent, proof.decide(sent), strict=True):
        _no_errors(decision)
        if decision.decode_error or decision.object is None:
            continue
        proof.count("workloads")
        asked = judged(request, decision)
        if not decision.called(WORKLOADS_WEBHOOK):
            assert not validation_output(asked, proof.policy), f"validation skipped: {asked}"
        if not decision.called(MUTATING_WEBHOOK):
            safe = mutation_skip_is_safe(
                asked, decision, proof.policy, validating=WORKLOADS_WEBHOOK
            )
            assert safe, f"mutation skipped: {asked}"
    assert proof.checked["workloads"] >= len(workloads) * 0.9


# -- every expression compiles and is total ---------------------------------------------------


def test_every_condition_compiles_as_the_api_server_compiles_it() -> None:
    for name, text in POLICIES.items():
        registrations = render(parse_policy_text(text), Endpoint(url="https://127.0.0.1:9/"))
        assert compile_errors(registrations) == "", name


CUSTOM_KINDS = {
    "PyTorchJob": ("kubeflow.org", "v1", "pytorchjobs"),
    "JobSet": ("jobset.x-k8s.io", "v1alpha2", "jobsets"),
    "TrainJob": ("trainer.kubeflow.org", "v1alpha1", "trainjobs"),
    "RayJob": ("ray.io", "v1", "rayjobs"),
    "Job": ("batch.volcano.sh", "v1alpha1", "jobs"),
}
_custom_objects = st.tuples(
    st.sampled_from(sorted(CUSTOM_KINDS)),
    gen.json_values,
    gen.json_values,
    st.sampled_from(("CREATE", "UPDATE")),
)


@pytest.fixture(scope="module")
def custom_objects() -> list[tuple[str, Any, Any, str]]:
    return harvest(_custom_objects, CORPUS // 2)


def test_conditions_never_fail_on_arbitrary_custom_resources(
    proof: Proof, custom_objects: list[tuple[str, Any, Any, str]]
) -> None:
    """A custom resource may hold anything where a template is expected: every condition
    still answers true or false (an error would skip the webhook)."""
    requests = []
    for kind, spec, old_spec, operation in custom_objects:
        group, version, resource = CUSTOM_KINDS[kind]
        api_version = f"{group}/{version}"
        obj = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}, "spec": spec}
        old = {**obj, "spec": old_spec} if operation == "UPDATE" else None
        for body in (obj, {"apiVersion": api_version, "kind": kind, "metadata": spec}):
            requests.append(
                admission_request(
                    body,
                    group=group,
                    version=version,
                    kind=kind,
                    resource=resource,
                    old=old,
                    operation=operation,
                    namespace=NAMESPACE,
                )
            )
    for decision in proof.decide(requests):
        assert not decision.decode_error
        _no_errors(decision)
        proof.count("custom resources")
    assert proof.checked["custom resources"] == len(requests)


# -- what the conditions skip, by example -------------------------------------------------------


def _pod(labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "labels": labels or {}},
        "spec": {"containers": [{"name": "c", "image": "i"}], **spec},
    }


FAULT_TOLERANT = {"spotguard.dev/fault-tolerant": "true"}
SPOT_TOLERATION = [
    {
        "key": "kubernetes.azure.com/scalesetpriority",
        "operator": "Equal",
        "value": "spot",
        "effect": "NoSchedule",
    }
]


def _calls(relevance: Relevance, *requests: dict[str, Any]) -> list[tuple[bool, bool]]:
    registrations = render_relevance(relevance, Endpoint(url="https://127.0.0.1:9/"))
    decisions = decide(registrations, list(requests))
    for decision in decisions:
        _no_errors(decision)
    return [(d.called(MUTATING_WEBHOOK), d.called(VALIDATING_WEBHOOK)) for d in decisions]


def _aks_sample() -> list[dict[str, Any]]:
    """Pods that tell the AKS routings apart, in the order the tests expect them."""
    return [
        admission_request(_pod(nodeSelector={"zone": "a"})),
        admission_request(_pod(FAULT_TOLERANT)),
        admission_request(_pod(tolerations=SPOT_TOLERATION)),
        admission_request(_pod(nodeName="spot-1")),
        admission_request(_pod(nodeSelector={"kubernetes.azure.com/scalesetpriority": "spot"})),
        admission_request(_pod(tolerations=[{"operator": "Exists"}])),
    ]


def test_tainted_spot_only_ordinary_pods_cost_no_call() -> None:
    """Every spot node tainted (AKS) and a keep-off-spot rule that only neutralises pods
    that can reach spot: an ordinary pod is sent to neither webhook."""
    aks = replace(
        relevance_of(parse_policy_text("spotNodes: {presets: [aks]}")), mutate_others="tolerating"
    )
    assert _calls(aks, *_aks_sample()) == [
        (False, False),  # ordinary: no call at all
        (True, False),  # fault-tolerant: mutated, nothing to validate
        (True, True),  # tolerates spot: neutralised and denied
        (False, True),  # names a node: checked against it
        (False, True),  # selects spot: denied
        (True, True),  # tolerates every taint
    ]


def test_tainted_spot_with_enforced_placement_mutates_fault_tolerant_pods_only() -> None:
    """Every spot node tainted and spot-requires-fault-tolerance enforced (the AKS preset
    as it ships): a pod that is not fault-tolerant is denied whenever keep-off-spot would
    patch it, so the mutating webhook matches fault-tolerant pods by labels alone (an
    objectSelector: no CEL for the API server to evaluate) and the validating webhook
    still sees every pod that tolerates or selects spot."""
    aks = relevance_of(parse_policy_text("spotNodes: {presets: [aks]}"))
    assert aks.mutate_others == "none"
    (mutating, _) = render_relevance(aks)
    assert "matchConditions" not in mutating["webhooks"][0]
    assert _calls(aks, *_aks_sample()) == [
        (False, False),  # ordinary: no call at all
        (True, False),  # fault-tolerant: mutated, nothing to validate
        (False, True),  # tolerates spot: denied (keep-off-spot would change nothing)
        (False, True),  # names a node: checked against it
        (False, True),  # selects spot: denied
        (False, True),  # tolerates every taint: denied
    ]

    def others(rules: str) -> str:
        policy = parse_policy_text(f"spotNodes: {{presets: [aks]}}\n{rules}")
        return relevance_of(policy).mutate_others

    # Keep-off-spot's patch matters once the check is weaker: audited, or off.
    assert others("rules: {spotRequiresFaultTolerance: {mode: audit}}") == "tolerating"
    assert others("rules: {spotRequiresFaultTolerance: {mode: off}}") == "tolerating"
    # Both audited (a dry run): the check reports what keep-off-spot would report.
    assert others("mode: audit") == "none"


def test_untainted_spot_ordinary_pods_cost_one_call() -> None:
    eks = relevance_of(parse_policy_text("spotNodes: {presets: [eks, karpenter]}"))
    calls = _calls(
        eks,
        admission_request(_pod()),
        admission_request(_pod(FAULT_TOLERANT, terminationGracePeriodSeconds=30)),
        admission_request(_pod(FAULT_TOLERANT, terminationGracePeriodSeconds=300)),
        admission_request(_pod(nodeSelector={"eks.amazonaws.com/capacityType": "ON_DEMAND"})),
        admission_request(_pod(nodeSelector={"eks.amazonaws.com/capacityType": "SPOT"})),
    )
    assert calls == [(True, False), (True, False), (True, True), (True, False), (True, True)]


def test_bindings_by_the_default_scheduler_are_skipped_others_are_sent() -> None:
    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "p"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "spot-1"},
    }
    relevance = relevance_of(default_policy())

    def bind(
        username: str, sub_resource: str = "binding", resource: str = "pods"
    ) -> dict[str, Any]:
        return admission_request(
            binding, kind="Binding", resource=resource, sub_resource=sub_resource, username=username
        )

    calls = _calls(
        relevance,
        bind("system:kube-scheduler"),
        bind("system:serviceaccount:batch:custom-scheduler"),
        bind("alice"),
        bind(""),
        bind("system:kube-scheduler", sub_resource="", resource="bindings"),
        bind("alice", sub_resource="", resource="bindings"),
    )
    assert [validate for _, validate in calls] == [False, True, True, True, False, True]
    everyone = replace(relevance, trusted_schedulers=())
    assert _calls(everyone, bind("system:kube-scheduler")) == [(False, True)]


def test_namespaces_excluded_or_labelled_ignore_true_are_skipped() -> None:
    relevance = relevance_of(default_policy())
    pod = _pod(tolerations=SPOT_TOLERATION)
    calls = _calls(
        relevance,
        admission_request(pod, namespace="kube-system"),
        admission_request(pod, namespace="team", namespace_labels={"spotguard.dev/ignore": "true"}),
        admission_request(
            pod, namespace="team", namespace_labels={"spotguard.dev/ignore": "false"}
        ),
    )
    assert calls == [(False, False), (False, False), (True, True)]


# -- a broader registration sends a superset ---------------------------------------------------


def test_a_registration_that_covers_a_policy_sends_everything_the_policy_needs(
    pods: list[dict[str, Any]], updates: list[tuple[dict[str, Any], dict[str, Any]]]
) -> None:
    """The coverage order is sound: for policies the base registration covers (by
    missing_coverage), every review their own registration sends, the base sends too."""
    base = relevance_of(default_policy())
    requests = [admission_request(p, namespace=NAMESPACE) for p in pods] + [
        admission_request(new, old=old, operation="UPDATE", namespace=NAMESPACE)
        for old, new in updates
    ]
    broad = decide(render_relevance(base, Endpoint(url="https://127.0.0.1:9/")), requests)
    for name in ("audit", "eks", "aks"):
        narrow_relevance = relevance_of(parse_policy_text(POLICIES[name]))
        if name == "aks":  # the narrowest shape the placement model allows
            narrow_relevance = replace(narrow_relevance, mutate_others="tolerating")
        assert missing_coverage(base, narrow_relevance) == [], name
        narrow = decide(
            render_relevance(narrow_relevance, Endpoint(url="https://127.0.0.1:9/")), requests
        )
        for wide, tight in zip(broad, narrow, strict=True):
            for webhook in (MUTATING_WEBHOOK, VALIDATING_WEBHOOK):
                assert wide.called(webhook) or not tight.called(webhook), (
                    name,
                    webhook,
                    tight.object,
                )
