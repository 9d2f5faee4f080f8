"""The one entry point into the domain: what the API server says about a request in, one
:class:`~policies.verdict.Verdict` out.

Every caller decodes its own input into a :class:`Request`, calls :func:`review` and
phrases the verdict: the webhook (an AdmissionReview response), the CLI (lines of text),
the golden tests (files). Nothing else decides anything. The steps, in order:

1. what the request is about (:class:`~policies.verdict.Subject`): a Pod, a Binding, a
   workload kind the policy lists, or something spotguard does not review;
2. operations that never place a pod (DELETE, CONNECT) are not reviewed;
3. shape: every field the rules read is checked first, and the object's nesting bounded,
   so what cannot be interpreted raises :class:`Malformed` naming the fields, and nothing
   later raises;
4. exemptions, from facts the pod's author cannot write (:mod:`policies.exemptions`): an
   excluded namespace, the requester's authenticated identity, an owner verified in the
   cluster, the kind of the request;
5. the rules: mutation (:func:`~policies.mutate.mutate_pod`,
   :func:`~policies.objects.mutate_object`) within the API's size limits
   (:mod:`policies.growth`), then validation of the object as mutation leaves it, as the
   API server would send it to the validating webhook.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from policies.binding import binding_target, validate_binding
from policies.decisions import (
    NO_CLUSTER_FACTS,
    ClusterFacts,
    MutationDecision,
    ObjectMutation,
    PodContext,
    ValidationDecision,
)
from policies.exemptions import (
    Requester,
    bound_pod_exemption,
    pod_exemption,
    template_exemption,
)
from policies.growth import bounded
from policies.model import Mode, Policy, WorkloadKind
from policies.mutate import mutate_pod
from policies.objects import mutate_object, validate_object
from policies.pods import JSONObject, display_name
from policies.shapes import (
    BINDING,
    MAX_NESTING,
    POD,
    USER_INFO,
    nesting_exceeds,
    problems_of,
)
from policies.validate import validate_pod
from policies.verdict import AuditedChange, MutationVerdict, Phase, Subject, Verdict
from policies.workloads import describe_object, object_shape_problems

__all__ = [
    "GroupVersionKind",
    "Malformed",
    "Operation",
    "Phase",
    "Request",
    "Requester",
    "Subject",
    "Verdict",
    "requester_from_user_info",
    "review",
]


class Operation(enum.StrEnum):
    CREATE = "CREATE"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    CONNECT = "CONNECT"


class GroupVersionKind(NamedTuple):
    """An AdmissionRequest's ``kind``: ``("apps", "v1", "Deployment")``; core group ""."""

    group: str
    version: str
    kind: str

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> GroupVersionKind:
        """The kind an object's own ``apiVersion`` and ``kind`` name."""
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        group, _, version = (api_version if isinstance(api_version, str) else "").rpartition("/")
        return cls(group, version, kind if isinstance(kind, str) else "")

    def __str__(self) -> str:
        return (
            f"{self.group}/{self.version} {self.kind}"
            if self.group
            else f"{self.version} {self.kind}"
        )


POD_KIND = GroupVersionKind("", "v1", "Pod")
BINDING_KIND = GroupVersionKind("", "v1", "Binding")


class Malformed(ValueError):
    """The request cannot be interpreted; ``problems`` name each field (``object.spec: must
    be a mapping``), relative to the AdmissionRequest. The webhook answers HTTP 400."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def requester_from_user_info(user_info: Any) -> Requester | None:
    """The requester an AdmissionRequest's ``userInfo`` names; None when there is none
    (offline). Malformed when it is not shaped like one."""
    if user_info is None:
        return None
    problems = problems_of(user_info, USER_INFO, "userInfo")
    if problems:
        raise Malformed(problems)
    return Requester(str(user_info.get("username") or ""), frozenset(user_info.get("groups") or ()))


@dataclass(frozen=True)
class Request:
    """What the API server says about a request (an AdmissionRequest, decoded).

    ``requester`` is None offline (the CLI, a file): then no identity exempts anything.
    """

    kind: GroupVersionKind
    operation: Operation
    namespace: str
    object: JSONObject | None
    old_object: JSONObject | None = None
    sub_resource: str = ""
    name: str = ""
    requester: Requester | None = None

    @classmethod
    def for_object(
        cls,
        obj: JSONObject,
        *,
        operation: Operation = Operation.CREATE,
        namespace: str | None = None,
        old_object: JSONObject | None = None,
        requester: Requester | None = None,
    ) -> Request:
        """A request about a manifest, as the API server would describe applying it.

        The kind comes from the object; the namespace from ``namespace``, else the
        object's, else ``default``. A Binding is a ``pods/binding`` request for the pod
        it names.
        """
        metadata = obj.get("metadata") if isinstance(obj, dict) else None
        metadata = metadata if isinstance(metadata, dict) else {}
        own_namespace = metadata.get("namespace")
        kind = GroupVersionKind.of(obj) if isinstance(obj, dict) else GroupVersionKind("", "", "")
        binding = kind == BINDING_KIND
        name = metadata.get("name")
        return cls(
            kind=kind,
            operation=operation,
            namespace=namespace
            or (own_namespace if isinstance(own_namespace, str) else "")
            or "default",
            object=obj,
            old_object=old_object,
            sub_resource="binding" if binding else "",
            name=name if binding and isinstance(name, str) else "",
            requester=requester,
        )


def review(
    request: Request,
    policy: Policy,
    facts: ClusterFacts = NO_CLUSTER_FACTS,
    phases: Phase = Phase.BOTH,
) -> Verdict:
    """Decide a request: the one call behind both webhooks, the CLI and the golden tests.

    ``phases`` asks for the mutating webhook's answer, the validating one's, or both (the
    validation then judges the object as mutation leaves it). Raises :class:`Malformed`
    for what cannot be interpreted; any other exception is a bug.
    """
    subject, workload, reason = _subject(request, policy)
    obj = request.object if request.object is not None else request.old_object
    description = _describe(subject, request, obj)
    verdict = Verdict(subject, description, policy.revision, policy.mode)
    if subject is Subject.UNREVIEWED:
        return replace(verdict, exemption=reason)
    if request.operation not in (Operation.CREATE, Operation.UPDATE):
        return replace(verdict, exemption=f"{request.operation} requests are not reviewed")
    _check_shapes(request, subject, policy)
    assert request.object is not None  # _check_shapes made sure
    namespace = request.namespace or _own_namespace(request.object)
    if not policy.applies_to_namespace(namespace):
        return replace(verdict, exemption=f"namespace {namespace or '(none)'} is not reviewed")
    context = PodContext(namespace, request.operation, facts)
    if subject is Subject.POD:
        return _review_pod(verdict, request, context, policy, phases)
    if subject is Subject.WORKLOAD:
        assert workload is not None
        return _review_workload(verdict, request, workload, context, policy, phases=phases)
    return _review_binding(verdict, request, context, policy, phases)


def _subject(request: Request, policy: Policy) -> tuple[Subject, WorkloadKind | None, str]:
    if request.sub_resource == "binding" or request.kind == BINDING_KIND:
        return Subject.BINDING, None, ""
    if request.sub_resource:
        return Subject.UNREVIEWED, None, f"the {request.sub_resource} subresource is not reviewed"
    if request.kind == POD_KIND:
        return Subject.POD, None, ""
    workload = policy.reviewed_kind(*request.kind)
    if workload is not None:
        return Subject.WORKLOAD, workload, ""
    return Subject.UNREVIEWED, None, f"spotguard does not review {request.kind}"


#: Longest name quoted in a description (a Kubernetes name is at most 253 characters).
MAX_DESCRIBED_NAME = 253


def _describe(subject: Subject, request: Request, obj: Any) -> str:
    """``pod web-0``, ``Deployment web``, ... for messages. It runs before the shapes are
    checked (and for DELETE, which is never checked), so it quotes strings only, cut to a
    name's length: a name that is a deeply nested list would break ``str()``."""
    obj = obj if isinstance(obj, dict) else {}
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    names = {
        field: _cut(value)
        for field in ("name", "generateName")
        if isinstance(value := metadata.get(field), str)
    }
    if subject is Subject.POD:
        return f"pod {display_name({'metadata': names})}"
    if subject is Subject.BINDING:
        name = _cut(request.name) or names.get("name")
        target = binding_target(obj)
        return f"binding of pod {name or '(unnamed)'} to node {_cut(target) if target else '?'}"
    if subject is Subject.WORKLOAD:
        kind = obj.get("kind")
        return describe_object(
            {"kind": _cut(kind) if isinstance(kind, str) else "", "metadata": names}
        )
    return f"{request.kind.kind or 'object'} {names.get('name') or '(unnamed)'}"


def _cut(text: str) -> str:
    return text if len(text) <= MAX_DESCRIBED_NAME else text[:MAX_DESCRIBED_NAME] + "..."


def _own_namespace(obj: Mapping[str, Any]) -> str:
    namespace = (obj.get("metadata") or {}).get("namespace")
    return namespace if isinstance(namespace, str) else ""


def _check_shapes(request: Request, subject: Subject, policy: Policy) -> None:
    """Raise Malformed naming every field the rules would read that is not shaped right."""
    problems: list[str] = []
    if request.object is None:
        problems.append(f"object: missing, required for {request.operation}")
    for name, value in (("object", request.object), ("oldObject", request.old_object)):
        if value is None:
            continue
        if not isinstance(value, dict):
            problems.append(f"{name}: must be a mapping")
        elif nesting_exceeds(value):
            problems.append(f"{name}: nested deeper than {MAX_NESTING} levels")
        elif subject is Subject.POD:
            problems += problems_of(value, POD, name)
        elif subject is Subject.BINDING:
            problems += problems_of(value, BINDING, name)
        else:
            found = object_shape_problems(value, policy)
            problems += [name + problem.removeprefix("object") for problem in found]
    if problems:
        raise Malformed(problems)


def _review_pod(
    verdict: Verdict, request: Request, context: PodContext, policy: Policy, phases: Phase
) -> Verdict:
    pod = request.object
    assert pod is not None
    creating = request.operation is Operation.CREATE
    exemption = pod_exemption(
        pod, context.namespace, request.requester, context.cluster, policy, creating=creating
    )
    if exemption:
        return replace(verdict, exemption=exemption)
    mutation = None
    if Phase.MUTATE in phases:
        mutation = bounded(pod, lambda p: _pod_mutation(pod, mutate_pod(pod, context, p)), policy)
    validation = None
    if Phase.VALIDATE in phases:
        judged = mutation.patched if mutation and mutation.patched is not None else pod
        validation = validate_pod(judged, context, policy, request.old_object)
    return replace(verdict, mutation=mutation, validation=validation)


def _pod_mutation(pod: JSONObject, decision: MutationDecision) -> MutationVerdict:
    """The mutating webhook's answer from the pod rules' decision."""
    rules = (decision.rule,) if decision.rule is not None else ()
    if decision.rule is not None and decision.changes and decision.mutated is not None:
        if decision.mode is Mode.ENFORCE:
            return MutationVerdict(
                pod, decision.mutated, decision.changes, rules, (), decision.warnings, decision.mode
            )
        if decision.mode is Mode.AUDIT:
            audited = AuditedChange(decision.rule, decision.changes)
            warnings = (*decision.warnings, audited.warning())
            return MutationVerdict(
                pod, rules=rules, audited=(audited,), warnings=warnings, mode=Mode.AUDIT
            )
    return MutationVerdict(pod, rules=rules, warnings=decision.warnings, mode=decision.mode)


def _review_workload(
    verdict: Verdict,
    request: Request,
    workload: WorkloadKind,
    context: PodContext,
    policy: Policy,
    *,
    phases: Phase,
) -> Verdict:
    obj = request.object
    assert obj is not None
    exemption = template_exemption(workload, policy)
    if exemption:
        return replace(verdict, exemption=exemption)
    old = request.old_object
    mutation = None
    if Phase.MUTATE in phases:
        mutation = bounded(
            obj, lambda p: _workload_mutation(obj, mutate_object(obj, context, p, old), p), policy
        )
    validation = None
    if Phase.VALIDATE in phases:
        judged = mutation.patched if mutation and mutation.patched is not None else obj
        validation = validate_object(judged, context, policy, old)
    return replace(verdict, mutation=mutation, validation=validation)


def _workload_mutation(obj: JSONObject, result: ObjectMutation, policy: Policy) -> MutationVerdict:
    """The mutating webhook's answer from the templates' decisions."""
    audited = tuple(
        AuditedChange(t.decision.rule, t.decision.changes, t.path)
        for t in result.audited
        if t.decision.rule is not None
    )
    enforced = [
        t for t in result.templates if t.decision.mode is Mode.ENFORCE and t.decision.changes
    ]
    rules = tuple(dict.fromkeys(t.decision.rule for t in enforced if t.decision.rule is not None))
    warnings = (*result.warnings, *(a.warning() for a in audited))
    mode = Mode.ENFORCE if result.mutated is not None else Mode.AUDIT if audited else policy.mode
    return MutationVerdict(
        obj, result.mutated, result.changes, rules, audited, warnings, mode, result.templates
    )


def _review_binding(
    verdict: Verdict, request: Request, context: PodContext, policy: Policy, phases: Phase
) -> Verdict:
    binding = request.object
    assert binding is not None
    if Phase.VALIDATE not in phases:  # bindings are never mutated
        return replace(verdict, mutation=MutationVerdict(binding))
    name = request.name or str((binding.get("metadata") or {}).get("name") or "")
    pod = context.cluster.pod(context.namespace, name) if name else None
    if pod is not None:
        problems = problems_of(pod, POD, "pod")
        if problems:
            warning = f"spotguard: stored pod {name} is unreadable ({problems[0]}); not checked"
            return replace(verdict, validation=ValidationDecision(warnings=(warning,)))
        exemption = bound_pod_exemption(pod, context.namespace, context.cluster, policy)
        if exemption:
            return replace(verdict, exemption=exemption)
    validation = validate_binding(binding, pod, context, policy)
    mutation = MutationVerdict(binding) if Phase.MUTATE in phases else None
    return replace(verdict, mutation=mutation, validation=validation)
