"""Hypothesis strategies for pods and workloads that probe what match conditions test.

Every field a condition reads is drawn from values that sit on both sides of its
boundary: label and taint keys of the policy's spot nodes and of other nodes, every
toleration and node-selector operator, empty and missing keys and lists, grace periods
around the notice window, spotguard's own annotations, owners, priority classes and
volumes that make a poor candidate. Names and images stay fixed: nothing reads them.
"""

from __future__ import annotations

from typing import Any, cast

from hypothesis import strategies as st

JSONObject = dict[str, Any]

SPOT_LABEL_KEYS = (
    "eks.amazonaws.com/capacityType",
    "karpenter.sh/capacity-type",
    "cloud.google.com/gke-spot",
    "cloud.google.com/gke-preemptible",
    "kubernetes.azure.com/scalesetpriority",
    "node.kubernetes.io/lifecycle",
    "lifecycle",
    "pool",
)
LABEL_KEYS = (*SPOT_LABEL_KEYS, "node.kubernetes.io/instance-type", "zone", "CriticalAddonsOnly")
LABEL_VALUES = (
    "SPOT",
    "ON_DEMAND",
    "spot",
    "on-demand",
    "true",
    "false",
    "cheap",
    "",
    "g5.xlarge",
    "7",
)
TAINT_KEYS = (
    "kubernetes.azure.com/scalesetpriority",
    "cloud.google.com/gke-spot",
    "spot",
    "pool",
    "CriticalAddonsOnly",
    "node.kubernetes.io/not-ready",
    "",
)
POD_LABELS = (
    ("spotguard.dev/fault-tolerant", ("true", "false", "yes")),
    ("training.kubeflow.org/job-name", ("bert",)),
    ("trainer.kubeflow.org/trainjob-name", ("llm",)),
    ("jobset.sigs.k8s.io/jobset-name", ("js",)),
    ("ray.io/cluster", ("rc",)),
    ("ray.io/node-type", ("worker", "head")),
    ("volcano.sh/job-name", ("vj",)),
    ("team", ("ml", "web", "research")),
    ("tier", ("batch", "gpu")),
    ("spotguard.dev/latency-critical", ("true", "TRUE", "false")),
    ("app", ("web",)),
)
ANNOTATION_KEYS = (
    "spotguard.dev/checkpoint-size",
    "spotguard.dev/prestop-command",
    "spotguard.dev/checkpoint-containers",
    "spotguard.dev/latency-critical",
    "spotguard.dev/injected",
    "spotguard.dev/other",
    "kubernetes.io/config.mirror",
    "example.com/note",
)
ANNOTATION_VALUES = ("16Gi", "500M", "true", "trainer", '["/bin/true"]', "echo hi", "{}", "x")


def record(
    required: dict[str, st.SearchStrategy[Any]],
    optional: dict[str, st.SearchStrategy[Any]] | None = None,
) -> st.SearchStrategy[JSONObject]:
    """A mapping with the ``required`` keys and any of the ``optional`` ones."""
    build: Any = st.fixed_dictionaries  # its stubs reject a mix of value types
    return cast(st.SearchStrategy[JSONObject], build(required, optional=optional or {}))


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


def _mapping(
    keys: st.SearchStrategy[str], values: st.SearchStrategy[Any], max_size: int = 3
) -> st.SearchStrategy[JSONObject]:
    return st.dictionaries(keys, values, max_size=max_size)


pod_labels: st.SearchStrategy[dict[str, str]] = st.lists(
    st.sampled_from(POD_LABELS).flatmap(
        lambda kv: st.tuples(st.just(kv[0]), st.sampled_from(kv[1]))
    ),
    max_size=4,
).map(dict)

pod_annotations: st.SearchStrategy[JSONObject] = _mapping(
    st.sampled_from(ANNOTATION_KEYS), st.sampled_from(ANNOTATION_VALUES)
)

toleration = record(
    {},
    optional={
        "key": st.sampled_from(TAINT_KEYS),
        "operator": st.sampled_from(("Equal", "Exists")),
        "value": st.sampled_from(("spot", "true", "cheap", "")),
        "effect": st.sampled_from(("NoSchedule", "NoExecute", "PreferNoSchedule", "")),
        "tolerationSeconds": st.integers(0, 600),
    },
)

requirement = record(
    {
        "key": st.sampled_from(LABEL_KEYS),
        "operator": st.sampled_from(("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt")),
    },
    optional={"values": st.lists(st.sampled_from(LABEL_VALUES), max_size=3)},
)

term = record(
    {},
    optional={
        "matchExpressions": st.lists(requirement, max_size=3),
        "matchFields": st.lists(
            record(
                {"key": st.just("metadata.name"), "operator": st.sampled_from(("In", "NotIn"))},
                optional={"values": st.lists(st.sampled_from(("spot-1", "od-1")), max_size=2)},
            ),
            max_size=1,
        ),
    },
)

preferred = record(
    {"weight": st.integers(1, 100), "preference": term},
)

node_affinity = record(
    {},
    optional={
        "requiredDuringSchedulingIgnoredDuringExecution": record(
            {"nodeSelectorTerms": st.lists(term, min_size=1, max_size=3)}
        ),
        "preferredDuringSchedulingIgnoredDuringExecution": st.lists(preferred, max_size=2),
    },
)

volume = st.one_of(
    record({"name": st.just("scratch"), "emptyDir": st.just({})}),
    record(
        {
            "name": st.just("host"),
            "hostPath": record({"path": st.sampled_from(("/data", "/mnt/nvme/cache", "/var/log"))}),
        }
    ),
    record(
        {
            "name": st.just("data"),
            "persistentVolumeClaim": record(
                {"claimName": st.sampled_from(("local-data", "shared"))}
            ),
        }
    ),
    record(
        {
            "name": st.just("spotguard-checkpoint"),
            "persistentVolumeClaim": st.just({"claimName": "ckpt"}),
        }
    ),
)

owner = record(
    {
        "apiVersion": st.sampled_from(("apps/v1", "batch/v1", "kubeflow.org/v1")),
        "kind": st.sampled_from(("StatefulSet", "ReplicaSet", "Job", "DaemonSet", "PyTorchJob")),
        "name": st.just("owner"),
        "uid": st.just("00000000-0000-0000-0000-000000000001"),
    },
    optional={"controller": st.booleans()},
)

container = record(
    {
        "name": st.sampled_from(("trainer", "sidecar", "main")),
        "image": st.just("registry.example/app:1"),
    },
    optional={
        "lifecycle": st.just({"preStop": {"exec": {"command": ["/bin/true"]}}}),
        "env": st.lists(
            record(
                {"name": st.sampled_from(("SPOTGUARD_CHECKPOINT_DIR", "X")), "value": st.just("1")}
            ),
            max_size=1,
        ),
    },
)


def _unique_names(containers: list[JSONObject]) -> list[JSONObject]:
    seen: set[str] = set()
    kept = []
    for item in containers:
        if item["name"] not in seen:
            seen.add(item["name"])
            kept.append(item)
    return kept


pod_spec = record(
    {"containers": st.lists(container, min_size=1, max_size=2).map(_unique_names)},
    optional={
        "tolerations": st.lists(toleration, max_size=3),
        "nodeSelector": _mapping(st.sampled_from(LABEL_KEYS), st.sampled_from(LABEL_VALUES), 2),
        "affinity": record({}, optional={"nodeAffinity": node_affinity}),
        "nodeName": st.sampled_from(("spot-1", "od-1", "new-node", "")),
        "terminationGracePeriodSeconds": st.sampled_from((0, 10, 15, 25, 30, 31, 110, 120, 600)),
        "priorityClassName": st.sampled_from(
            ("system-cluster-critical", "system-node-critical", "high", "")
        ),
        "volumes": st.lists(volume, max_size=2).map(
            lambda vs: list({v["name"]: v for v in vs}.values())
        ),
    },
)

metadata = record(
    {"name": st.just("pod-0")},
    optional={
        "labels": pod_labels,
        "annotations": pod_annotations,
        "ownerReferences": st.lists(owner, max_size=2),
    },
)

pods = st.builds(
    lambda meta, spec: {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec},
    metadata,
    pod_spec,
)

template = record(
    {"spec": pod_spec},
    optional={
        "metadata": record({}, optional={"labels": pod_labels, "annotations": pod_annotations})
    },
)


def _with_template_labels(tmpl: JSONObject) -> JSONObject:
    """A Deployment's selector must match its template's labels."""
    tmpl = dict(tmpl)
    meta = dict(tmpl.get("metadata") or {})
    meta["labels"] = {**(meta.get("labels") or {}), "app": "web"}
    tmpl["metadata"] = meta
    return tmpl


deployments = st.builds(
    lambda t: {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": _with_template_labels(t)},
    },
    template,
)

jobs = st.builds(
    lambda t: {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "train"},
        "spec": {"template": t},
    },
    template,
)

pytorchjobs = st.builds(
    lambda replicas: {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": "bert"},
        "spec": {
            "pytorchReplicaSpecs": {
                name: {"replicas": 1, "template": t} for name, t in replicas.items()
            }
        },
    },
    st.dictionaries(st.sampled_from(("Master", "Worker")), template, max_size=2),
)

jobsets = st.builds(
    lambda templates: {
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": {"name": "js"},
        "spec": {
            "replicatedJobs": [
                {"name": f"job{i}", "template": {"spec": {"template": t}}}
                for i, t in enumerate(templates)
            ]
        },
    },
    st.lists(template, max_size=2),
)

#: Any JSON value, for objects whose schema nobody enforces (custom resources).
json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-5, 200),
        st.floats(allow_nan=False, allow_infinity=False, width=32),
        st.sampled_from(("", "spot", "true", "spotguard.dev/x", "SPOT")),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(
            st.sampled_from(
                (
                    "spec",
                    "template",
                    "metadata",
                    "labels",
                    "annotations",
                    "tolerations",
                    "key",
                    "nodeSelector",
                    "affinity",
                    "nodeName",
                    "replicatedJobs",
                    "pytorchReplicaSpecs",
                    "Worker",
                    "values",
                    "operator",
                    "volumes",
                    "ownerReferences",
                    "kind",
                    "x",
                )
            ),
            children,
            max_size=4,
        ),
    ),
    max_leaves=25,
)
