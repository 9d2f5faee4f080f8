"""The compiled policy: an immutable, validated form of the policy document.

Rules read this, never the raw document, so a revision is parsed and checked once when it
is loaded and every review after that only does lookups.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from policies.presets import NodeLabel, Taint


class Mode(enum.IntEnum):
    """What a rule does when it matches. Ordered so the global mode can cap a rule's."""

    OFF = 0
    AUDIT = 1
    ENFORCE = 2

    @classmethod
    def parse(cls, text: str) -> Mode:
        return cls[text.upper()]

    def __str__(self) -> str:
        return self.name.lower()


class Rule(enum.StrEnum):
    """The rules a policy can switch; values are the names users see in messages."""

    INJECT = "inject"
    KEEP_OFF_SPOT = "keep-off-spot"
    SPOT_REQUIRES_FAULT_TOLERANCE = "spot-requires-fault-tolerance"
    GRACE_PERIOD_FITS_NOTICE = "grace-period-fits-notice"


@dataclass(frozen=True)
class SelectorRequirement:
    key: str
    operator: str
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        present = self.key in labels and labels[self.key] in self.values
        return present if self.operator == "In" else not present


@dataclass(frozen=True)
class LabelSelector:
    """A Kubernetes label selector (matchLabels AND matchExpressions)."""

    match_labels: tuple[tuple[str, str], ...]
    match_expressions: tuple[SelectorRequirement, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(key) == value for key, value in self.match_labels) and all(
            requirement.matches(labels) for requirement in self.match_expressions
        )

    def describe_opt_in(self) -> str:
        """How a user opts a pod in, for the fix in a denial message."""
        if self.match_labels:
            return "add label " + ", ".join(f"{k}={v}" for k, v in self.match_labels)
        return "match the policy's faultTolerant selector"


@dataclass(frozen=True)
class AffinitySettings:
    prefer_spot_weight: int
    avoid_critical_addons: bool
    critical_addons_label: str
    instance_types: tuple[str, ...]
    instance_type_label: str


@dataclass(frozen=True)
class PreStopSettings:
    enabled: bool
    command: tuple[str, ...]
    containers: frozenset[str]
    replace_existing: bool
    sigterm_reserve_seconds: int


@dataclass(frozen=True)
class CheckpointSettings:
    claim_name: str | None
    mount_path: str
    env: bool


@dataclass(frozen=True)
class InjectSettings:
    tolerations: bool
    affinity: AffinitySettings
    pre_stop: PreStopSettings
    termination_grace_period: bool
    checkpoint: CheckpointSettings


@dataclass(frozen=True)
class Policy:
    """Everything the rules need, resolved: presets expanded, modes capped, defaults applied."""

    revision: str
    mode: Mode
    rule_modes: Mapping[Rule, Mode]
    include_namespaces: frozenset[str]
    exclude_namespaces: frozenset[str]
    fault_tolerant: LabelSelector
    spot_labels: tuple[NodeLabel, ...]
    spot_taints: tuple[Taint, ...]
    notice_seconds: int
    inject: InjectSettings

    def mode_of(self, rule: Rule) -> Mode:
        """A rule's effective mode: its own, capped by the global one."""
        return min(self.rule_modes[rule], self.mode)

    def applies_to_namespace(self, namespace: str) -> bool:
        if namespace in self.exclude_namespaces:
            return False
        return not self.include_namespaces or namespace in self.include_namespaces

    def is_spot_label(self, key: str, value: str) -> bool:
        return any(label.key == key and value in label.values for label in self.spot_labels)
