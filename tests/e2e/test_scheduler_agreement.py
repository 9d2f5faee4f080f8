"""The placement model against the real kube-scheduler of the harness.

Pod specs covering every affinity operator, empty and missing fields, parse errors the API
server lets through (a ``Gt`` that is no integer) and every form of toleration (a probe per
edge of the rules, and a seeded random sample), each created once per simulated node with a
``kubernetes.io/hostname`` nodeSelector ANDed in: the scheduler binds the pod exactly when
``placement.fits`` says the spec fits that node. A pod that binds to a spot node is one the
model says can reach spot, and after the keep-off-spot mutation no spot node takes it. The
sample runs in a namespace spotguard ignores, so the scheduler sees the specs as written.

The harness nodes get extra labels (an integer-valued one for Gt/Lt, one with an empty
value) and taints (one without a value, one PreferNoSchedule) for the test's duration.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from controlplane.harness import NODE_GROUPS, ControlPlane
from policies.affinity import exclude_spot
from policies.loader import default_policy
from policies.placement import Node, can_reach_spot, fits
from policies.pods import json_copy

pytestmark = pytest.mark.e2e

SEED = 9_2037
SPECS = 30
RANK = "e2e.spotguard.dev/rank"
TIER = "e2e.spotguard.dev/tier"
BARE_TAINT = "e2e.spotguard.dev/bare"
SOFT_TAINT = "e2e.spotguard.dev/soft"
HOSTNAME = "kubernetes.io/hostname"
EKS = "eks.amazonaws.com/capacityType"
AKS = "kubernetes.azure.com/scalesetpriority"
LIFECYCLE = "node.kubernetes.io/lifecycle"
NODE_NAMES = [node for group in NODE_GROUPS for node in group.node_names]

#: Extra labels per node: integers (with a leading zero, the int64 maximum, a non-integer)
#: and an empty value.
EXTRA_LABELS = {
    "on-demand-1": {RANK: "3", TIER: "a"},
    "on-demand-2": {RANK: "07"},
    "on-demand-3": {RANK: "12", TIER: ""},
    "spot-tainted-1": {RANK: "x12"},
    "spot-tainted-2": {RANK: "0", TIER: "b"},
    "spot-untainted-1": {RANK: "9223372036854775807", TIER: "a"},
}
#: Extra taints per node: one without a value, one that only discourages.
EXTRA_TAINTS = {
    "on-demand-2": f"{BARE_TAINT}:NoSchedule",
    "spot-untainted-2": f"{SOFT_TAINT}=x:PreferNoSchedule",
}

KEYS = [EKS, AKS, LIFECYCLE, RANK, TIER, "type", "e2e.spotguard.dev/absent"]
VALUES = ["SPOT", "ON_DEMAND", "spot", "on-demand", "kwok", "a", "b", "", "3", "07", "12"]
BOUNDS = ["0", "2", "3", "7", "07", "11", "abc", "9223372036854775806", "99999999999999999999"]
TOLERATIONS: list[dict[str, Any]] = [
    {"operator": "Exists"},
    {"key": AKS, "operator": "Equal", "value": "spot", "effect": "NoSchedule"},
    {"key": AKS, "operator": "Exists"},
    {"key": AKS, "value": "spot", "effect": "NoExecute"},
    {"key": AKS, "value": "other"},
    {"key": "CriticalAddonsOnly", "operator": "Exists"},
    {"key": BARE_TAINT, "operator": "Exists", "effect": "NoSchedule"},
    {"key": BARE_TAINT},  # Equal with the empty value: the taint without a value
    {"key": BARE_TAINT, "value": "x"},
    {"operator": "Exists", "effect": "PreferNoSchedule"},
]


def _terms(*terms: dict[str, Any]) -> dict[str, Any]:
    required = {"nodeSelectorTerms": list(terms)}
    return {
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}
    }


def _match(key: str, operator: str, *values: str) -> dict[str, Any]:
    expression: dict[str, Any] = {"key": key, "operator": operator}
    return {**expression, "values": list(values)} if values else expression


EVERYTHING = {"tolerations": [{"operator": "Exists"}]}
#: One spec per edge of the rules, each telling the nodes apart where a slip would show.
PROBES: list[dict[str, Any]] = [
    _terms({"matchExpressions": [_match("e2e.spotguard.dev/absent", "NotIn", "x")]}),
    _terms({"matchExpressions": [_match(TIER, "NotIn", "a")]}),  # absent, "" and "b" pass
    {**EVERYTHING, **_terms({"matchExpressions": [_match(RANK, "Gt", "7")]})},  # "07" is 7
    {**EVERYTHING, **_terms({"matchExpressions": [_match(RANK, "Gt", "6")]})},
    {**EVERYTHING, **_terms({"matchExpressions": [_match(RANK, "Lt", "12")]})},
    {**EVERYTHING, **_terms({"matchExpressions": [_match(RANK, "Lt", "1")]})},  # "0"; not "x12"
    {**EVERYTHING, **_terms({"matchExpressions": [_match(RANK, "Gt", "9223372036854775806")]})},
    {**EVERYTHING, **_terms({"matchExpressions": [_match(RANK, "Gt", "99999999999999999999")]})},
    {**EVERYTHING, **_terms({"matchExpressions": [_match(TIER, "Exists")]})},  # "" exists
    {**EVERYTHING, **_terms({"matchExpressions": [_match(TIER, "DoesNotExist")]})},
    {**EVERYTHING, **_terms({"matchExpressions": [_match(TIER, "In", "")]})},
    {**EVERYTHING, "nodeSelector": {TIER: ""}},
    {**EVERYTHING, **_terms({}, {"matchExpressions": [_match(EKS, "In", "SPOT")]})},
    {**EVERYTHING, **_terms({})},
    {
        **EVERYTHING,
        **_terms(
            {"matchExpressions": [_match(RANK, "Gt", "abc")]},
            {"matchExpressions": [_match(TIER, "In", "a")]},
        ),
    },
    {**EVERYTHING, **_terms({"matchFields": [_match("metadata.name", "NotIn", "on-demand-1")]})},
    {
        **EVERYTHING,
        "nodeSelector": {"type": "kwok"},
        **_terms({"matchExpressions": [_match(EKS, "In", "SPOT")]}),
    },
    {"tolerations": [{"key": AKS, "value": "spot", "effect": "NoExecute"}]},
    {"tolerations": [{"key": AKS, "value": "spot"}, {"key": BARE_TAINT}]},
    {
        "tolerations": [
            {"key": BARE_TAINT, "value": "x"},
            {"key": "CriticalAddonsOnly", "operator": "Exists"},
        ]
    },
    {},
]


def _expression(rng: random.Random) -> dict[str, Any]:
    key, operator = (
        rng.choice(KEYS),
        rng.choice(["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]),
    )
    if operator in ("In", "NotIn"):
        return {"key": key, "operator": operator, "values": rng.sample(VALUES, rng.randint(1, 3))}
    if operator in ("Gt", "Lt"):
        return {"key": rng.choice([RANK, RANK, TIER, EKS]), "operator": operator,
                "values": [rng.choice(BOUNDS)]}  # fmt: skip
    return {"key": key, "operator": operator}


def _term(rng: random.Random) -> dict[str, Any]:
    shape = rng.random()
    if shape < 0.1:
        return {}  # matches no node
    if shape < 0.15:
        return {"matchExpressions": []}
    term: dict[str, Any] = {}
    expressions = [_expression(rng) for _ in range(rng.choice([0, 1, 1, 2, 3]))]
    if expressions:
        term["matchExpressions"] = expressions
    if rng.random() < 0.25 or not expressions:
        operator = rng.choice(["In", "NotIn"])
        name = rng.choice([*NODE_NAMES, "no-such-node"])
        term["matchFields"] = [{"key": "metadata.name", "operator": operator, "values": [name]}]
    return term


def generated_spec(rng: random.Random) -> dict[str, Any]:
    """A pod spec's placement fields, API-valid, drawn to cover every operator and form."""
    spec: dict[str, Any] = {}
    if rng.random() < 0.4:
        key = rng.choice([EKS, LIFECYCLE, TIER, "type"])
        spec["nodeSelector"] = {key: rng.choice(VALUES)}
    if rng.random() < 0.7:
        terms = [_term(rng) for _ in range(rng.randint(1, 3))]
        required = {"nodeSelectorTerms": terms}
        spec["affinity"] = {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}
        }
    if rng.random() < 0.7:
        spec["tolerations"] = rng.sample(TOLERATIONS, rng.randint(1, 3))
    return spec


def pinned_pod(name: str, spec: dict[str, Any], node: str) -> dict[str, Any]:
    """The spec as a pod, with the node's hostname ANDed into its nodeSelector."""
    pod_spec = json_copy(spec)
    pod_spec["nodeSelector"] = {**pod_spec.get("nodeSelector", {}), HOSTNAME: node}
    pod_spec["containers"] = [{"name": "c", "image": "registry.example/idle:1"}]
    pod_spec["terminationGracePeriodSeconds"] = 0
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": pod_spec}


@pytest.fixture
def nodes(cluster: ControlPlane) -> Iterator[dict[str, Node]]:
    """The harness nodes with this test's extra labels and taints, as the API has them."""
    try:
        for name, labels in EXTRA_LABELS.items():
            pairs = [f"{key}={value}" for key, value in labels.items()]
            cluster.kubectl("label", "node", name, "--overwrite", *pairs, check=True)
        for name, taint in EXTRA_TAINTS.items():
            cluster.kubectl("taint", "node", name, "--overwrite", taint, check=True)
        listed = json.loads(cluster.kubectl("get", "nodes", "-o", "json", check=True).stdout)
        assert not any(n["spec"].get("unschedulable") for n in listed["items"]), (
            "a node is cordoned"
        )
        yield {n["metadata"]["name"]: Node.from_api(n) for n in listed["items"]}
    finally:
        for name, labels in EXTRA_LABELS.items():
            cluster.kubectl("label", "node", name, *(f"{key}-" for key in labels))
        for name, taint in EXTRA_TAINTS.items():
            cluster.kubectl("taint", "node", name, taint.split("=")[0].split(":")[0] + "-")
        left = cluster.kubectl("get", "nodes", "-o", "json", check=True).stdout
        assert not any(mark in left for mark in (RANK, TIER, BARE_TAINT, SOFT_TAINT)), left


@pytest.fixture
def ignored_namespace(cluster: ControlPlane) -> Iterator[str]:
    """A namespace spotguard ignores: pods reach the scheduler exactly as written."""
    name = f"e2e-sched-{uuid.uuid4().hex[:6]}"
    cluster.ensure_namespace(name)
    cluster.kubectl("label", "namespace", name, "spotguard.dev/ignore=true", check=True)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


def _create_all(cluster: ControlPlane, namespace: str, pods: list[dict[str, Any]]) -> None:
    def create(pod: dict[str, Any]) -> None:
        status, body = cluster.request("POST", f"/api/v1/namespaces/{namespace}/pods", pod)
        assert status == 201, (pod, body)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(create, pods))


def _decided(cluster: ControlPlane, namespace: str, count: int, timeout: float) -> dict[str, Any]:
    """Each pod once the scheduler bound it or found it unschedulable."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods")
        assert status == 200, body
        pods = {p["metadata"]["name"]: p for p in body["items"]}
        pending = [name for name, pod in pods.items() if _outcome(pod) is None]
        if len(pods) == count and not pending:
            return pods
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} of {count} pods undecided: {pending[:5]}")
        time.sleep(0.5)


def _outcome(pod: dict[str, Any]) -> bool | None:
    """True: bound; False: the scheduler found no node; None: not tried yet."""
    if pod["spec"].get("nodeName"):
        return True
    for condition in pod.get("status", {}).get("conditions") or []:
        if condition["type"] == "PodScheduled" and condition.get("reason") == "Unschedulable":
            return False
    return None


def test_the_model_agrees_with_kube_scheduler(
    cluster: ControlPlane, nodes: dict[str, Node], ignored_namespace: str
) -> None:
    started = time.monotonic()
    rng = random.Random(SEED)
    policy = default_policy()
    specs = [*PROBES, *(generated_spec(rng) for _ in range(SPECS))]
    spot_nodes = [name for name, node in nodes.items() if policy.spot_label_of(node.labels)]
    assert len(spot_nodes) == 4 and len(nodes) == len(NODE_NAMES)
    expected: dict[str, tuple[dict[str, Any], str, bool]] = {}
    for index, spec in enumerate(specs):
        for node in NODE_NAMES:
            pod = pinned_pod(f"p{index}-{node}", spec, node)
            expected[pod["metadata"]["name"]] = (pod, node, fits(pod["spec"], nodes[node]))
        mutated = json_copy(spec)
        exclude_spot(mutated, policy)
        if mutated != spec:  # keep-off-spot changed it: no spot node may take it now
            for node in spot_nodes:
                pod = pinned_pod(f"m{index}-{node}", mutated, node)
                expected[pod["metadata"]["name"]] = (pod, node, fits(pod["spec"], nodes[node]))
    _create_all(cluster, ignored_namespace, [pod for pod, _, _ in expected.values()])
    outcomes = _decided(cluster, ignored_namespace, len(expected), timeout=60)

    mismatches = []
    for name, (pod, node, model) in expected.items():
        stored = outcomes[name]
        assert fits(stored["spec"], nodes[node]) == model, f"{name}: defaulting changed the answer"
        bound = _outcome(stored)
        if bound != model:
            mismatches.append((name, model, bound, pod["spec"], stored.get("status")))
    assert not mismatches, json.dumps(mismatches[:3], indent=1)

    # The symbolic layer: a pod that bound to a spot node could reach spot; a mutated one
    # bound to none; and the sample covered both answers, every operator and toleration.
    for index, spec in enumerate(specs):
        bound_to_spot = any(
            outcomes[f"p{index}-{node}"]["spec"].get("nodeName") for node in spot_nodes
        )
        if bound_to_spot:
            assert can_reach_spot(spec, policy), spec
    assert not any(name.startswith("m") and _outcome(p) for name, p in outcomes.items())
    answers = [model for name, (_, _, model) in expected.items() if name.startswith("p")]
    assert 0.15 < sum(answers) / len(answers) < 0.85, "the sample should bind and reject often"
    assert not any(model for name, (_, _, model) in expected.items() if name.startswith("m"))
    text = json.dumps(specs)
    for needle in ('"In"', '"NotIn"', '"Exists"', '"DoesNotExist"', '"Gt"', '"Lt"',
                   '"matchFields"', '"abc"', "{}", '"tolerations"', '"nodeSelector"'):  # fmt: skip
        assert needle in text, f"the sample lacks {needle}"
    assert sum(name.startswith("m") for name in expected) >= 10, "too few mutated pods"
    print(f"{len(expected)} pod x node pairs agree in {time.monotonic() - started:.1f} s")


@pytest.mark.parametrize(
    ("required", "accepted"),
    [
        ({"nodeSelectorTerms": []}, False),  # what the mutation never fills
        ({}, False),
        ({"nodeSelectorTerms": [{"matchExpressions": [{"key": EKS, "operator": "In"}]}]}, False),
        ({"nodeSelectorTerms": [{"matchExpressions": [{"key": RANK, "operator": "Gt",
                                                       "values": ["1", "2"]}]}]}, False),
        ({"nodeSelectorTerms": [{"matchExpressions": [{"key": EKS, "operator": "Exists",
                                                       "values": ["SPOT"]}]}]}, False),
        ({"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.uid", "operator": "In",
                                                  "values": ["x"]}]}]}, False),
        ({"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "Exists"}]}]},
         False),
        ({"nodeSelectorTerms": [{}]}, True),  # valid, and matches no node
        ({"nodeSelectorTerms": [{"matchExpressions": [{"key": RANK, "operator": "Gt",
                                                       "values": ["abc"]}]}]}, True),
    ],
)  # fmt: skip
def test_the_api_server_rejects_what_the_mutation_leaves_alone(
    cluster: ControlPlane, ignored_namespace: str, required: dict[str, Any], accepted: bool
) -> None:
    """Affinity spotguard leaves as it is because the API server rejects it, is rejected;
    the forms it keeps because they are valid (an empty term, a Gt that is no integer) are
    accepted, and never scheduled."""
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}
    pod = pinned_pod(f"v-{uuid.uuid4().hex[:6]}", {"affinity": affinity}, NODE_NAMES[1])
    status, body = cluster.request("POST", f"/api/v1/namespaces/{ignored_namespace}/pods", pod)
    assert status == (201 if accepted else 422), body
    assert not any(
        fits(pod["spec"], Node(name, {HOSTNAME: name, RANK: "5"})) for name in NODE_NAMES
    )
