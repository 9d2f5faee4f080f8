"""From a parsed review to a response: calls the pure rules and phrases their decision.

This is the only place that knows both the rules' decisions and the wire format; it holds
no spot logic of its own. Each handler also returns an :class:`Outcome` for logs/metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from policies.decisions import Change, PodContext
from policies.model import Mode, Policy
from policies.mutate import describe_changes, mutate_pod
from policies.patch import make_patch
from policies.pods import display_name
from policies.validate import validate_pod
from webhook.review import AdmissionResponse, Review, allow, denied, patched

#: kubectl shows each warning on its own line; longer ones are cut to stay readable.
MAX_WARNING_LENGTH = 120


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


def _context(review: Review) -> PodContext:
    return PodContext(namespace=review.namespace, operation=review.operation)


def _short(text: str) -> str:
    return text if len(text) <= MAX_WARNING_LENGTH else text[: MAX_WARNING_LENGTH - 3] + "..."


def mutate(review: Review, policy: Policy) -> tuple[AdmissionResponse, Outcome]:
    """Answer the mutating webhook: a patch in enforce mode, a warning in audit mode."""
    if review.request.get("subResource"):
        return allow(), Outcome("mutate", "skipped", "off")
    decision = mutate_pod(review.pod, _context(review), policy)
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


def validate(review: Review, policy: Policy) -> tuple[AdmissionResponse, Outcome]:
    """Answer the validating webhook: deny enforce violations, warn about audited ones."""
    if review.request.get("subResource"):
        return allow(), Outcome("validate", "skipped", "off")
    decision = validate_pod(review.pod, _context(review), policy, review.old_pod)
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
        message = f"spotguard denied pod {display_name(review.pod)}: " + " ".join(
            v.message() for v in decision.denials
        )
        outcome = Outcome("validate", "denied", "enforce", rules, (), texts, rule_modes)
        return denied(message, warnings=warnings, audit=audit), outcome
    mode = "audit" if decision.audited else str(policy.mode)
    outcome = Outcome("validate", "allowed", mode, rules, (), texts, rule_modes)
    return allow(warnings=warnings, audit=audit), outcome
