"""What kube-apiserver fills in before the webhooks see an object, where the rules read it.

``kubectl apply`` of a manifest does not send the webhooks the manifest: the API server
first applies its defaults. An offline answer must start from the same object, or it
differs from the webhooks' (seen on the real control plane: a Job whose fault-tolerant
template leaves the grace period unset is warned by the validating webhook that "30s
exceeds the 15s notice window", because the server set 30).

Of the fields the rules read, only ``terminationGracePeriodSeconds`` has an API default
(30, in every PodSpec of the built-in kinds: a Pod and the templates of Deployments,
StatefulSets, ReplicaSets, Jobs and CronJobs). Custom resources get only their CRD's
schema defaults, which spotguard cannot know offline. Admission plugins that run before
the webhooks add nothing the rules read, with one exception left out: a cluster with a
``globalDefault`` PriorityClass gives pods without one its name.
"""

from __future__ import annotations

from typing import Any

from policies.model import Policy
from policies.paths import value_at
from policies.pods import JSONObject, json_copy
from policies.workloads import templates_of, workload_of

DEFAULT_GRACE_SECONDS = 30
#: API groups whose kinds kube-apiserver itself defaults (their PodSpecs included).
BUILT_IN_GROUPS = frozenset({"", "apps", "batch"})


def with_api_defaults(obj: JSONObject, policy: Policy) -> JSONObject:
    """A copy of ``obj`` as the webhooks would receive it (``obj`` itself if no default
    applies)."""
    group = str(obj.get("apiVersion") or "").rpartition("/")[0]
    if group not in BUILT_IN_GROUPS:
        return obj
    if obj.get("kind") == "Pod":
        return _default_spec_of(obj, obj.get("spec"))
    workload = workload_of(obj, policy)
    if workload is None:
        return obj
    copy: JSONObject = json_copy(obj)
    changed = False
    for template in templates_of(copy, workload, policy):
        node: Any = value_at(copy, template.location)
        spec = node if template.entry.pod_spec else (node or {}).get("spec")
        if isinstance(spec, dict) and spec.get("terminationGracePeriodSeconds") is None:
            spec["terminationGracePeriodSeconds"] = DEFAULT_GRACE_SECONDS
            changed = True
    return copy if changed else obj


def _default_spec_of(pod: JSONObject, spec: Any) -> JSONObject:
    if not isinstance(spec, dict) or spec.get("terminationGracePeriodSeconds") is not None:
        return pod
    return {**pod, "spec": {**spec, "terminationGracePeriodSeconds": DEFAULT_GRACE_SECONDS}}
