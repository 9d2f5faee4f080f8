"""One object judged with the policy and the cluster facts: the CLI's and the audit's way
into the domain (:func:`policies.review.review`), phrased by the webhooks' own functions.

Two questions are asked of an object, and both are answered here only:

- :func:`judge_new`: what does ``kubectl apply`` of this new object get? The API server
  applies its defaults (:mod:`webhook.api_defaults`), then chains the webhooks: the
  mutating webhook's patch is applied first and the validating webhook judges the patched
  object (``Phase.BOTH``). The message and warnings are those the webhooks send
  (:func:`webhook.admission.mutation_response`, :func:`~webhook.admission.validation_response`),
  so they are what kubectl prints. There is no requester offline: no identity exempts.
- :func:`judge_stored`: does an object already in the cluster break the policy? Nothing
  is mutated (``Phase.VALIDATE``), a scheduled pod is also judged by the node it runs on,
  and, with no request identity, an exemption counts only where the cluster confirms it:
  a DaemonSet pod whose owner exists with that uid, a static pod's mirror whose owner is
  its own Node, with that Node's uid.

:class:`~policies.review.Malformed` propagates: the caller reports the object invalid.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from policies.decisions import NO_CLUSTER_FACTS, Change, ClusterFacts, Violation
from policies.exemptions import MIRROR_POD_ANNOTATION, bound_pod_exemption, controller_owner
from policies.model import Policy
from policies.pods import JSONObject, annotations_of, spec_of
from policies.review import POD_KIND, GroupVersionKind, Malformed, Phase, Request, review
from policies.verdict import Subject, Verdict
from webhook.admission import mutation_response, validation_response
from webhook.api_defaults import with_api_defaults

__all__ = ["Judgement", "Malformed", "judge_new", "judge_stored"]


@dataclass(frozen=True)
class Judgement:
    """The webhooks' answer for one object, in the words they use."""

    subject: str  # "pod web-0", "Deployment web", as messages name it
    #: Why spotguard leaves the object alone ("" when the rules ran): a kind it does not
    #: review, an excluded namespace, an exemption.
    exempt: str = ""
    violations: tuple[Violation, ...] = ()
    #: Both webhooks' warnings, in the order kubectl prints them.
    warnings: tuple[str, ...] = ()
    #: The validating webhook's denial message ("" when allowed).
    message: str = ""
    #: What the mutating webhook patches in (enforce mode) and would (audit mode).
    changes: tuple[Change, ...] = ()
    would_inject: tuple[Change, ...] = ()
    #: The object as the mutating webhook admits it (None: unchanged), and the patch.
    admitted: JSONObject | None = None
    patch: tuple[JSONObject, ...] = field(default=())
    reviewed: bool = True

    @property
    def denied(self) -> bool:
        return bool(self.message)


def _phrased(verdict: Verdict) -> Judgement:
    if verdict.subject is Subject.UNREVIEWED or (
        verdict.exemption and verdict.mutation is None and verdict.validation is None
    ):
        return Judgement(verdict.description, exempt=verdict.exemption, reviewed=False)
    warnings: list[str] = []
    would: list[Change] = []
    if verdict.mutation is not None and verdict.subject is not Subject.BINDING:
        response, _ = mutation_response(verdict)
        warnings += response.get("warnings", [])
        would += [c for audited in verdict.mutation.audited for c in audited.changes]
    message = ""
    if verdict.validation is not None:
        response, _ = validation_response(verdict)
        warnings += response.get("warnings", [])
        message = "" if response.get("allowed") else response.get("status", {}).get("message", "")
    mutation = verdict.mutation
    return Judgement(
        subject=verdict.description,
        violations=verdict.violations,
        warnings=tuple(warnings),
        message=message,
        changes=mutation.changes if mutation else (),
        would_inject=tuple(would),
        admitted=mutation.patched if mutation else None,
        patch=tuple(mutation.patch()) if mutation else (),
    )


def judge_new(
    obj: JSONObject, policy: Policy, namespace: str, facts: ClusterFacts = NO_CLUSTER_FACTS
) -> Judgement:
    """The answer to creating ``obj`` in ``namespace``; Malformed for what cannot be read."""
    # The decision is taken on the object with the server's defaults, as the webhooks get
    # it; the patch shown is relative to the manifest (mutation reads no defaulted field).
    defaulted = with_api_defaults(obj, policy)
    judgement = _phrased(review(Request.for_object(defaulted, namespace=namespace), policy, facts))
    if defaulted is obj or not judgement.reviewed:
        return judgement
    mutation = review(Request.for_object(obj, namespace=namespace), policy, facts, Phase.MUTATE)
    patched = mutation.mutation.patched if mutation.mutation else None
    patch = tuple(mutation.mutation.patch()) if mutation.mutation else ()
    return replace(judgement, admitted=patched, patch=patch)


def judge_stored(obj: JSONObject, policy: Policy, facts: ClusterFacts) -> Judgement:
    """Whether ``obj``, as stored, breaks the policy; Malformed for what cannot be read."""
    metadata = obj.get("metadata") or {}
    namespace = str(metadata.get("namespace") or "")
    if GroupVersionKind.of(obj) == POD_KIND and isinstance(obj.get("spec"), dict):
        exemption = bound_pod_exemption(obj, namespace, facts, policy) or _verified_mirror(
            obj, facts
        )
        if exemption:
            return Judgement(f"pod {metadata.get('name')}", exempt=exemption, reviewed=False)
    request = Request.for_object(obj, namespace=namespace)
    return _phrased(review(request, policy, facts, Phase.VALIDATE))


def _verified_mirror(pod: Mapping[str, Any], facts: ClusterFacts) -> str:
    """A static pod's mirror, told by what its author cannot write: its controller owner is
    the Node it runs on, with that Node's uid (the kubelet sets both)."""
    if MIRROR_POD_ANNOTATION not in annotations_of(pod):
        return ""
    owner = controller_owner(pod)
    node = spec_of(pod).get("nodeName")
    if (
        owner is None
        or owner.get("kind") != "Node"
        or owner.get("apiVersion") != "v1"
        or not node
        or owner.get("name") != node
        or not owner.get("uid")
        or facts.owner_uid("Node", "", str(node)) != owner.get("uid")
    ):
        return ""
    return f"mirror pod of a static pod on node {node} (owner verified in the cluster)"
