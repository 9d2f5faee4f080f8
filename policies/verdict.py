"""The verdict: everything spotguard decided about one request, in one value.

:func:`policies.review.review` returns a :class:`Verdict`; the webhook, the CLI and the
golden tests only phrase it (the webhook as an AdmissionReview response, the CLI as lines
of text). So every user-facing sentence is written once, here or in the rules: the
warnings of both phases (audit mode's "would inject" included) and each violation's
message and one-line brief. How the wire carries them (which warning goes in which
field, the 120-character cut, audit annotations) is the transport's business.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from policies.decisions import Change, TemplateMutation, ValidationDecision, Violation
from policies.model import Mode, Rule
from policies.patch import make_patch
from policies.pods import JSONObject


class Subject(enum.Enum):
    """What kind of thing a request is about."""

    POD = "pod"
    BINDING = "binding"  # the pods/binding subresource (or the legacy bindings resource)
    WORKLOAD = "workload"  # a kind whose pod templates the policy lists
    UNREVIEWED = "unreviewed"  # anything else: a kind or subresource spotguard does not review


class Phase(enum.Flag):
    """Which webhook's question to answer; both by default (the CLI, the audit)."""

    MUTATE = enum.auto()
    VALIDATE = enum.auto()
    BOTH = MUTATE | VALIDATE


def describe_changes(changes: tuple[Change, ...]) -> str:
    """One line summarising the kinds of change: ``tolerations, nodeAffinity, preStop``."""
    return ", ".join(dict.fromkeys(change.kind for change in changes))


@dataclass(frozen=True)
class AuditedChange:
    """What a rule in audit mode would have changed, in the pod or in one template."""

    rule: Rule
    changes: tuple[Change, ...]
    where: str = ""  # the template's path in a workload; "" for the pod itself

    @property
    def summary(self) -> str:
        return describe_changes(self.changes)

    def warning(self) -> str:
        place = f" into {self.where}" if self.where else ""
        return f"spotguard audit [{self.rule}]: would inject {self.summary}{place}"


@dataclass(frozen=True)
class MutationVerdict:
    """The mutating webhook's answer.

    ``patched`` is the object with every enforce-mode change (None: nothing to patch);
    ``audited`` is what audit-mode rules would have changed. ``rules`` are the rules that
    decided: for a pod, ``inject`` or ``keep-off-spot`` (whether or not anything was
    missing); for a workload, those whose changes ``patched`` carries. ``warnings`` are
    complete: the rules' own, then one per audited change.
    """

    original: JSONObject
    patched: JSONObject | None = None
    changes: tuple[Change, ...] = ()
    rules: tuple[Rule, ...] = ()
    audited: tuple[AuditedChange, ...] = ()
    warnings: tuple[str, ...] = ()
    mode: Mode = Mode.OFF
    #: Per template, for a workload (each template may be decided differently).
    templates: tuple[TemplateMutation, ...] = ()

    def patch(self) -> list[dict[str, Any]]:
        """The JSON Patch from the object as received to ``patched`` ([] when unchanged)."""
        return make_patch(self.original, self.patched) if self.patched is not None else []


@dataclass(frozen=True)
class Verdict:
    """What spotguard decided about one request.

    ``exemption`` says why no rule applied ("" when the rules ran): an excluded namespace,
    an operation or kind not reviewed, a DaemonSet pod its controller creates, ... A phase
    that was not asked for, or not run because of an exemption, is None.
    """

    subject: Subject
    description: str  # "pod web-0", "Deployment web", "binding of pod web-0 to node n1"
    revision: str  # the policy revision that decided
    policy_mode: Mode  # the policy's global mode
    mutation: MutationVerdict | None = None
    validation: ValidationDecision | None = None
    exemption: str = ""

    @property
    def violations(self) -> tuple[Violation, ...]:
        return self.validation.violations if self.validation else ()

    @property
    def denials(self) -> tuple[Violation, ...]:
        """Violations of rules in enforce mode: the validating webhook denies on these."""
        return self.validation.denials if self.validation else ()

    @property
    def allowed(self) -> bool:
        return not self.denials

    @property
    def rules(self) -> tuple[Rule, ...]:
        """Every rule that changed something, would have, or found a violation."""
        found: list[Rule] = []
        if self.mutation is not None:
            found += self.mutation.rules
            found += [audited.rule for audited in self.mutation.audited]
        found += [violation.rule for violation in self.violations]
        return tuple(dict.fromkeys(found))

    @property
    def mutation_warnings(self) -> tuple[str, ...]:
        return self.mutation.warnings if self.mutation else ()

    @property
    def validation_warnings(self) -> tuple[str, ...]:
        """The validating rules' warnings, then each audit-mode violation's one-liner."""
        if self.validation is None:
            return ()
        return (*self.validation.warnings, *(v.short() for v in self.validation.audited))
