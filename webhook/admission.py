"""From a parsed review to a response: calls the pure rules and phrases their decision.

This is the only place that knows both the rules' decisions and the wire format; it holds
no spot logic of its own. It routes each review by what it is about: a Pod, a Binding of
a pod to a node (the ``pods/binding`` subresource), or a workload whose pod templates the
policy lists (Deployment, Job, PyTorchJob, ...). Each answer comes with an
:class:`Outcome` for logs and metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from policies.binding import validate_binding
from policies.decisions import Change, PodContext, ValidationDecision
from policies.loader import PolicyError, parse_policy_text
from policies.model import Mode, Policy
from policies.mutate import describe_changes, mutate_pod
from policies.objects import mutate_object, validate_object
from policies.patch import make_patch
from policies.pods import display_name
from policies.validate import validate_pod
from policies.workloads import describe_object, object_shape_problems
from webhook.cluster import NO_CLUSTER, ClusterAccess
from webhook.review import (
    AdmissionResponse,
    BadReview,
    Review,
    allow,
    check_pod_shape,
    denied,
    patched,
)

#: kubectl shows each warning on its own line; longer ones are cut to stay readable.
MAX_WARNING_LENGTH = 120
POD = ("", "v1", "Pod")


@dataclass(frozen=True)
class Outcome:
    """What a review decided, in words stable enough for log fields and metric labels."""

    webhook: str
    result: str  # allowed | patched | denied | skipped | error
    mode: str
    rule: str = ""
    changes: tuple[Change, ...] = ()
    violations: tuple[str, ...] = field(default=())
    #: (rule, mode) of each violation, for the violations metric.
    rule_modes: tuple[tuple[str, str], ...] = ()


def _short(text: str) -> str:
    return text if len(text) <= MAX_WARNING_LENGTH else text[: MAX_WARNING_LENGTH - 3] + "..."


class Reviewer:
    """Answers both webhooks; ``cluster`` supplies node labels and Binding pods."""

    def __init__(self, cluster: ClusterAccess = NO_CLUSTER) -> None:
        self._cluster = cluster

    def _context(self, review: Review) -> PodContext:
        return PodContext(review.namespace, review.operation, self._cluster.facts)

    def _kind_of(self, review: Review, policy: Policy) -> str:
        """pod | binding | workload; BadReview for what spotguard does not review."""
        if review.gvk == POD and not review.sub_resource:
            check_pod_shape(review)
            return "pod"
        if review.sub_resource == "binding" or review.gvk == ("", "v1", "Binding"):
            return "binding"
        if review.sub_resource:
            return "other"
        group, version, kind = review.gvk
        if policy.reviewed_kind(group, version, kind) is None:
            name = f"{group}/{version}" if group else version
            raise BadReview(f"request.kind: spotguard does not review {name} {kind}")
        for field_name in ("object", "oldObject"):
            problems = object_shape_problems(review.request.get(field_name), policy)
            if problems and review.request.get(field_name) is not None:
                prefix = f"request.{field_name}"
                raise BadReview("; ".join(prefix + p.removeprefix("object") for p in problems))
        return "workload"

    def mutate(self, review: Review, policy: Policy) -> tuple[AdmissionResponse, Outcome]:
        """A patch in enforce mode, a warning in audit mode."""
        kind = self._kind_of(review, policy)
        if kind == "workload":
            return self._mutate_workload(review, policy)
        if kind != "pod":
            return allow(), Outcome("mutate", "skipped", "off")
        decision = mutate_pod(review.pod, self._context(review), policy)
        rule = decision.rule.value if decision.rule else ""
        warnings = [_short(w) for w in decision.warnings]
        if not decision.changes or decision.mutated is None:
            return allow(warnings=warnings), Outcome("mutate", "allowed", str(decision.mode), rule)
        summary = describe_changes(decision.changes)
        if decision.mode is Mode.AUDIT:
            warnings.append(_short(f"spotguard audit [{rule}]: would inject {summary}"))
            audit = {"would-inject": summary, "policy-revision": policy.revision}
            response = allow(warnings=warnings, audit=audit)
            return response, Outcome("mutate", "allowed", "audit", rule, decision.changes)
        patch = make_patch(review.pod, decision.mutated)
        outcome = Outcome("mutate", "patched", "enforce", rule, decision.changes)
        return patched(patch, warnings=warnings), outcome

    def _mutate_workload(self, review: Review, policy: Policy) -> tuple[AdmissionResponse, Outcome]:
        result = mutate_object(review.pod, self._context(review), policy, review.old_pod)
        warnings = [_short(w) for w in result.warnings]
        audited = [
            t for t in result.templates if t.decision.mode is Mode.AUDIT and t.decision.changes
        ]
        for template in audited:
            summary = describe_changes(template.decision.changes)
            warnings.append(_short(f"spotguard audit: would inject {summary} into {template.path}"))
        if result.mutated is None:
            mode = "audit" if audited else str(policy.mode)
            return allow(warnings=warnings), Outcome("mutate", "allowed", mode)
        patch = make_patch(review.pod, result.mutated)
        return patched(patch, warnings=warnings), Outcome(
            "mutate", "patched", "enforce", "inject", result.changes
        )

    def validate(self, review: Review, policy: Policy) -> tuple[AdmissionResponse, Outcome]:
        """Deny enforce-mode violations, warn about audited ones."""
        kind = self._kind_of(review, policy)
        context = self._context(review)
        subject = f"pod {display_name(review.pod)}"
        if kind == "pod":
            decision = validate_pod(review.pod, context, policy, review.old_pod)
        elif kind == "workload":
            decision = validate_object(review.pod, context, policy, review.old_pod)
            subject = describe_object(review.pod)
        elif kind == "binding":
            decision, subject = self._validate_binding(review, policy, context)
        else:
            return allow(), Outcome("validate", "skipped", "off")
        return _phrase(decision, subject, policy)

    def _validate_binding(
        self, review: Review, policy: Policy, context: PodContext
    ) -> tuple[ValidationDecision, str]:
        binding = review.pod
        name = review.request.get("name") or (binding.get("metadata") or {}).get("name") or ""
        pod = self._cluster.get_pod(review.namespace, name) if name else None
        target = (binding.get("target") or {}).get("name", "?")
        return validate_binding(binding, pod, context, policy), f"binding of pod {name} to {target}"


POLICY_KEY = "policy.yaml"


def validate_policy_configmap(review: Review, _policy: Policy) -> tuple[AdmissionResponse, Outcome]:
    """Refuse a policy ConfigMap whose document is invalid, before it is stored.

    The server would refuse the revision anyway and keep the last good one; rejecting it
    at ``kubectl apply`` time tells the person editing it, with every bad field's path.
    """
    if review.gvk != ("", "v1", "ConfigMap"):
        raise BadReview("request.kind: /validate-policy reviews v1 ConfigMaps only")
    if review.operation not in ("CREATE", "UPDATE"):
        return allow(), Outcome("validate-policy", "skipped", "off")
    data = review.pod.get("data") or {}
    text = data.get(POLICY_KEY) if isinstance(data, dict) else None
    name = (review.pod.get("metadata") or {}).get("name", "(unnamed)")
    if not isinstance(text, str):
        message = f"spotguard policy ConfigMap {name} has no key {POLICY_KEY}"
        return denied(message), Outcome("validate-policy", "denied", "enforce", "policy")
    try:
        parsed = parse_policy_text(text)
    except PolicyError as error:
        message = f"spotguard refused policy ConfigMap {name}: " + "; ".join(error.problems)
        return denied(message), Outcome("validate-policy", "denied", "enforce", "policy")
    return allow(), Outcome("validate-policy", "allowed", str(parsed.mode))


def _phrase(
    decision: ValidationDecision, subject: str, policy: Policy
) -> tuple[AdmissionResponse, Outcome]:
    warnings = [_short(w) for w in decision.warnings] + [v.short() for v in decision.audited]
    audit = (
        {"would-reject": " | ".join(v.message() for v in decision.audited)}
        if decision.audited
        else None
    )
    texts = tuple(v.message() for v in decision.violations)
    rule_modes = tuple((v.rule.value, str(v.mode)) for v in decision.violations)
    rules = ",".join(dict.fromkeys(v.rule.value for v in decision.violations))
    if decision.denials:
        message = f"spotguard denied {subject}: " + " ".join(v.message() for v in decision.denials)
        outcome = Outcome("validate", "denied", "enforce", rules, (), texts, rule_modes)
        return denied(message, warnings=warnings, audit=audit), outcome
    mode = "audit" if decision.audited else str(policy.mode)
    outcome = Outcome("validate", "allowed", mode, rules, (), texts, rule_modes)
    return allow(warnings=warnings, audit=audit), outcome
