"""Workload objects: finding their pod templates, and judging a template as the pod it becomes.

Which kinds are reviewed, and where each keeps its templates, is policy data
(``workloads.kinds``); nothing here knows a kind by name. A template is turned into the
pod its controller would create (its labels and annotations, the object's namespace, an
owner reference to the object) so the pod rules run on it unchanged: a DaemonSet's
template is exempt exactly like a DaemonSet's pod, a StatefulSet's template is a stateful
workload exactly like its pods.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from policies.model import Policy, TemplateLocation, WorkloadKind
from policies.paths import Location, locate, render
from policies.pods import JSONObject
from policies.shapes import MAX_PROBLEMS, POD, POD_SPEC, WORKLOAD, problems_of


@dataclass(frozen=True)
class Template:
    """One pod template found in an object."""

    location: Location
    entry: TemplateLocation
    node: JSONObject  # the template (or bare pod spec) inside the object, not a copy
    opted_in: bool  # the kind's operator preset is enabled and applies to this path

    @property
    def path(self) -> str:
        return render(self.location)

    def field(self, pod_field: str) -> str:
        """A field of the template's pod (``spec.tolerations[0]``) as a field of the object."""
        if self.entry.pod_spec and pod_field.startswith("spec."):
            return f"{self.path}.{pod_field.removeprefix('spec.')}"
        return f"{self.path}.{pod_field}"


def api_version_of(obj: Mapping[str, Any]) -> str:
    return str(obj.get("apiVersion") or "")


def describe_object(obj: Mapping[str, Any]) -> str:
    """``Deployment web`` (or ``Job train-*`` while only generateName is set), for messages."""
    metadata = obj.get("metadata") or {}
    name = metadata.get("name") or (
        f"{metadata['generateName']}*" if metadata.get("generateName") else "(unnamed)"
    )
    return f"{obj.get('kind') or 'object'} {name}"


def workload_of(obj: Mapping[str, Any], policy: Policy) -> WorkloadKind | None:
    """The reviewed kind this object is, or None when the policy does not review it."""
    return policy.workload_kind(api_version_of(obj), str(obj.get("kind") or ""))


def templates_of(
    obj: Mapping[str, Any], workload: WorkloadKind, policy: Policy
) -> Iterator[Template]:
    """Every pod template of ``obj``, in the order the policy lists the paths."""
    operator_enabled = any(name in policy.operator_presets for name in workload.operators)
    for entry in workload.templates:
        for location, node in locate(obj, entry.path):
            if isinstance(node, dict):
                yield Template(location, entry, node, operator_enabled and entry.operator_opt_in)


def template_pod(obj: Mapping[str, Any], template: Template, namespace: str) -> JSONObject:
    """The pod the template's controller would create, as far as the rules can tell.

    Labels and annotations come from the template, the namespace from the request, and the
    object becomes the pod's owner. ``generateName`` is the object's name, so messages name
    the pods ("pod train-*") the way the real pods will be named.
    """
    metadata: JSONObject = (
        {} if template.entry.pod_spec else dict(template.node.get("metadata") or {})
    )
    spec = template.node if template.entry.pod_spec else template.node.get("spec")
    obj_metadata = obj.get("metadata") or {}
    name = obj_metadata.get("name") or str(obj_metadata.get("generateName") or "").rstrip("-")
    pod_metadata: JSONObject = {
        "generateName": f"{name}-",
        "namespace": namespace,
        "ownerReferences": [
            {
                "apiVersion": api_version_of(obj),
                "kind": obj.get("kind"),
                "name": name,
                "controller": True,
            }
        ],
    }
    for key in ("labels", "annotations"):
        if metadata.get(key) is not None:
            pod_metadata[key] = metadata[key]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_metadata, "spec": spec or {}}


def object_shape_problems(obj: Any, policy: Policy) -> list[str]:
    """Where a reviewed object, or one of its templates, is not shaped like what the rules
    read, with ``object.``-prefixed paths (``object.spec.template.spec.containers: must be
    a list``). CRDs may preserve unknown fields, so a template may hold anything."""
    if not isinstance(obj, dict):
        return ["object: must be a mapping"]
    workload = workload_of(obj, policy) if isinstance(obj.get("kind"), str) else None
    problems = problems_of(obj, WORKLOAD, "object")
    if workload is None or problems:
        return problems
    for entry in workload.templates:
        for location, node in locate(obj, entry.path):
            shape = POD_SPEC if entry.pod_spec else POD
            problems += problems_of(node, shape, f"object.{render(location)}")
    return problems[:MAX_PROBLEMS]


def webhook_rules(policy: Policy, webhook: str) -> list[JSONObject]:
    """The admissionregistration.k8s.io/v1 ``rules`` that send spotguard what it reviews
    under ``policy``: ``webhook`` is mutate, validate (pods, bindings) or workloads (see
    :func:`policies.conditions.webhook_rules_for`)."""
    from policies.conditions import webhook_rules_for  # noqa: PLC0415 - avoids a cycle
    from policies.relevance import relevance_of  # noqa: PLC0415

    return webhook_rules_for(relevance_of(policy), webhook)
