"""Objects as the API server sends them: pods, templates, workloads of every reviewed kind.

Built from the policy's own spot labels and taints so every rule is reached. Hypothesis
spends tens of microseconds per draw, so the building blocks are enumerated once per
policy (every toleration form, every requirement) and drawn whole.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from hypothesis import strategies as st

from policies.model import Policy, WorkloadKind
from policies.schema import EFFECTS
from tests.strategies.policies import BOOLEANS, JSON

CONTAINER_NAMES = ("trainer", "sidecar", "main")
NAMESPACE = "ml"

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


def toleration_lists(policy: Policy) -> st.SearchStrategy[list[JSON]]:
    """Up to three tolerations (see :func:`tolerations`)."""
    return _pools(policy).toleration_lists


def requirements(policy: Policy) -> st.SearchStrategy[JSON]:
    """A node selector requirement, API-valid, with every operator, often on a spot label."""
    return _pools(policy).requirements


_TERM_SHAPES = st.sampled_from(["expressions", "expressions", "empty", "fields", "both"])
_ONE_TO_THREE = st.integers(1, 3)


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
