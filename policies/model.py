"""The compiled policy: an immutable, validated form of the policy document.

Rules read this, never the raw document, so a revision is parsed and checked once when it
is loaded and every review after that only does lookups.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

from policies.paths import TemplatePath
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
    """The rules, registered here and nowhere else: one row each, with the name users see
    in messages (the value), the built-in mode and what the rule does.

    The rest is derived from this table: a rule's key in the policy's ``rules`` block
    (:attr:`key`, the name in camelCase), the loader's keys and the built-in defaults
    (policies.loader), the schema's ``rules`` block (policies.schema), ``spotguard policy
    rules``. So adding a rule is: its row here, its check in its module, its own settings
    (if any) in default_policy.yaml, and its golden cases.
    """

    _value_: str
    default: Mode
    summary: str

    def __new__(cls, name: str, default: str, summary: str) -> Rule:
        member = str.__new__(cls, name)
        member._value_ = name
        member.default = Mode.parse(default)
        member.summary = summary
        return member

    INJECT = (
        "inject", "enforce",
        "give fault-tolerant pods what spot needs: tolerations, spot affinity, the preStop "
        "checkpoint hook, a grace period that fits the notice",
    )  # fmt: skip
    KEEP_OFF_SPOT = (
        "keep-off-spot", "enforce",
        'AND "<spot label> NotIn <spot values>" into the required node affinity of other '
        "pods that could reach a spot node",
    )  # fmt: skip
    SPOT_REQUIRES_FAULT_TOLERANCE = (
        "spot-requires-fault-tolerance", "enforce",
        "reject other pods that tolerate a spot taint or select only spot nodes",
    )  # fmt: skip
    GRACE_PERIOD_FITS_NOTICE = (
        "grace-period-fits-notice", "audit",
        "a fault-tolerant pod's chosen grace period must fit the spot notice window",
    )  # fmt: skip
    CHECKPOINT_FITS_NOTICE = (
        "checkpoint-fits-notice", "audit",
        "a declared checkpoint (spotguard.dev/checkpoint-size) must be savable within the notice",
    )  # fmt: skip
    STATEFUL_WORKLOAD = (
        "stateful-workload", "enforce",
        "pods owned by a StatefulSet (poorCandidates.statefulOwnerKinds) stay off spot",
    )  # fmt: skip
    LATENCY_CRITICAL = (
        "latency-critical", "enforce",
        "latency-critical pods (label, annotation or priority class) stay off spot",
    )  # fmt: skip
    LOCAL_STORAGE = (
        "local-storage", "enforce",
        "pods with a hostPath volume or a claim bound to a local volume stay off spot",
    )  # fmt: skip
    SPOT_NODE_BINDING = (
        "spot-node-binding", "enforce",
        "spec.nodeName or a binding must not put a pod that has to stay off spot on a spot node",
    )  # fmt: skip

    @property
    def key(self) -> str:
        """The rule's key in a policy's ``rules`` block: ``keep-off-spot`` -> ``keepOffSpot``."""
        first, *rest = self.value.split("-")
        return first + "".join(word.capitalize() for word in rest)


#: Taint effects that keep a pod off a node; ``PreferNoSchedule`` only discourages.
BLOCKING_EFFECTS = frozenset({"NoSchedule", "NoExecute"})


@dataclass(frozen=True)
class SpotClass:
    """The spot nodes carrying one spot label value (``key=value``).

    ``taints``: the spot taints every such node is known to carry (policy data: the
    presets' guarantees and ``spotNodes.labels[].taints``). A node carrying two spot label
    values belongs to both classes and carries both classes' taints.
    """

    key: str
    value: str
    taints: tuple[Taint, ...]

    @property
    def always_tainted(self) -> bool:
        """Every node of the class has a taint that keeps untolerating pods off it."""
        return any(taint.effect in BLOCKING_EFFECTS for taint in self.taints)


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

    @property
    def is_empty(self) -> bool:
        """No requirement at all. Kubernetes reads that as "everything"; an opt-in must not."""
        return not self.match_labels and not self.match_expressions

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
class TemplateLocation:
    """Where one kind keeps pod templates, and how spotguard may treat them.

    ``pod_spec``: the path reaches bare pod specs (no metadata), not templates.
    ``mutate``: False where the template is a partial overlay the operator merges over its
    own (injecting there would replace, not add). ``operator_opt_in``: False where the
    kind's operator makes pods from it that are not fault-tolerant (a Ray head).
    """

    path: TemplatePath
    pod_spec: bool = False
    mutate: bool = True
    operator_opt_in: bool = True


@dataclass(frozen=True)
class WorkloadKind:
    """A kind whose pod templates are reviewed, and the webhook rule that routes it here."""

    group: str
    kind: str
    resource: str
    versions: tuple[str, ...]
    operators: tuple[str, ...]
    templates: tuple[TemplateLocation, ...]

    def serves(self, version: str) -> bool:
        return "*" in self.versions or version in self.versions


@dataclass(frozen=True)
class PoorCandidateSettings:
    """What makes a pod a poor spot candidate even when it is labelled fault-tolerant."""

    stateful_owner_kinds: frozenset[str]
    latency_critical_key: str
    latency_critical_priority_classes: frozenset[str]
    host_path: bool
    host_path_exempt_prefixes: tuple[str, ...]


@dataclass(frozen=True)
class ExemptionSettings:
    """Who may create pods that no rule touches, as the API server authenticated them.

    Only ``request.userInfo`` (or cluster state spotguard verified) identifies a DaemonSet
    or mirror pod: ``ownerReferences`` and annotations are written by whoever writes the pod.
    """

    #: Usernames that create DaemonSet pods (the DaemonSet controller). Empty: no exemption.
    daemon_set_pod_creators: frozenset[str]
    #: A mirror pod's creator is ``<node_user_prefix><spec.nodeName>`` in ``node_group``.
    #: An empty prefix disables the mirror-pod exemption.
    node_user_prefix: str
    node_group: str

    def creates_daemon_set_pods(self, username: str) -> bool:
        return username in self.daemon_set_pod_creators

    def is_node_user(self, username: str, groups: frozenset[str], node_name: str) -> bool:
        """Whether the requester is the kubelet of ``node_name`` (a mirror pod's creator)."""
        return (
            bool(self.node_user_prefix and node_name)
            and username == self.node_user_prefix + node_name
            and self.node_group in groups
        )


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
    #: One per distinct spot label value, with the taints its nodes are guaranteed to carry.
    spot_classes: tuple[SpotClass, ...]
    notice_seconds: int
    inject: InjectSettings
    #: Write bandwidth of checkpoint storage, for the checkpoint budget rule.
    checkpoint_write_gbps: float
    #: Selectors of the enabled operator presets (ORed with ``fault_tolerant``).
    operator_selectors: tuple[LabelSelector, ...]
    operator_presets: frozenset[str]
    workloads: tuple[WorkloadKind, ...]
    mutate_templates: bool
    poor_candidates: PoorCandidateSettings
    deny_unknown_nodes: bool
    exemptions: ExemptionSettings
    #: Requesters whose pods/binding requests the registration does not send: schedulers
    #: that place pods by the node affinity and tolerations spotguard already settled.
    trusted_schedulers: frozenset[str] = frozenset()

    def mode_of(self, rule: Rule) -> Mode:
        """A rule's effective mode: its own, capped by the global one."""
        return min(self.rule_modes[rule], self.mode)

    def applies_to_namespace(self, namespace: str) -> bool:
        if namespace in self.exclude_namespaces:
            return False
        return not self.include_namespaces or namespace in self.include_namespaces

    def is_spot_label(self, key: str, value: str) -> bool:
        return any(label.key == key and value in label.values for label in self.spot_labels)

    @cached_property
    def spot_values(self) -> Mapping[str, tuple[str, ...]]:
        """Spot label key -> the values that mark a spot node, in policy order."""
        values: dict[str, tuple[str, ...]] = {}
        for spot_class in self.spot_classes:
            values[spot_class.key] = (*values.get(spot_class.key, ()), spot_class.value)
        return values

    @cached_property
    def _classes(self) -> Mapping[tuple[str, str], SpotClass]:
        return {(c.key, c.value): c for c in self.spot_classes}

    def guaranteed_taints(self, key: str, value: str) -> tuple[Taint, ...]:
        """The taints every node labelled ``key=value`` carries (none if not a spot label)."""
        spot_class = self._classes.get((key, value))
        return spot_class.taints if spot_class else ()

    @cached_property
    def blocking_taints(self) -> Mapping[tuple[str, str], tuple[Taint, ...]]:
        """``(key, value)`` of each spot class whose nodes carry a blocking taint -> those
        taints; the classes missing here have none."""
        return {
            (c.key, c.value): tuple(t for t in c.taints if t.effect in BLOCKING_EFFECTS)
            for c in self.spot_classes
            if c.always_tainted
        }

    @property
    def every_spot_node_tainted(self) -> bool:
        """Every spot node carries a blocking spot taint, so a pod tolerating none of them
        cannot reach spot whatever its affinity (no keep-off-spot affinity is needed)."""
        return all(spot_class.always_tainted for spot_class in self.spot_classes)

    def spot_label_of(self, node_labels: Mapping[str, str]) -> str | None:
        """The first spot label a node carries, as ``key=value``; None for other nodes."""
        for label in self.spot_labels:
            value = node_labels.get(label.key)
            if value is not None and value in label.values:
                return f"{label.key}={value}"
        return None

    def opts_in(self, labels: Mapping[str, str]) -> bool:
        """Whether pod labels declare fault tolerance: the selector or an operator preset.

        An empty selector opts nothing in (the loader refuses one with no preset beside it):
        "every pod is fault-tolerant" is too costly a reading of a forgotten field.
        """
        if not self.fault_tolerant.is_empty and self.fault_tolerant.matches(labels):
            return True
        return any(selector.matches(labels) for selector in self.operator_selectors)

    def workload_kind(self, api_version: str, kind: str) -> WorkloadKind | None:
        """The reviewed kind an object's ``apiVersion``/``kind`` names, if any."""
        group, _, version = api_version.rpartition("/")
        return self.reviewed_kind(group, version, kind)

    def reviewed_kind(self, group: str, version: str, kind: str) -> WorkloadKind | None:
        """The reviewed kind an AdmissionRequest's ``kind`` (group, version, kind) names."""
        for workload in self.workloads:
            if workload.group == group and workload.kind == kind and workload.serves(version):
                return workload
        return None
