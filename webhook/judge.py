"""One object judged with the policy and the cluster facts: the CLI's and the audit's one
way into the rules.

Two questions are asked of an object, and both are answered here only:

- :func:`judge_new`: what does ``kubectl apply`` of this new object get? The API server
  applies its defaults (:mod:`webhook.api_defaults`), then chains the webhooks: the
  mutating webhook's patch is applied first and the validating webhook judges the
  patched object, so the answer is that of the validating webhook on the mutating
  webhook's output, worded as the webhooks word it (the denial message kubectl prints,
  its ``Warning:`` lines).
- :func:`judge_stored`: does an object already in the cluster break the policy? Nothing
  is mutated, and no request identity exists: an exemption (DaemonSet pod, static pod)
  counts only where the cluster confirms it (the owner exists with the uid the pod names).

Callers only read :class:`Judgement`; which domain functions produce it is this module's
business.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from policies.binding import validate_binding
from policies.decisions import (
    NO_CLUSTER_FACTS,
    Change,
    ClusterFacts,
    PodContext,
    ValidationDecision,
    Violation,
)
from policies.model import Mode, Policy
from policies.mutate import describe_changes, mutate_pod
from policies.objects import mutate_object, validate_object
from policies.patch import make_patch
from policies.pods import (
    MIRROR_POD_ANNOTATION,
    NODE_AGENT_OWNERS,
    JSONObject,
    display_name,
    shape_problems,
    spec_of,
)
from policies.validate import validate_pod
from policies.workloads import describe_object, object_shape_problems, workload_of
from webhook.admission import MAX_WARNING_LENGTH
from webhook.api_defaults import with_api_defaults

POD, BINDING, WORKLOAD = "pod", "binding", "workload"


@dataclass(frozen=True)
class Judgement:
    """The webhooks' answer for one object, in the words they use."""

    subject: str  # "pod web-0", "Deployment web", as messages name it
    violations: tuple[Violation, ...] = ()
    warnings: tuple[str, ...] = ()
    #: What the mutating webhook patches in (enforce mode).
    changes: tuple[Change, ...] = ()
    #: What it would have patched in, were its rule enforced (audit mode).
    would_inject: tuple[Change, ...] = ()
    #: The object as admitted: after the mutating webhook's patch (None: unchanged).
    admitted: JSONObject | None = None
    patch: tuple[JSONObject, ...] = field(default=())

    @property
    def denials(self) -> tuple[Violation, ...]:
        return tuple(v for v in self.violations if v.mode is Mode.ENFORCE)

    @property
    def denied(self) -> bool:
        return bool(self.denials)

    @property
    def message(self) -> str:
        """The validating webhook's denial message (kubectl prints it); "" when allowed."""
        if not self.denials:
            return ""
        return f"spotguard denied {self.subject}: " + " ".join(v.message() for v in self.denials)


def reviewed_as(obj: Mapping[str, Any], policy: Policy) -> str | None:
    """pod, binding or workload: how the webhooks review this object; None: not at all."""
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if api_version == "v1" and kind == "Pod":
        return POD
    if api_version == "v1" and kind == "Binding":
        return BINDING
    return WORKLOAD if workload_of(obj, policy) is not None else None


def shape_problems_of(obj: Mapping[str, Any], policy: Policy) -> list[str]:
    """What the webhook would answer HTTP 400 for: fields not shaped as the rules read them."""
    as_what = reviewed_as(obj, policy)
    if as_what == POD:
        return shape_problems(obj)
    if as_what == WORKLOAD:
        return object_shape_problems(obj, policy)
    return []


def _short(text: str) -> str:
    if len(text) <= MAX_WARNING_LENGTH:
        return text
    return text[: MAX_WARNING_LENGTH - 3] + "..."


def judge_new(
    obj: JSONObject,
    policy: Policy,
    namespace: str,
    facts: ClusterFacts = NO_CLUSTER_FACTS,
) -> Judgement:
    """The answer to creating ``obj`` in ``namespace`` (``reviewed_as`` must not be None)."""
    context = PodContext(namespace, "CREATE", facts)
    as_what = reviewed_as(obj, policy)
    if as_what == BINDING:
        name = str((obj.get("metadata") or {}).get("name") or "")
        target = (obj.get("target") or {}).get("name", "?")
        pod = facts.pod(namespace, name) if name else None
        decision = validate_binding(obj, pod, context, policy)
        return _judged(f"binding of pod {name} to {target}", decision, Mutated(obj, obj))
    mutated = _mutate_pod(obj, context, policy) if as_what == POD else _mutate(obj, context, policy)
    # The validating webhook sees the patched object with the server's defaults; the
    # patch itself is relative to the manifest (mutation reads no defaulted field).
    admitted = with_api_defaults(mutated.admitted, policy)
    if as_what == POD:
        decision = validate_pod(admitted, context, policy)
        subject = f"pod {display_name(admitted)}"
    else:
        decision = validate_object(admitted, context, policy)
        subject = describe_object(admitted)
    return _judged(subject, decision, mutated)


def judge_stored(obj: JSONObject, policy: Policy, facts: ClusterFacts) -> Judgement:
    """Whether ``obj``, as stored, breaks the policy. A scheduled pod is also checked
    against its node's labels (a pod on a spot node that must stay off spot)."""
    namespace = str((obj.get("metadata") or {}).get("namespace") or "")
    context = PodContext(namespace, "CREATE", facts)
    if reviewed_as(obj, policy) == POD:
        pod = _without_unverified_exemptions(obj, namespace, facts)
        decision = validate_pod(pod, context, policy)
        return _judged(f"pod {display_name(obj)}", decision, Mutated(obj, obj))
    return _judged(describe_object(obj), validate_object(obj, context, policy), Mutated(obj, obj))


@dataclass(frozen=True)
class Mutated:
    """The mutating webhook's part: the object it admits, its warnings, what it changed."""

    received: JSONObject
    admitted: JSONObject
    warnings: tuple[str, ...] = ()
    changes: tuple[Change, ...] = ()
    would_inject: tuple[Change, ...] = ()
    patched: bool = False


def _mutate_pod(pod: JSONObject, context: PodContext, policy: Policy) -> Mutated:
    decision = mutate_pod(pod, context, policy)
    warnings = [_short(w) for w in decision.warnings]
    if not decision.changes or decision.mutated is None:
        return Mutated(pod, pod, tuple(warnings))
    if decision.mode is Mode.AUDIT:
        rule = decision.rule.value if decision.rule else ""
        summary = describe_changes(decision.changes)
        warnings.append(_short(f"spotguard audit [{rule}]: would inject {summary}"))
        return Mutated(pod, pod, tuple(warnings), would_inject=decision.changes)
    return Mutated(pod, decision.mutated, tuple(warnings), decision.changes, patched=True)


def _mutate(obj: JSONObject, context: PodContext, policy: Policy) -> Mutated:
    result = mutate_object(obj, context, policy)
    warnings = [_short(w) for w in result.warnings]
    would: list[Change] = []
    for template in result.audited:
        summary = describe_changes(template.decision.changes)
        warnings.append(_short(f"spotguard audit: would inject {summary} into {template.path}"))
        would += template.decision.changes
    if result.mutated is None:
        return Mutated(obj, obj, tuple(warnings), would_inject=tuple(would))
    return Mutated(obj, result.mutated, tuple(warnings), result.changes, tuple(would), True)


def _judged(subject: str, decision: ValidationDecision, mutated: Mutated) -> Judgement:
    warnings = [
        *mutated.warnings,
        *(_short(w) for w in decision.warnings),
        *(v.short() for v in decision.audited),
    ]
    return Judgement(
        subject=subject,
        violations=decision.violations,
        warnings=tuple(warnings),
        changes=mutated.changes,
        would_inject=mutated.would_inject,
        admitted=mutated.admitted if mutated.patched else None,
        patch=tuple(make_patch(mutated.received, mutated.admitted)) if mutated.patched else (),
    )


def _without_unverified_exemptions(
    pod: JSONObject, namespace: str, facts: ClusterFacts
) -> JSONObject:
    """The pod minus exemption claims the cluster does not confirm.

    Whoever writes a pod writes its ownerReferences and annotations. A DaemonSet owner
    counts only if a DaemonSet of that name exists in the namespace with that uid; the
    mirror-pod annotation only if the pod's owner is its own Node, with the Node's uid.
    """
    metadata = pod.get("metadata") or {}
    owners = metadata.get("ownerReferences") or []
    kept = [
        owner
        for owner in owners
        if owner.get("kind") not in NODE_AGENT_OWNERS
        or _owner_confirmed(owner, str(owner.get("kind")), namespace, facts)
    ]
    annotations = metadata.get("annotations") or {}
    node = spec_of(pod).get("nodeName")
    mirror_confirmed = any(
        owner.get("kind") == "Node"
        and owner.get("name") == node
        and _owner_confirmed(owner, "Node", "", facts)
        for owner in owners
    )
    drop_mirror = MIRROR_POD_ANNOTATION in annotations and not mirror_confirmed
    if len(kept) == len(owners) and not drop_mirror:
        return pod
    new_metadata = {**metadata, "ownerReferences": kept}
    if drop_mirror:
        new_metadata["annotations"] = {
            k: v for k, v in annotations.items() if k != MIRROR_POD_ANNOTATION
        }
    return {**pod, "metadata": new_metadata}


def _owner_confirmed(
    owner: Mapping[str, Any], kind: str, namespace: str, facts: ClusterFacts
) -> bool:
    uid = owner.get("uid")
    name = owner.get("name")
    if not uid or not name:
        return False
    return bool(facts.owner_uid(kind, namespace, str(name)) == uid)
