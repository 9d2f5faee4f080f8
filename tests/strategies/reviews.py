"""Whole reviews: who asks, what the cluster knows, and batches of reviews under one policy."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import strategies as st

from policies.decisions import ClusterFacts
from policies.exemptions import Requester
from policies.model import Policy
from policies.review import BINDING_KIND, POD_KIND, GroupVersionKind, Operation, Request
from tests.strategies.objects import NAMESPACE, json_values, pod, toleration_lists, workload
from tests.strategies.policies import BOOLEANS, JSON, policy

DAEMON_SET_CONTROLLER = "system:serviceaccount:kube-system:daemon-set-controller"

# --- who asks, and what the cluster knows ------------------------------------------------

ALICE = Requester("alice", frozenset({"system:authenticated"}))
SCHEDULER = Requester("system:kube-scheduler")
_TRUSTED_AND_NOT = (
    None, ALICE, ALICE,
    Requester(DAEMON_SET_CONTROLLER, frozenset({"system:serviceaccounts"})),
    Requester("system:kube-controller-manager"),
    SCHEDULER,
)  # fmt: skip


def requester(draw: st.DrawFn, node_names: tuple[str, ...] = ("spot-1",)) -> Requester | None:
    """Nobody (offline), users, the DaemonSet controller's identities, kubelets, the scheduler."""
    kubelets = [Requester(f"system:node:{n}", frozenset({"system:nodes"})) for n in node_names]
    return draw(st.sampled_from([*_TRUSTED_AND_NOT, *kubelets]))


def requesters(node_names: tuple[str, ...] = ("spot-1",)) -> st.SearchStrategy[Requester | None]:
    return st.composite(lambda draw: requester(draw, node_names))()


@dataclass(frozen=True)
class ClusterData:
    """What the cluster facts know, as plain data (see :meth:`ClusterFacts.from_data`)."""

    nodes: dict[str, dict[str, str]]
    local_claims: tuple[str, ...] = ()
    pods: dict[str, JSON] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)

    def facts(self) -> ClusterFacts:
        return ClusterFacts.from_data(self.nodes, self.local_claims, self.pods, self.owners)

    @property
    def node_names(self) -> tuple[str, ...]:
        """The known nodes and one the facts do not know."""
        return (*self.nodes, "unknown-1")


def cluster(draw: st.DrawFn, policy: Policy) -> ClusterData:
    """A spot node per spot label of the policy (up to 3), an on-demand node, maybe a local
    claim and a DaemonSet that exists (the one forged owner references name)."""
    nodes: dict[str, dict[str, str]] = {"on-demand-1": {"kubernetes.io/hostname": "on-demand-1"}}
    for index, label in enumerate(policy.spot_labels[:3]):
        nodes[f"spot-{index + 1}"] = {label.key: label.values[0]}
    local = ("ml/local-0",) if draw(BOOLEANS) else ()
    owners = {"DaemonSet/ml/owner": "uid-1"} if draw(BOOLEANS) else {}
    return ClusterData(nodes, local, {}, owners)


def cluster_data(policy: Policy) -> st.SearchStrategy[ClusterData]:
    return st.composite(lambda draw: cluster(draw, policy))()


def binding(draw: st.DrawFn, node_names: tuple[str, ...], pod_name: str = "web-0") -> JSON:
    """A Binding of ``pod_name`` to one of the nodes (``pods/binding``)."""
    return {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": pod_name, "namespace": NAMESPACE},
        "target": {"apiVersion": "v1", "kind": "Node", "name": draw(st.sampled_from(node_names))},
    }


def bindings(node_names: tuple[str, ...]) -> st.SearchStrategy[JSON]:
    return st.composite(lambda draw: binding(draw, node_names))()


# --- whole reviews -----------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One review: the policy, what the API server says, and what the cluster knows."""

    policy: Policy
    request: Request
    cluster: ClusterData

    @property
    def facts(self) -> ClusterFacts:
        return self.cluster.facts()


@dataclass(frozen=True)
class Batch:
    """Several reviews under one policy and cluster: drawing a policy costs more than a pod,
    so property tests that need many cases review several per drawn policy."""

    policy: Policy
    cluster: ClusterData
    requests: tuple[Request, ...]

    def scenarios(self) -> list[Scenario]:
        return [Scenario(self.policy, request, self.cluster) for request in self.requests]


_ONE_IN_SIX = st.integers(0, 5)


def pod_request(draw: st.DrawFn, policy: Policy, data: ClusterData) -> Request:
    """A pod CREATE, sometimes an UPDATE that adds tolerations, from any requester."""
    new = pod(draw, policy, data.node_names)
    who = requester(draw, data.node_names)
    if draw(_ONE_IN_SIX) == 0:
        added = draw(toleration_lists(policy))
        old = {**new, "spec": {**new["spec"], "tolerations": new["spec"].get("tolerations", [])}}
        tolerated = [*old["spec"]["tolerations"], *added]
        updated = {**new, "spec": {**new["spec"], "tolerations": tolerated}}
        return Request(POD_KIND, Operation.UPDATE, NAMESPACE, updated, old, requester=who)
    return Request(POD_KIND, Operation.CREATE, NAMESPACE, new, requester=who)


def workload_request(draw: st.DrawFn, policy: Policy) -> Request:
    """A CREATE of any kind the policy reviews (built-ins and the CRD)."""
    obj = workload(draw, policy)
    return Request(GroupVersionKind.of(obj), Operation.CREATE, NAMESPACE, obj,
                   requester=requester(draw))  # fmt: skip


def binding_request(
    draw: st.DrawFn, policy: Policy, data: ClusterData
) -> tuple[Request, JSON | None]:
    """A binding of pod web-0 to any node, with the stored pod (None: not found)."""
    stored = pod(draw, policy) if draw(_ONE_IN_SIX) else None
    request = Request(BINDING_KIND, Operation.CREATE, NAMESPACE, binding(draw, data.node_names),
                      None, "binding", "web-0", SCHEDULER)  # fmt: skip
    return request, stored


_BATCH_SIZE = st.integers(4, 8)


def _batch(draw: st.DrawFn, kind: str) -> Batch:
    drawn = policy(draw)
    data = cluster(draw, drawn)
    requests: list[Request] = []
    stored: dict[str, JSON] = {}
    for _ in range(draw(_BATCH_SIZE)):
        if kind == "pod":
            requests.append(pod_request(draw, drawn, data))
        elif kind == "workload":
            requests.append(workload_request(draw, drawn))
        else:  # one stored pod per batch: the cluster facts hold one pod web-0
            request, found = binding_request(draw, drawn, data)
            requests.append(request)
            if found is not None and not stored:
                stored[f"{NAMESPACE}/web-0"] = found
    return Batch(
        drawn, ClusterData(data.nodes, data.local_claims, stored, data.owners), tuple(requests)
    )


def batches(kind: str) -> st.SearchStrategy[Batch]:
    """Batches of ``pod``, ``workload`` or ``binding`` reviews under one drawn policy."""
    return st.composite(lambda draw: _batch(draw, kind))()


def scenarios() -> st.SearchStrategy[Scenario]:
    """Any single review: a pod, a workload or a binding."""
    return st.sampled_from(["pod", "workload", "binding"]).flatmap(
        lambda kind: batches(kind).map(lambda batch: batch.scenarios()[0])
    )


_JUNK = json_values()
_JUNK_PLACES = st.sampled_from(
    ["spec", "metadata", "containers", "tolerations", "affinity", "annotations", "labels",
     "template", "nodeSelector", "ownerReferences", "volumes", "terminationGracePeriodSeconds"]
)  # fmt: skip


def _junk_request(draw: st.DrawFn, drawn: Policy) -> Request:
    base = pod(draw, drawn) if draw(BOOLEANS) else workload(draw, drawn)
    targets = [base, base["spec"], base["metadata"]]
    if base["kind"] == "Pod" and base["spec"].get("containers"):
        targets.append(base["spec"]["containers"][0])
    target = draw(st.sampled_from(targets))
    target[draw(_JUNK_PLACES)] = draw(_JUNK)
    return Request(GroupVersionKind.of(base), Operation.CREATE, NAMESPACE, base)


def _junk_batch(draw: st.DrawFn) -> Batch:
    drawn = policy(draw)
    requests = tuple(_junk_request(draw, drawn) for _ in range(draw(_BATCH_SIZE)))
    return Batch(drawn, cluster(draw, drawn), requests)


def junk_batches() -> st.SearchStrategy[Batch]:
    """Reviews whose object holds arbitrary JSON somewhere the rules read."""
    return st.composite(_junk_batch)()
