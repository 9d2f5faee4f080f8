"""From a parsed review to a response: decode, ask the domain, phrase its verdict.

This is the only place that knows both the verdict and the wire format; it holds no spot
logic of its own. Each webhook decodes the AdmissionRequest into a
:class:`policies.review.Request`, calls :func:`policies.review.review` for its phase and
phrases the :class:`~policies.verdict.Verdict` as an AdmissionReview response with an
:class:`Outcome` for logs and metrics. The phrasing functions are public so the golden
tests record exactly what the API server would receive.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from policies.decisions import Change, ClusterFacts
from policies.loader import PolicyError, parse_policy_text
from policies.model import Mode, Policy, Rule
from policies.review import (
    GroupVersionKind,
    Malformed,
    Operation,
    Phase,
    Request,
    Subject,
    Verdict,
    requester_from_user_info,
    review,
)
from webhook.cluster import NO_CLUSTER, ClusterAccess
from webhook.review import (
    AdmissionResponse,
    BadReview,
    Review,
    allow,
    denied,
    patched,
)

#: kubectl shows each warning on its own line; longer ones are cut to stay readable.
MAX_WARNING_LENGTH = 120


class Result(enum.StrEnum):
    """How a review ended, as log fields and metric labels say it."""

    ALLOWED = "allowed"
    PATCHED = "patched"
    DENIED = "denied"
    SKIPPED = "skipped"  # not reviewed: exempt, excluded, or not spotguard's business
    ERROR = "error"  # an internal error; admitted unchanged


@dataclass(frozen=True)
class Outcome:
    """What a review decided, in words stable enough for log fields and metric labels."""

    webhook: str
    result: Result
    mode: Mode
    rule: str = ""  # the rules involved, comma-separated
    changes: tuple[Change, ...] = ()
    violations: tuple[str, ...] = field(default=())
    #: (rule, mode) of each violation, for the violations metric.
    rule_modes: tuple[tuple[Rule, Mode], ...] = ()
    exemption: str = ""


def _short(text: str) -> str:
    return text if len(text) <= MAX_WARNING_LENGTH else text[: MAX_WARNING_LENGTH - 3] + "..."


def _rules(rules: tuple[Rule, ...]) -> str:
    return ",".join(rule.value for rule in dict.fromkeys(rules))


def request_of(parsed: Review) -> Request:
    """The domain's view of an AdmissionRequest; BadReview for a malformed ``userInfo``."""
    try:
        requester = requester_from_user_info(parsed.user_info)
    except Malformed as error:
        raise _bad(error) from None
    return Request(
        kind=GroupVersionKind(*parsed.gvk),
        operation=Operation(parsed.operation),
        namespace=parsed.namespace,
        object=parsed.request.get("object"),
        old_object=parsed.old_object,
        sub_resource=parsed.sub_resource,
        name=parsed.name,
        requester=requester,
    )


def _bad(error: Malformed) -> BadReview:
    return BadReview("; ".join(f"request.{problem}" for problem in error.problems))


def mutation_response(verdict: Verdict) -> tuple[AdmissionResponse, Outcome]:
    """The mutating webhook's answer: a patch in enforce mode, warnings in audit mode."""
    mutation = verdict.mutation
    if mutation is None:
        return allow(), Outcome("mutate", Result.SKIPPED, Mode.OFF, exemption=verdict.exemption)
    warnings = [_short(warning) for warning in mutation.warnings]
    if mutation.patched is not None:
        outcome = Outcome(
            "mutate", Result.PATCHED, Mode.ENFORCE, _rules(mutation.rules), mutation.changes
        )
        return patched(mutation.patch(), warnings=warnings), outcome
    if mutation.audited:
        summary = "; ".join(
            f"{audited.where}: {audited.summary}" if audited.where else audited.summary
            for audited in mutation.audited
        )
        audit = {"would-inject": summary, "policy-revision": verdict.revision}
        rules = _rules(tuple(audited.rule for audited in mutation.audited))
        changes = tuple(change for audited in mutation.audited for change in audited.changes)
        outcome = Outcome("mutate", Result.ALLOWED, Mode.AUDIT, rules, changes)
        return allow(warnings=warnings, audit=audit), outcome
    outcome = Outcome("mutate", Result.ALLOWED, mutation.mode, _rules(mutation.rules))
    return allow(warnings=warnings), outcome


def validation_response(verdict: Verdict) -> tuple[AdmissionResponse, Outcome]:
    """The validating webhook's answer: deny enforce-mode violations, warn about audited ones."""
    decision = verdict.validation
    if decision is None:
        outcome = Outcome("validate", Result.SKIPPED, Mode.OFF, exemption=verdict.exemption)
        return allow(), outcome
    warnings = [_short(warning) for warning in verdict.validation_warnings]
    audit = (
        {"would-reject": " | ".join(v.message() for v in decision.audited)}
        if decision.audited
        else None
    )
    texts = tuple(v.message() for v in decision.violations)
    rule_modes = tuple((v.rule, v.mode) for v in decision.violations)
    rules = _rules(tuple(v.rule for v in decision.violations))
    if decision.denials:
        message = f"spotguard denied {verdict.description}: " + " ".join(
            v.message() for v in decision.denials
        )
        outcome = Outcome("validate", Result.DENIED, Mode.ENFORCE, rules, (), texts, rule_modes)
        return denied(message, warnings=warnings, audit=audit), outcome
    mode = Mode.AUDIT if decision.audited else verdict.policy_mode
    outcome = Outcome("validate", Result.ALLOWED, mode, rules, (), texts, rule_modes)
    return allow(warnings=warnings, audit=audit), outcome


class Reviewer:
    """Answers both webhooks; ``cluster`` supplies node labels, stored pods and owners."""

    def __init__(self, cluster: ClusterAccess = NO_CLUSTER) -> None:
        self._cluster = cluster

    @property
    def _facts(self) -> ClusterFacts:
        """The cluster's facts, served from its watch caches (no API call per review)."""
        return self._cluster.facts

    def answer(
        self, request: Request, policy: Policy, phase: Phase
    ) -> tuple[AdmissionResponse, Outcome]:
        """Review ``request`` for one webhook and phrase the verdict; BadReview for a 400."""
        try:
            verdict = review(request, policy, self._facts, phase)
        except Malformed as error:
            raise _bad(error) from None
        return respond(verdict, request, phase)

    def mutate(self, parsed: Review, policy: Policy) -> tuple[AdmissionResponse, Outcome]:
        return self.answer(request_of(parsed), policy, Phase.MUTATE)

    def validate(self, parsed: Review, policy: Policy) -> tuple[AdmissionResponse, Outcome]:
        return self.answer(request_of(parsed), policy, Phase.VALIDATE)


def respond(verdict: Verdict, request: Request, phase: Phase) -> tuple[AdmissionResponse, Outcome]:
    """One webhook's response to a verdict. A kind spotguard does not review reached it
    only through a registration the policy does not match: BadReview (HTTP 400) says so."""
    if verdict.subject is Subject.UNREVIEWED and not request.sub_resource:
        raise BadReview(f"request.kind: {verdict.exemption}")
    if phase is Phase.MUTATE:
        return mutation_response(verdict)
    return validation_response(verdict)


POLICY_KEY = "policy.yaml"


def validate_policy_configmap(parsed: Review, _policy: Policy) -> tuple[AdmissionResponse, Outcome]:
    """Refuse a policy ConfigMap whose document is invalid, before it is stored.

    The server would refuse the revision anyway and keep the last good one; rejecting it
    at ``kubectl apply`` time tells the person editing it, with every bad field's path.
    """
    webhook = "validate-policy"
    if parsed.gvk != ("", "v1", "ConfigMap"):
        raise BadReview("request.kind: /validate-policy reviews v1 ConfigMaps only")
    if parsed.operation not in ("CREATE", "UPDATE"):
        return allow(), Outcome(webhook, Result.SKIPPED, Mode.OFF)
    data = parsed.object.get("data")
    text = data.get(POLICY_KEY) if isinstance(data, dict) else None
    metadata = parsed.object.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    name = name if isinstance(name, str) else "(unnamed)"
    if not isinstance(text, str):
        message = f"spotguard policy ConfigMap {name} has no key {POLICY_KEY}"
        return denied(message), Outcome(webhook, Result.DENIED, Mode.ENFORCE, "policy")
    try:
        loaded = parse_policy_text(text)
    except PolicyError as error:
        message = f"spotguard refused policy ConfigMap {name}: " + "; ".join(error.problems)
        return denied(message), Outcome(webhook, Result.DENIED, Mode.ENFORCE, "policy")
    return allow(), Outcome(webhook, Result.ALLOWED, loaded.mode)
