"""Hypothesis strategies for everything the domain's entry point reviews.

Reusable building blocks, for the property tests here and for anyone who must prove that
something agrees with :func:`policies.review.review` (e.g. that a webhook registration's
CEL match conditions never skip a review that matters):

- :func:`policy_documents` / :func:`policies`: every preset combination, custom spot
  labels and taints, every global and rule mode, operator presets, inject settings,
  template mutation, a CRD through ``workloads.extraKinds``, trusted identities;
- :func:`pods`, :func:`templates`, :func:`workloads` (every kind the policy reviews, with
  templates at each of its paths), :func:`bindings`: objects shaped as the API server
  sends them, built from the policy's own spot labels and taints so every rule is reached
  (tolerations of every form, node affinity with every operator and empty terms,
  steering annotations valid and not, forged exemptions, nodeName, local storage);
- :func:`requesters`: nobody (offline), users, the DaemonSet controller, kubelets, the
  scheduler;
- :func:`cluster_data`: nodes (spot and not), local claims, stored pods, owners;
- :func:`scenarios`: a whole review, :class:`Scenario` (policy, request, facts), and
  :func:`batches` of pod, workload or binding reviews under one policy (drawing a policy
  costs more than drawing a pod, so many cases are cheaper in batches);
- :func:`json_values` and :func:`junk_batches`: arbitrary JSON where the rules read.

Each ``foo(draw, ...)`` function draws one value inside a composite strategy, and its
``foos(...)`` twin is the strategy; strategies are built once (building one costs
hypothesis more than drawing from it).

Every strategy draws from small alphabets on purpose: collisions (the same key in a
toleration and a taint, a container name in an annotation) are where bugs live.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from hypothesis import strategies as st

from policies.decisions import ClusterFacts
from policies.exemptions import Requester
from policies.loader import compile_policy
from policies.model import Policy, WorkloadKind
from policies.operators import OPERATOR_PRESETS
from policies.presets import PRESETS
from policies.review import (
    BINDING_KIND,
    POD_KIND,
    GroupVersionKind,
    Operation,
    Request,
)
from policies.schema import EFFECTS, MODES

JSON = dict[str, Any]

RULE_KEYS = (
    "inject", "keepOffSpot", "spotRequiresFaultTolerance", "gracePeriodFitsNotice",
    "checkpointFitsNotice", "statefulWorkload", "latencyCritical", "localStorage",
    "spotNodeBinding",
)  # fmt: skip
CONTAINER_NAMES = ("trainer", "sidecar", "main")
CUSTOM_LABEL_KEYS = ("pool", "example.com/capacity", "lifecycle")
CUSTOM_VALUES = ("cheap", "spot", "true", "SPOT")
OTHER_KEYS = ("team", "gpu", "node.kubernetes.io/instance-type", "CriticalAddonsOnly")
NAMESPACE = "ml"
#: A CRD the policy reviews through workloads.extraKinds.
CRD_KIND = {
    "group": "example.com",
    "kind": "TrainingRun",
    "resource": "trainingruns",
    "templatePaths": ["spec.workers[*].template", {"path": "spec.launcher", "podSpec": True}],
}
DAEMON_SET_CONTROLLER = "system:serviceaccount:kube-system:daemon-set-controller"

# --- policies ----------------------------------------------------------------------------
# Strategies are built once, at import: building one costs hypothesis more than drawing.

_PRESET_LISTS = st.lists(st.sampled_from(sorted(PRESETS)), unique=True, max_size=3)
_CUSTOM_LABEL_LISTS = st.sampled_from(
    [[], [], [{"key": "pool", "values": ["cheap"]}],
     [{"key": "example.com/capacity", "values": ["spot", "SPOT"]}],
     [{"key": "lifecycle", "values": ["spot"]}, {"key": "pool", "values": ["cheap", "true"]}]]
)  # fmt: skip
_CUSTOM_TAINT_LISTS = st.sampled_from(
    [[], [], [{"key": "pool", "value": "cheap", "effect": "NoSchedule"}],
     [{"key": "example.com/capacity", "effect": "NoSchedule"}],  # any value
     [{"key": "spot", "value": "true", "effect": "PreferNoSchedule"},
      {"key": "lifecycle", "effect": "NoExecute"}]]
)  # fmt: skip
_NOTICE = st.sampled_from([None, 15, 30, 110, 600])
_MODE = st.sampled_from(MODES)
_RULE_MODES = st.lists(_MODE, min_size=len(RULE_KEYS), max_size=len(RULE_KEYS))
_SELECTOR: st.SearchStrategy[JSON] = st.sampled_from(
    [{}, {"matchLabels": {"example.com/preemptible": "yes"}},
     {"matchExpressions": [{"key": "example.com/preemptible", "operator": "Exists"}]}]
)  # fmt: skip
_OPERATOR_PRESETS = st.lists(st.sampled_from(sorted(OPERATOR_PRESETS)), unique=True, max_size=2)
_HOOK_CONTAINERS = st.sampled_from([[], [], ["trainer"], ["sidecar", "main"]])
_RESERVE = st.sampled_from([0, 5, 20])
_WEIGHT = st.sampled_from([0, 1, 100])
_INSTANCE_TYPES = st.sampled_from([[], ["g5.xlarge", "g4dn.xlarge"]])
_CLAIM = st.sampled_from([None, "team-checkpoints"])
_EXTRA_KINDS = st.sampled_from([[], [CRD_KIND]])
_UNKNOWN_NODES = st.sampled_from(["allow", "deny"])
_EXEMPT_PREFIXES = st.sampled_from([[], ["/mnt/nvme"]])
_NO_EXEMPTIONS = {
    "daemonSetPodCreators": [],
    "mirrorPodCreators": {"nodeUserPrefix": "", "nodeGroup": "system:nodes"},
}
BOOLEANS = st.booleans()


def _spot_nodes(draw: st.DrawFn) -> JSON:
    presets = draw(_PRESET_LISTS)
    labels, taints = draw(_CUSTOM_LABEL_LISTS), draw(_CUSTOM_TAINT_LISTS)
    if not presets and not labels and not taints:
        labels = [{"key": "pool", "values": ["cheap"]}]
    spot: JSON = {"presets": presets, "labels": labels, "taints": taints}
    notice = draw(_NOTICE)
    if notice is not None or not presets:
        spot["noticeWindowSeconds"] = notice or 30
    return spot


def _inject(draw: st.DrawFn) -> JSON:
    return {
        "tolerations": draw(BOOLEANS),
        "nodeAffinity": {
            "preferSpotWeight": draw(_WEIGHT),
            "avoidCriticalAddons": draw(BOOLEANS),
            "instanceTypes": draw(_INSTANCE_TYPES),
        },
        "preStop": {
            "enabled": draw(BOOLEANS),
            "containers": draw(_HOOK_CONTAINERS),
            "replaceExisting": draw(BOOLEANS),
            "sigtermReserveSeconds": draw(_RESERVE),
        },
        "terminationGracePeriod": draw(BOOLEANS),
        "checkpoint": {"claimName": draw(_CLAIM), "env": draw(BOOLEANS)},
    }


def policy_document(draw: st.DrawFn) -> JSON:
    """A valid policy document (what a ConfigMap may hold), over every setting that decides."""
    selector = dict(draw(_SELECTOR))
    selector["operatorPresets"] = draw(_OPERATOR_PRESETS)
    rule_modes = draw(_RULE_MODES)
    document: JSON = {
        "mode": draw(_MODE),
        "spotNodes": _spot_nodes(draw),
        "faultTolerant": selector,
        "inject": _inject(draw),
        "rules": {key: {"mode": mode} for key, mode in zip(RULE_KEYS, rule_modes, strict=True)},
        "workloads": {"mutateTemplates": draw(BOOLEANS), "extraKinds": draw(_EXTRA_KINDS)},
        "nodeBinding": {"unknownNodes": draw(_UNKNOWN_NODES)},
        "poorCandidates": {"localStorage": {"hostPathExemptPrefixes": draw(_EXEMPT_PREFIXES)}},
    }
    if draw(BOOLEANS):
        document["exemptions"] = _NO_EXEMPTIONS
    return document


_COMPILED: dict[str, Policy] = {}


def policy(draw: st.DrawFn) -> Policy:
    """A compiled policy; documents repeat, so each is compiled once."""
    document = policy_document(draw)
    key = json.dumps(document, sort_keys=True)
    compiled = _COMPILED.get(key)
    if compiled is None:
        compiled = _COMPILED[key] = compile_policy(document)
    return compiled


def policy_documents() -> st.SearchStrategy[JSON]:
    return st.composite(policy_document)()


def policies() -> st.SearchStrategy[Policy]:
    """Compiled policies; every document :func:`policy_documents` draws is valid."""
    return st.composite(policy)()


# --- the pieces of a pod: pools per policy, so a pod costs a few draws --------------------
#
# Hypothesis spends tens of microseconds per draw; a pod built field by field takes a
# hundred draws. So the building blocks (every toleration, every requirement the policy
# makes interesting, ...) are enumerated once per policy and drawn whole.


def _spot_keys(policy: Policy) -> list[str]:
    return sorted({label.key for label in policy.spot_labels} | {t.key for t in policy.spot_taints})


def _label_values(policy: Policy, key: str) -> list[str]:
    spot = [v for label in policy.spot_labels if label.key == key for v in label.values]
    return sorted({*spot, "on-demand", "ON_DEMAND", "false", "3"})


@dataclass(frozen=True)
class _Pools:
    """The policy's building blocks, as strategies built once (building one costs more
    than drawing from it)."""

    tolerations: st.SearchStrategy[JSON]
    toleration_lists: st.SearchStrategy[list[JSON]]
    requirements: st.SearchStrategy[JSON]
    requirement_lists: st.SearchStrategy[list[JSON]]
    node_selectors: st.SearchStrategy[JSON | None]


_POOLS: dict[str, _Pools] = {}


def _tolerations(policy: Policy) -> list[JSON]:
    """Every toleration form the API accepts, over the policy's taint keys and values."""
    keys = [t.key for t in policy.spot_taints] + ["team", "CriticalAddonsOnly"]
    values = sorted({t.value for t in policy.spot_taints if t.value} | {"true", "other"})
    found: list[JSON] = []
    for effect in (None, *EFFECTS):
        tail = {} if effect is None else {"effect": effect}
        found.append({"operator": "Exists", **tail})  # no key: every taint (of the effect)
        for key in keys:
            found.append({"key": key, "operator": "Exists", **tail})
            for value in values:
                found.append({"key": key, "operator": "Equal", "value": value, **tail})
                found.append({"key": key, "value": value, **tail})  # operator omitted
    found.append({"key": keys[0], "operator": "Exists", "effect": "NoExecute",
                  "tolerationSeconds": 30})  # fmt: skip
    return found


def _requirements(policy: Policy) -> list[JSON]:
    """API-valid requirements with every operator, on spot labels and others."""
    found: list[JSON] = []
    for key in [*_spot_keys(policy), "team", "node.kubernetes.io/instance-type"]:
        values = _label_values(policy, key)
        for operator in ("In", "NotIn"):
            found += [{"key": key, "operator": operator, "values": [v]} for v in values]
            found.append({"key": key, "operator": operator, "values": values[:2]})
        found += [{"key": key, "operator": op} for op in ("Exists", "DoesNotExist")]
        found += [
            {"key": key, "operator": op, "values": [v]} for op in ("Gt", "Lt") for v in ("0", "3")
        ]
    return found


def _pools(policy: Policy) -> _Pools:
    pools = _POOLS.get(policy.revision)
    if pools is None:
        selectors: list[JSON | None] = [None, None, None, {"team": "ml"}]
        selectors += [{label.key: value} for label in policy.spot_labels for value in label.values]
        selectors += [{key: "on-demand"} for key in _spot_keys(policy)[:2]]
        one_toleration = st.sampled_from(_tolerations(policy))
        one_requirement = st.sampled_from(_requirements(policy))
        pools = _Pools(
            one_toleration,
            st.lists(one_toleration, max_size=3),
            one_requirement,
            st.lists(one_requirement, min_size=1, max_size=3),
            st.sampled_from(selectors),
        )
        _POOLS[policy.revision] = pools
    return pools


def tolerations(policy: Policy) -> st.SearchStrategy[JSON]:
    """A toleration in every form the API accepts, often of one of the policy's taints."""
    return _pools(policy).tolerations


def requirements(policy: Policy) -> st.SearchStrategy[JSON]:
    """A node selector requirement, API-valid, with every operator, often on a spot label."""
    return _pools(policy).requirements


_TERM_SHAPES = st.sampled_from(["expressions", "expressions", "empty", "fields", "both"])
_ONE_TO_THREE = st.integers(1, 3)
BOOLEANS = st.booleans()


def node_selector_term(draw: st.DrawFn, policy: Policy) -> JSON:
    """A term: expressions ANDed; sometimes matchFields; sometimes empty (matches nothing)."""
    shape = draw(_TERM_SHAPES)
    term: JSON = {}
    if shape in ("expressions", "both"):
        term["matchExpressions"] = draw(_pools(policy).requirement_lists)
    if shape in ("fields", "both"):
        term["matchFields"] = [{"key": "metadata.name", "operator": "In", "values": ["spot-1"]}]
    return term


def affinity(draw: st.DrawFn, policy: Policy) -> JSON:
    """Node affinity: required terms (ORed; never an empty list, which the API refuses)
    and a preferred term."""
    node_affinity: JSON = {}
    if draw(BOOLEANS):
        terms = [node_selector_term(draw, policy) for _ in range(draw(_ONE_TO_THREE))]
        node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {
            "nodeSelectorTerms": terms
        }
    if draw(BOOLEANS):
        node_affinity["preferredDuringSchedulingIgnoredDuringExecution"] = [
            {"weight": 50, "preference": node_selector_term(draw, policy)}
        ]
    return {"nodeAffinity": node_affinity}


QUANTITIES = ("16Gi", "500M", "1e12", "2Pi", ".5Gi", "1.5G", "0", "3Ei", "9" * 400, "1K",
              "twelve", "-1Gi", "1e999999999", "")  # fmt: skip
HOOK_COMMANDS = ('["python", "/app/save.py"]', "kill -USR1 1", "[", '{"a": 1}', "[]", "  ",
                 "[" * 2000, '["ok", 5]')  # fmt: skip
INJECTED_RECORDS = ('{"revision":"x","injected":["tolerations"]}', "5", "[]", "{" * 3000, "null")
_ANNOTATIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("spotguard.dev/checkpoint-size", QUANTITIES),
    ("spotguard.dev/prestop-command", HOOK_COMMANDS),
    ("spotguard.dev/checkpoint-containers", ("trainer", "trainr", "trainer,sidecar", ",")),
    ("spotguard.dev/injected", INJECTED_RECORDS),
    ("spotguard.dev/latency-critical", ("true", "false")),
    ("kubernetes.io/config.mirror", ("forged",)),
)
#: Every annotation alone with each of its values, and nothing, most often.
ANNOTATION_SETS: tuple[JSON, ...] = (
    *([{}] * 12),
    *({key: value} for key, values in _ANNOTATIONS for value in values),
    {"spotguard.dev/checkpoint-size": "16Gi", "spotguard.dev/checkpoint-containers": "trainer"},
)
OPERATOR_LABELS: tuple[JSON, ...] = (
    {}, {}, {}, {"training.kubeflow.org/job-name": "bert"},
    {"jobset.sigs.k8s.io/jobset-name": "js"},
    {"ray.io/cluster": "tune", "ray.io/node-type": "worker"}, {"ray.io/cluster": "tune"},
    {"volcano.sh/job-name": "v"}, {"trainer.kubeflow.org/trainjob-name": "t"},
)  # fmt: skip
OWNERS: tuple[list[JSON] | None, ...] = (
    None, None, None,
    *([{"apiVersion": api, "kind": kind, "name": "owner", "uid": "uid-1", "controller": c}]
      for api, kind in (("apps/v1", "DaemonSet"), ("example.com/v1", "DaemonSet"),
                        ("apps/v1", "StatefulSet"), ("apps/v1", "ReplicaSet"))
      for c in (True, False)),
)  # fmt: skip


_OPERATOR_LABELS = st.sampled_from(OPERATOR_LABELS)
_OPT_IN = st.sampled_from(["selector", "selector", "custom", "none"])
_ANNOTATION_SETS = st.sampled_from(ANNOTATION_SETS)
_OWNERS = st.sampled_from(OWNERS)


def pod_metadata(draw: st.DrawFn, policy: Policy, *, template: bool = False) -> JSON:
    """Labels (the policy's opt-in, a custom one, operator labels), annotations (steering,
    record, forged mirror), owners (forged DaemonSet ones among them)."""
    labels: JSON = dict(draw(_OPERATOR_LABELS))
    opt_in = draw(_OPT_IN)
    if opt_in == "selector":
        labels.update(policy.fault_tolerant.match_labels)
    elif opt_in == "custom":
        labels["example.com/preemptible"] = "yes"
    annotations = dict(draw(_ANNOTATION_SETS))
    metadata: JSON = {}
    if labels:
        metadata["labels"] = labels
    if annotations:
        metadata["annotations"] = annotations
    if not template:
        metadata["name"] = "web-0"
        metadata["namespace"] = NAMESPACE
        owners = draw(_OWNERS)
        if owners is not None:
            metadata["ownerReferences"] = owners
    return metadata


def _container(name: str, variant: int) -> JSON:
    container: JSON = {"name": name, "image": f"registry.example/{name}:1"}
    if variant == 1:
        container["lifecycle"] = {"preStop": {"exec": {"command": ["/bin/flush"]}}}
    elif variant == 2:
        container["env"] = [{"name": "SPOTGUARD_CHECKPOINT_DIR", "value": "/mine"}]
    elif variant == 3:
        container["volumeMounts"] = [{"name": "data", "mountPath": "/checkpoints"}]
    return container


CONTAINER_LISTS: tuple[tuple[JSON, ...], ...] = (
    *((_container(name, v),) for name in CONTAINER_NAMES for v in (0, 0, 1, 2, 3)),
    (_container("trainer", 0), _container("sidecar", 0)),
    (_container("trainer", 1), _container("sidecar", 0)),
    (_container("main", 0), _container("sidecar", 2), _container("trainer", 3)),
)
VOLUMES: tuple[list[JSON] | None, ...] = (
    None, None, None, None,
    [{"name": "data", "hostPath": {"path": "/var/data"}}],
    [{"name": "data", "hostPath": {"path": "/mnt/nvme/cache"}}],
    [{"name": "data", "persistentVolumeClaim": {"claimName": "local-0"}}],
    [{"name": "data", "persistentVolumeClaim": {"claimName": "shared-0"}}],
)  # fmt: skip


_CONTAINER_LISTS = st.sampled_from(CONTAINER_LISTS)
_ONE_IN_FOUR = st.integers(0, 3)
_ONE_IN_NINE = st.integers(0, 8)
_GRACE = st.sampled_from([None, None, 30, 0, 10, 15, 110, 600])
_PRIORITY = st.sampled_from([None, None, None, None, "system-node-critical", "low"])
_VOLUMES = st.sampled_from(VOLUMES)


def pod_spec(draw: st.DrawFn, policy: Policy, node_names: tuple[str, ...] = ()) -> JSON:
    pools = _pools(policy)
    spec: JSON = {"containers": [dict(c) for c in draw(_CONTAINER_LISTS)]}
    if draw(_ONE_IN_FOUR) == 0:
        spec["initContainers"] = [{"name": "init", "image": "registry.example/init:1"}]
    if draw(BOOLEANS):
        spec["tolerations"] = draw(pools.toleration_lists)
    selector = draw(pools.node_selectors)
    if selector is not None:
        spec["nodeSelector"] = selector
    if draw(BOOLEANS):
        spec["affinity"] = affinity(draw, policy)
    grace = draw(_GRACE)
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    priority = draw(_PRIORITY)
    if priority is not None:
        spec["priorityClassName"] = priority
    volumes = draw(_VOLUMES)
    if volumes is not None:
        spec["volumes"] = volumes
    if node_names and draw(_ONE_IN_NINE) == 0:
        spec["nodeName"] = draw(st.sampled_from(node_names))
    return spec


def decoded(value: JSON) -> JSON:
    """``value`` as JSON decoding gives it: a tree, no object shared between two places
    (the pools above hand out the same objects; the API server never does)."""
    copied: JSON = orjson.loads(orjson.dumps(value))
    return copied


def pod(draw: st.DrawFn, policy: Policy, node_names: tuple[str, ...] = ()) -> JSON:
    """A Pod as the API server sends it to admission webhooks (drawn with ``draw``)."""
    return decoded(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": pod_metadata(draw, policy),
            "spec": pod_spec(draw, policy, node_names),
        }
    )


def template(draw: st.DrawFn, policy: Policy) -> JSON:
    """A PodTemplateSpec (labels, annotations and a spec)."""
    found: JSON = {"spec": pod_spec(draw, policy)}
    metadata = pod_metadata(draw, policy, template=True)
    if metadata:
        found["metadata"] = metadata
    return found


def pods(policy: Policy, node_names: tuple[str, ...] = ()) -> st.SearchStrategy[JSON]:
    """Pods shaped as the API server sends them, from the policy's spot labels and taints."""
    return st.composite(lambda draw: pod(draw, policy, node_names))()


def templates(policy: Policy) -> st.SearchStrategy[JSON]:
    return st.composite(lambda draw: template(draw, policy))()


def _fill(draw: st.DrawFn, steps: tuple[str, ...], leaf: Callable[[], Any]) -> Any:
    """A value reaching a fresh ``leaf()`` along a template path (``[*]`` lists, ``*`` maps).

    Each position gets its own leaf: decoded JSON never shares objects between positions.
    """
    if not steps:
        return leaf()
    step, rest = steps[0], steps[1:]
    if step == "[*]":
        return [_fill(draw, rest, leaf) for _ in range(draw(_ONE_OR_TWO))]
    if step == "*":
        return {key: _fill(draw, rest, leaf) for key in draw(_REPLICA_NAMES)}
    return {step: _fill(draw, rest, leaf)}


_ONE_OR_TWO = st.integers(1, 2)
_REPLICA_NAMES = st.sampled_from([["Worker"], ["Master", "Worker"]])


def _merge(into: JSON, value: JSON) -> None:
    for key, item in value.items():
        if isinstance(item, dict) and isinstance(into.get(key), dict):
            _merge(into[key], item)
        else:
            into[key] = item


def workload(draw: st.DrawFn, policy: Policy, kind: WorkloadKind | None = None) -> JSON:
    """An object of a kind the policy reviews, with templates at each of its paths."""
    chosen = kind or draw(st.sampled_from([w for w in policy.workloads if w.templates]))
    version = chosen.versions[0] if chosen.versions[0] != "*" else "v1"
    obj: JSON = {
        "apiVersion": f"{chosen.group}/{version}" if chosen.group else version,
        "kind": chosen.kind,
        "metadata": {"name": "run", "namespace": NAMESPACE},
    }
    for location in chosen.templates:

        def leaf(pod_spec_only: bool = location.pod_spec) -> JSON:
            return pod_spec(draw, policy) if pod_spec_only else template(draw, policy)

        _merge(obj, _fill(draw, location.path.steps, leaf))
    return decoded(obj)


def workloads(policy: Policy, kind: WorkloadKind | None = None) -> st.SearchStrategy[JSON]:
    """Objects of every kind the policy reviews (built-ins and its extra kinds)."""
    return st.composite(lambda draw: workload(draw, policy, kind))()


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
        added = draw(_pools(policy).toleration_lists)
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


def json_values(max_leaves: int = 20) -> st.SearchStrategy[Any]:
    """Arbitrary JSON: what a field may hold when nobody checked it."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=8)
    )
    keys = st.sampled_from(["metadata", "spec", "containers", "name", "key", "x"])
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=3)
        ),
        max_leaves=max_leaves,
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
