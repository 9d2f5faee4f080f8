"""The admission configurations the API-server benchmark compares, and switching between them.

- ``none``: no admission beyond the API server's own plugins (the baseline);
- ``shipped``: spotguard's webhooks as shipped before match conditions (every pod in a
  reviewed namespace goes to both webhooks);
- ``conditions``: spotguard's webhooks with the match conditions rendered for the policy;
- ``map``: a MutatingAdmissionPolicy (in-process CEL) that injects the same tolerations and
  preferred node affinity into labelled training pods, and nothing else.

A stored configuration is not yet one the API server uses: :meth:`Configurations.use`
waits until dry-run canaries come back the way the configuration makes them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controlplane.harness import ControlPlane
from policies.annotations import INJECTED
from policies.model import Policy
from policies.presets import Taint
from testsupport.registration import local_registrations

CONFIGS = ("none", "shipped", "conditions", "map")
MAP_NAME = "spot-training"
FAULT_TOLERANT_LABEL = "spotguard.dev/fault-tolerant"

JSONObject = dict[str, Any]


def _cel_string(value: str) -> str:
    return json.dumps(value)


def _toleration(taint: Taint) -> str:
    fields = [f"key: {_cel_string(taint.key)}", f"effect: {_cel_string(taint.effect)}"]
    if taint.value is None:
        fields.append('operator: "Exists"')
    else:
        fields += ['operator: "Equal"', f"value: {_cel_string(taint.value)}"]
    return "Object.spec.tolerations{" + ", ".join(fields) + "}"


def mutating_admission_policy(policy: Policy, excluded: list[str]) -> list[JSONObject]:
    """A MutatingAdmissionPolicy and its binding: spotguard's tolerations and preferred
    spot affinity for pods labelled fault-tolerant, appended to what the pod has."""
    preferred_type = (
        "Object.spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution"
    )
    terms = []
    for label in policy.spot_labels:
        values = ", ".join(_cel_string(v) for v in label.values)
        expression = (
            f"{preferred_type}.preference.matchExpressions{{key: {_cel_string(label.key)}, "
            f'operator: "In", values: [{values}]}}'
        )
        terms.append(
            f"{preferred_type}{{weight: {policy.inject.affinity.prefer_spot_weight}, "
            f"preference: {preferred_type}.preference{{matchExpressions: [{expression}]}}}}"
        )
    patches: list[str] = []
    for index, taint in enumerate(policy.spot_taints):
        toleration = _toleration(taint)
        first = index == 0
        patches.append(
            f"(has(object.spec.tolerations) || !{str(first).lower()} ? "
            f'[JSONPatch{{op: "add", path: "/spec/tolerations/-", value: {toleration}}}] : '
            f'[JSONPatch{{op: "add", path: "/spec/tolerations", value: [{toleration}]}}])'
        )
    nodes = "Object.spec.affinity.nodeAffinity"
    listed = ", ".join(terms)
    appended = " + ".join(
        f'[JSONPatch{{op: "add", path: "/spec/affinity/nodeAffinity/'
        f'preferredDuringSchedulingIgnoredDuringExecution/-", value: {term}}}]'
        for term in terms
    )
    affinity = (
        "(!has(object.spec.affinity) ? "
        f'[JSONPatch{{op: "add", path: "/spec/affinity", value: Object.spec.affinity{{'
        f"nodeAffinity: {nodes}{{preferredDuringSchedulingIgnoredDuringExecution: "
        f"[{listed}]}}}}}}] : "
        "!has(object.spec.affinity.nodeAffinity) ? "
        f'[JSONPatch{{op: "add", path: "/spec/affinity/nodeAffinity", value: {nodes}{{'
        f"preferredDuringSchedulingIgnoredDuringExecution: [{listed}]}}}}] : "
        "!has(object.spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution) ? "
        f'[JSONPatch{{op: "add", path: "/spec/affinity/nodeAffinity/'
        f'preferredDuringSchedulingIgnoredDuringExecution", value: [{listed}]}}] : '
        f"{appended})"
    )
    expression = " + ".join([*patches, affinity]) if terms else " + ".join(patches)
    labels = "object.metadata.labels"
    selects = (
        f"has({labels}) && {_cel_string(FAULT_TOLERANT_LABEL)} in {labels} && "
        f'{labels}[{_cel_string(FAULT_TOLERANT_LABEL)}] == "true"'
    )
    namespaces = {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": excluded}
        ]
    }
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingAdmissionPolicy",
            "metadata": {"name": MAP_NAME},
            "spec": {
                "failurePolicy": "Ignore",
                "reinvocationPolicy": "IfNeeded",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["pods"],
                        }
                    ],
                    "namespaceSelector": namespaces,
                },
                "matchConditions": [{"name": "fault-tolerant", "expression": selects}],
                "mutations": [{"patchType": "JSONPatch", "jsonPatch": {"expression": expression}}],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingAdmissionPolicyBinding",
            "metadata": {"name": MAP_NAME},
            "spec": {"policyName": MAP_NAME},
        },
    ]


@dataclass
class Configurations:
    """Switches the control plane between :data:`CONFIGS` for one policy and webhook."""

    cluster: ControlPlane
    namespace: str
    webhook_url: str
    ca_bundle_file: Any  # Path of the webhook's CA
    policy: Policy
    reviews: Callable[[], dict[str, float]]  # spotguard's review counters, by webhook

    def _apply(self, items: list[JSONObject]) -> None:
        manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        self.cluster.kubectl("apply", "-f", "-", input=manifest, check=True)

    def _remove_all(self) -> None:
        self.cluster.kubectl(
            "delete", "mutatingwebhookconfiguration,validatingwebhookconfiguration", "spotguard",
            "--ignore-not-found", "--wait=false",
        )  # fmt: skip
        self.cluster.kubectl(
            "delete", "mutatingadmissionpolicybinding,mutatingadmissionpolicy", MAP_NAME,
            "--ignore-not-found", "--wait=false",
        )  # fmt: skip

    def use(self, config: str, timeout: float = 30.0) -> float:
        """Install ``config`` (removing the others); seconds until the API server uses it."""
        started = time.monotonic()
        self._remove_all()
        if config in ("shipped", "conditions"):
            self._apply(
                local_registrations(
                    self.webhook_url,
                    self.ca_bundle_file,
                    self.policy,
                    conditions=config == "conditions",
                )
            )
        elif config == "map":
            excluded = sorted(self.policy.exclude_namespaces)
            self._apply(mutating_admission_policy(self.policy, excluded))
        while time.monotonic() - started < timeout:
            if self._in_use(config):
                return time.monotonic() - started
            time.sleep(0.2)
        raise TimeoutError(f"the API server did not use configuration {config} in {timeout} s")

    def _dry_run(self, pod: JSONObject) -> JSONObject:
        status, body = self.cluster.request(
            "POST", f"/api/v1/namespaces/{self.namespace}/pods?dryRun=All", pod
        )
        if status != 201 or not isinstance(body, dict):
            raise RuntimeError(f"canary pod refused: HTTP {status} {body}")
        return body

    def _in_use(self, config: str) -> bool:
        """Canaries: a training pod (mutated by spotguard, by the policy, or not at all) and
        an ordinary pod (sent to the validating webhook only as shipped)."""
        before = self.reviews()
        trained = self._dry_run(canary_pod(training=True))
        self._dry_run(canary_pod(training=False))
        after = self.reviews()
        annotations = trained["metadata"].get("annotations") or {}
        by_spotguard = INJECTED in annotations
        by_policy = not by_spotguard and bool(
            (trained["spec"].get("affinity") or {}).get("nodeAffinity")
        )
        validated = after.get("validate", 0.0) - before.get("validate", 0.0)
        if config == "none":
            return not by_spotguard and not by_policy and validated == 0
        if config == "map":
            return by_policy and validated == 0
        if config == "shipped":
            return by_spotguard and validated >= 2
        return by_spotguard and validated == 0  # conditions: neither canary is validated


def canary_pod(training: bool) -> JSONObject:
    labels = {FAULT_TOLERANT_LABEL: "true"} if training else {"app": "canary"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "canary-", "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "registry.example/canary:1"}]},
    }
