"""The audit: every pod and reviewed workload in the cluster, judged with the policy.

The judgement is the webhooks' (:func:`webhook.judge.judge_stored`); what this module adds
is which objects are judged and what is kept of each:

- pods that hold a node (not Succeeded or Failed), including where they run now: a pod
  that must stay off spot but sits on a spot node is a violation;
- workloads the user wrote: a ReplicaSet that a Deployment controls (or a Job of a
  CronJob, a RayCluster of a RayJob) is judged through its owner, not again, so an old
  revision scaled to zero is not reported;
- not the namespaces the policy excludes, nor those labelled ``spotguard.dev/ignore``.

Each object that breaks a rule becomes one :class:`Finding` per rule (``fail`` for an
enforced rule, ``warn`` for an audited one); objects that break none are only counted.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from policies.model import Mode, Policy
from webhook.audit.inventory import PODS, Collection, Inventory
from webhook.judge import Malformed, judge_stored
from webhook.kube_json import JSONObject

FAIL, WARN, ERROR = "fail", "warn", "error"
_TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


class AuditAborted(Exception):
    """The run stopped before the end (this replica is no longer the leader)."""


@dataclass(frozen=True)
class ObjectRef:
    """An object in the cluster, as reports and Events name it."""

    api_version: str
    kind: str
    name: str
    namespace: str
    uid: str


@dataclass(frozen=True)
class Finding:
    """One object breaking one rule."""

    namespace: str
    api_version: str
    kind: str
    name: str
    uid: str
    rule: str
    result: str  # fail | warn | error
    mode: str
    messages: tuple[str, ...]
    #: The uid of the object's controller ("" for none): a Deployment's pod is told
    #: about through its Deployment.
    controller: str

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(self.api_version, self.kind, self.name, self.namespace, self.uid)

    @property
    def message(self) -> str:
        return " ".join(self.messages)

    @property
    def resource(self) -> str:
        group = self.api_version.rpartition("/")[0]
        kind = self.kind.lower()
        return f"{kind}.{group}/{self.name}" if group else f"{kind}/{self.name}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "resource": self.resource,
            "apiVersion": self.api_version,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
            "rule": self.rule,
            "result": self.result,
            "mode": self.mode,
            "message": self.message,
        }


@dataclass
class AuditResult:
    """Findings, and per namespace how many objects were judged and passed."""

    policy_revision: str
    findings: list[Finding] = field(default_factory=list)
    judged: Counter[str] = field(default_factory=Counter)
    passed: Counter[str] = field(default_factory=Counter)
    #: Objects the rules leave alone (exempt), by namespace.
    skipped: Counter[str] = field(default_factory=Counter)
    #: Workload kinds of the policy the cluster does not serve (their CRD is absent).
    not_served: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: Every listed workload by uid, with its controller's uid ("" for none): a small
    #: map (no objects), to find whom a controlled object's finding concerns.
    workloads: dict[str, tuple[ObjectRef, str]] = field(default_factory=dict)

    def subject_of(self, finding: Finding) -> ObjectRef:
        """Whom a finding concerns: the object, or the topmost listed workload above it
        (a ReplicaSet's pod: its Deployment)."""
        subject, uid, seen = finding.ref, finding.controller, set()
        while uid in self.workloads and uid not in seen:
            seen.add(uid)
            subject, uid = self.workloads[uid]
        return subject

    @property
    def namespaces(self) -> list[str]:
        return sorted(self.judged)

    def count(self, result: str) -> int:
        return len({(f.uid, f.kind) for f in self.findings if f.result == result})

    def summary(self) -> str:
        objects = sum(self.judged.values())
        spaces = len(self.judged)
        return (
            f"{objects} objects judged in {spaces} namespace{'s' if spaces != 1 else ''} in "
            f"{self.seconds:.1f} s: {sum(self.passed.values())} pass, {self.count(FAIL)} fail, "
            f"{self.count(WARN)} warn, {self.count(ERROR)} error, "
            f"{sum(self.skipped.values())} skip "
            f"(policy revision {self.policy_revision})"
        )


def run_audit(
    inventory: Inventory,
    policy: Policy,
    keep_going: Callable[[], bool] = lambda: True,
) -> AuditResult:
    """Judge everything the inventory lists; ``keep_going`` is asked between pages."""
    started = time.monotonic()
    result = AuditResult(policy.revision)
    ignored = inventory.ignored_namespaces()
    facts = inventory.facts()
    workloads, missing = inventory.workload_collections(policy)
    result.not_served += missing
    reviewed = {(c.api_version.rpartition("/")[0], c.kind) for c in workloads}
    for collection in [PODS, *workloads]:
        for page in inventory.pages(collection):
            if not keep_going():
                raise AuditAborted
            for obj in page:
                if collection is not PODS:
                    _remember(obj, result)
                if _judged_here(obj, collection, policy, ignored, reviewed):
                    _judge(obj, policy, facts, result)
    result.seconds = time.monotonic() - started
    return result


def _judged_here(
    obj: JSONObject,
    collection: Collection,
    policy: Policy,
    ignored: frozenset[str],
    reviewed: set[tuple[str, str]],
) -> bool:
    namespace = (obj.get("metadata") or {}).get("namespace") or ""
    if namespace in ignored or not policy.applies_to_namespace(namespace):
        return False
    if collection is PODS:
        return (obj.get("status") or {}).get("phase") not in _TERMINAL_PHASES
    return not any(
        (owner.get("apiVersion", "").rpartition("/")[0], owner.get("kind")) in reviewed
        for owner in _controllers(obj)
    )


def _controllers(obj: JSONObject) -> list[JSONObject]:
    owners = (obj.get("metadata") or {}).get("ownerReferences") or []
    return [o for o in owners if isinstance(o, dict) and o.get("controller")]


def _controller_uid(obj: JSONObject) -> str:
    controllers = _controllers(obj)
    return str(controllers[0].get("uid") or "") if controllers else ""


def _remember(obj: JSONObject, result: AuditResult) -> None:
    metadata = obj.get("metadata") or {}
    uid = str(metadata.get("uid") or "")
    ref = ObjectRef(
        obj["apiVersion"], obj["kind"], str(metadata.get("name") or ""),
        str(metadata.get("namespace") or ""), uid,
    )  # fmt: skip
    result.workloads[uid] = (ref, _controller_uid(obj))


def _judge(obj: JSONObject, policy: Policy, facts: Any, result: AuditResult) -> None:
    metadata = obj.get("metadata") or {}
    namespace = str(metadata.get("namespace") or "")
    result.judged[namespace] += 1

    def finding(rule: str, outcome: str, mode: str, messages: tuple[str, ...]) -> Finding:
        return Finding(
            namespace, obj["apiVersion"], obj["kind"], str(metadata.get("name") or ""),
            str(metadata.get("uid") or ""), rule, outcome, mode, messages,
            _controller_uid(obj),
        )  # fmt: skip

    try:
        judgement = judge_stored(obj, policy, facts)
    except Malformed as error:  # a custom resource whose templates the rules cannot read
        result.findings.append(finding("shape", ERROR, "enforce", tuple(error.problems)))
        return
    if not judgement.reviewed:  # exempt (a verified DaemonSet or static pod, ...)
        result.skipped[namespace] += 1
        return
    if not judgement.violations:
        result.passed[namespace] += 1
        return
    by_rule: dict[str, list[Any]] = {}
    for violation in judgement.violations:
        by_rule.setdefault(violation.rule.value, []).append(violation)
    for rule, violations in by_rule.items():
        enforced = any(v.mode is Mode.ENFORCE for v in violations)
        messages = tuple(dict.fromkeys(v.message() for v in violations))
        mode = "enforce" if enforced else "audit"
        result.findings.append(finding(rule, FAIL if enforced else WARN, mode, messages))
