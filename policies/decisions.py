"""What the rules are told about a request and what they answer: plain, transport-free data."""

from __future__ import annotations

from dataclasses import dataclass, field

from policies.model import Mode, Rule
from policies.pods import JSONObject


@dataclass(frozen=True)
class PodContext:
    """The request facts a rule may use besides the pod itself."""

    namespace: str
    operation: str = "CREATE"


@dataclass(frozen=True)
class Change:
    """One injection. ``kind`` is a stable category (for metrics), ``detail`` says what."""

    kind: str
    detail: str


@dataclass(frozen=True)
class MutationDecision:
    """The outcome of the mutating rules for one pod.

    ``mutated`` is the changed copy whenever ``changes`` is non-empty, whatever the mode:
    the transport applies it only in enforce mode and merely reports it in audit mode.
    """

    rule: Rule | None
    mode: Mode
    changes: tuple[Change, ...] = ()
    mutated: JSONObject | None = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Violation:
    """A rule the pod breaks: where, why, and how to fix the manifest."""

    rule: Rule
    mode: Mode
    field: str
    problem: str
    fix: str
    brief: str

    def message(self) -> str:
        return f"[{self.rule.value}] {self.field}: {self.problem}. Fix: {self.fix}."

    def short(self) -> str:
        """A kubectl warning: one line, at most 120 characters; the audit log has the rest."""
        text = f"spotguard {self.mode} [{self.rule.value}]: {self.brief}"
        return text if len(text) <= 120 else text[:117] + "..."


@dataclass(frozen=True)
class ValidationDecision:
    violations: tuple[Violation, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    @property
    def denials(self) -> tuple[Violation, ...]:
        return tuple(v for v in self.violations if v.mode is Mode.ENFORCE)

    @property
    def audited(self) -> tuple[Violation, ...]:
        return tuple(v for v in self.violations if v.mode is Mode.AUDIT)
