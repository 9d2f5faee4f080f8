"""Which admission reviews can matter under a policy: the facts a registration must test.

Every review the API server sends costs it more CPU than spotguard spends answering, and
most pods in a cluster are not training pods. :class:`Relevance` says, from the compiled
policy, which requests can get a patch, a denial or a warning, in terms the API server
can test before calling (namespaces, labels, tolerations, selectors, annotations, the
requester): :mod:`policies.conditions` turns it into CEL match conditions.

It is also what a live registration promises: rendered into the registration as an
annotation, it lets the server check that the registration in the cluster still sends
every review its policy needs (:func:`missing_coverage`). Each field therefore has an
order: a registration built from a *larger* relevance sends a superset of the reviews.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from policies.model import LabelSelector, Mode, Policy, Rule

#: Bump when the meaning of a field changes; a registration of another format is not
#: trusted to cover anything (it must be rendered again).
FORMAT = 1

#: Mutation of pods that are not fault-tolerant: never (or only ones denied anyway), only
#: those that may tolerate a spot taint (every spot node is tainted), or all of them (some
#: spot node is not).
MUTATE_OTHERS_ORDER = ("none", "tolerating", "all")

#: Annotations under this prefix steer spotguard (checkpoint size, hook command, ...),
#: except its own record of what it mutated (policies.annotations.INJECTED).
STEERING_PREFIX = "spotguard.dev/"
#: The default scheduler: it places pods by the affinity spotguard added and the
#: tolerations it checked, so its bindings need no second look (see README).
DEFAULT_SCHEDULER = "system:kube-scheduler"


@dataclass(frozen=True)
class Selector:
    """A label selector as plain data: ``match_labels`` ANDed with ``match_expressions``."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()

    @classmethod
    def of(cls, selector: LabelSelector) -> Selector:
        return cls(
            tuple(sorted(selector.match_labels)),
            tuple(
                sorted(
                    (r.key, r.operator, tuple(sorted(r.values))) for r in selector.match_expressions
                )
            ),
        )


@dataclass(frozen=True)
class TemplateScope:
    """One template path of a reviewed kind, and how its pods are judged."""

    path: str
    pod_spec: bool = False
    opted_in: bool = False  # an operator preset makes its pods fault-tolerant
    mutate: bool = True


@dataclass(frozen=True)
class KindScope:
    group: str
    kind: str
    resource: str
    versions: tuple[str, ...]
    templates: tuple[TemplateScope, ...]


@dataclass(frozen=True)
class PoorScope:
    """What can make a fault-tolerant pod a poor spot candidate (each rule not off)."""

    owner_kinds: tuple[str, ...] = ()
    latency_keys: tuple[str, ...] = ()  # label or annotation
    priority_classes: tuple[str, ...] = ()
    host_path: bool = False
    claims: bool = False  # persistent or ephemeral volume claims (maybe local volumes)

    @property
    def empty(self) -> bool:
        return self == PoorScope()


@dataclass(frozen=True)
class Relevance:
    """The facts that decide whether a review can matter; see the module docstring."""

    exclude_namespaces: tuple[str, ...] = ()
    include_namespaces: tuple[str, ...] = ()  # empty: every namespace not excluded
    #: Pods matching any of these are fault-tolerant (empty: none is).
    fault_tolerant: tuple[Selector, ...] = ()
    # -- mutating webhook --------------------------------------------------------------
    mutate_fault_tolerant: bool = False
    mutate_others: str = "none"  # one of MUTATE_OTHERS_ORDER
    mutate_templates: bool = False
    # -- validating webhook ------------------------------------------------------------
    #: Pods that must stay off spot are checked when they tolerate a taint with one of
    #: these keys, or select a node by one of these labels.
    spot_taint_keys: tuple[str, ...] = ()
    spot_labels: tuple[tuple[str, tuple[str, ...]], ...] = ()
    check_others: bool = False  # spot-requires-fault-tolerance is not off
    poor: PoorScope = field(default_factory=PoorScope)
    grace_above_seconds: int | None = None  # grace-period-fits-notice is not off
    steering_annotations: bool = False
    node_name: bool = False  # spec.nodeName on a spot node is checked
    bindings: bool = False
    trusted_schedulers: tuple[str, ...] = ()
    kinds: tuple[KindScope, ...] = ()
    format: int = FORMAT

    @property
    def anything(self) -> bool:
        """Whether any review can matter at all (a policy in mode ``off`` needs none)."""
        return self != Relevance(format=self.format)

    @property
    def spot_label_keys(self) -> tuple[str, ...]:
        return tuple(key for key, _ in self.spot_labels)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Relevance:
        """Parse what :meth:`to_json` wrote; ValueError if it is not that."""
        try:
            data = json.loads(text)
            return _relevance_from_data(data)
        except (TypeError, KeyError, AttributeError, ValueError) as error:
            raise ValueError(f"not a spotguard relevance record: {error}") from None


def _relevance_from_data(data: dict[str, Any]) -> Relevance:
    def strings(key: str) -> tuple[str, ...]:
        return tuple(str(v) for v in data[key])

    poor = data["poor"]
    return Relevance(
        exclude_namespaces=strings("exclude_namespaces"),
        include_namespaces=strings("include_namespaces"),
        fault_tolerant=tuple(
            Selector(
                tuple((k, v) for k, v in s["match_labels"]),
                tuple((k, op, tuple(vs)) for k, op, vs in s["match_expressions"]),
            )
            for s in data["fault_tolerant"]
        ),
        mutate_fault_tolerant=bool(data["mutate_fault_tolerant"]),
        mutate_others=str(data["mutate_others"]),
        mutate_templates=bool(data["mutate_templates"]),
        spot_taint_keys=strings("spot_taint_keys"),
        spot_labels=tuple((k, tuple(vs)) for k, vs in data["spot_labels"]),
        check_others=bool(data["check_others"]),
        poor=PoorScope(
            owner_kinds=tuple(poor["owner_kinds"]),
            latency_keys=tuple(poor["latency_keys"]),
            priority_classes=tuple(poor["priority_classes"]),
            host_path=bool(poor["host_path"]),
            claims=bool(poor["claims"]),
        ),
        grace_above_seconds=data["grace_above_seconds"],
        steering_annotations=bool(data["steering_annotations"]),
        node_name=bool(data["node_name"]),
        bindings=bool(data["bindings"]),
        trusted_schedulers=strings("trusted_schedulers"),
        kinds=tuple(
            KindScope(
                k["group"],
                k["kind"],
                k["resource"],
                tuple(k["versions"]),
                tuple(TemplateScope(**t) for t in k["templates"]),
            )
            for k in data["kinds"]
        ),
        format=int(data["format"]),
    )


# -- from a policy -------------------------------------------------------------------------


def keep_off_spot_mutates_every_pod(policy: Policy) -> bool:
    """Whether the keep-off-spot rule may patch any pod that is not fault-tolerant.

    It ANDs ``<spot label> NotIn <spot values>`` only into pods that can reach a spot node
    (the placement model). Where some spot node carries no blocking taint (EKS, Karpenter,
    GKE Standard), that is nearly every pod, so every one is sent; where every spot node
    is tainted (AKS), only a pod tolerating a spot taint can reach one, so only those.
    """
    return not policy.every_spot_node_tainted


def keep_off_spot_is_moot(policy: Policy) -> bool:
    """Whether whatever the keep-off-spot rule would do to a pod, spot-requires-fault-
    tolerance does at least as strongly, so the mutating webhook need not see pods that
    are not fault-tolerant at all.

    Where every spot node is tainted, a pod that is not fault-tolerant reaches spot only
    by tolerating a blocking spot taint, and spot-requires-fault-tolerance judges exactly
    such a toleration a violation: enforced, it denies the pod that keep-off-spot would
    patch; audited, it reports the pod keep-off-spot would report. The validating webhook
    judges the pod as the API server will store it, so it still sees every one.
    """
    check = policy.mode_of(Rule.SPOT_REQUIRES_FAULT_TOLERANCE)
    return (
        policy.every_spot_node_tainted
        and check is not Mode.OFF
        and check >= policy.mode_of(Rule.KEEP_OFF_SPOT)
    )


def _on(policy: Policy, *rules: Rule) -> bool:
    return any(policy.mode_of(rule) is not Mode.OFF for rule in rules)


def relevance_of(policy: Policy) -> Relevance:
    """What can matter under ``policy`` (modes only remove: audit matters like enforce)."""
    if policy.mode is Mode.OFF:
        return Relevance()
    poor_settings = policy.poor_candidates
    poor = PoorScope(
        owner_kinds=tuple(sorted(poor_settings.stateful_owner_kinds))
        if _on(policy, Rule.STATEFUL_WORKLOAD)
        else (),
        latency_keys=(poor_settings.latency_critical_key,)
        if _on(policy, Rule.LATENCY_CRITICAL)
        else (),
        priority_classes=tuple(sorted(poor_settings.latency_critical_priority_classes))
        if _on(policy, Rule.LATENCY_CRITICAL)
        else (),
        host_path=_on(policy, Rule.LOCAL_STORAGE) and poor_settings.host_path,
        claims=_on(policy, Rule.LOCAL_STORAGE),
    )
    selectors = list(policy.operator_selectors)
    if not policy.fault_tolerant.is_empty:
        selectors.insert(0, policy.fault_tolerant)
    others = "none"
    if _on(policy, Rule.KEEP_OFF_SPOT):
        if keep_off_spot_mutates_every_pod(policy):
            others = "all"
        elif not keep_off_spot_is_moot(policy):
            others = "tolerating"
    return Relevance(
        exclude_namespaces=tuple(sorted(policy.exclude_namespaces)),
        include_namespaces=tuple(sorted(policy.include_namespaces)),
        fault_tolerant=tuple(dict.fromkeys(Selector.of(s) for s in selectors)),
        mutate_fault_tolerant=True,
        mutate_others=others,
        mutate_templates=policy.mutate_templates,
        spot_taint_keys=_spot_taint_keys(policy),
        spot_labels=_spot_labels(policy),
        check_others=_on(policy, Rule.SPOT_REQUIRES_FAULT_TOLERANCE),
        poor=poor,
        grace_above_seconds=policy.notice_seconds
        if _on(policy, Rule.GRACE_PERIOD_FITS_NOTICE)
        else None,
        steering_annotations=True,
        node_name=_on(policy, Rule.SPOT_NODE_BINDING),
        bindings=_on(policy, Rule.SPOT_NODE_BINDING),
        trusted_schedulers=tuple(sorted(policy.trusted_schedulers)),
        kinds=_kinds(policy),
    )


def _spot_taint_keys(policy: Policy) -> tuple[str, ...]:
    """Keys of every spot taint: the policy's and those its spot classes guarantee."""
    keys = {taint.key for taint in policy.spot_taints}
    keys |= {taint.key for spot_class in policy.spot_classes for taint in spot_class.taints}
    return tuple(sorted(keys))


def _spot_labels(policy: Policy) -> tuple[tuple[str, tuple[str, ...]], ...]:
    values: dict[str, set[str]] = {}
    for label in policy.spot_labels:
        values.setdefault(label.key, set()).update(label.values)
    return tuple((key, tuple(sorted(values[key]))) for key in sorted(values))


def _kinds(policy: Policy) -> tuple[KindScope, ...]:
    kinds: list[KindScope] = []
    for workload in policy.workloads:
        if not workload.templates:
            continue
        opted = any(name in policy.operator_presets for name in workload.operators)
        kinds.append(
            KindScope(
                group=workload.group,
                kind=workload.kind,
                resource=workload.resource,
                versions=workload.versions,
                templates=tuple(
                    TemplateScope(
                        path=entry.path.text,
                        pod_spec=entry.pod_spec,
                        opted_in=opted and entry.operator_opt_in,
                        mutate=entry.mutate,
                    )
                    for entry in workload.templates
                ),
            )
        )
    return tuple(kinds)


# -- coverage ------------------------------------------------------------------------------


def for_webhook(relevance: Relevance, webhook: str) -> Relevance:
    """The part of ``relevance`` one webhook's conditions test (``mutate`` or ``validate``):
    each configuration is rendered, applied and so checked on its own."""
    if webhook == "mutate":
        return replace(
            relevance,
            spot_taint_keys=relevance.spot_taint_keys
            if relevance.mutate_others == "tolerating"
            else (),
            spot_labels=(),
            check_others=False,
            poor=PoorScope(),
            grace_above_seconds=None,
            steering_annotations=False,
            node_name=False,
            bindings=False,
            trusted_schedulers=(),
            kinds=relevance.kinds if relevance.mutate_templates else (),
        )
    return replace(
        relevance, mutate_fault_tolerant=False, mutate_others="none", mutate_templates=False
    )


def missing_coverage(live: Relevance, needed: Relevance) -> list[str]:
    """What a registration built from ``live`` fails to send that ``needed`` requires.

    Empty when ``live`` covers ``needed``: every review that can matter under the policy
    is sent. Sets a registration tests positively (taint keys, owner kinds, ...) must be
    supersets; the fault-tolerant selectors and operator opt-ins must be equal, because
    the validating conditions also use them to *skip* fault-tolerant pods.
    """
    if not needed.anything:
        return []
    if live.format != needed.format:
        return [f"registration format {live.format}, this server writes {needed.format}"]
    gaps: list[str] = []

    def superset(name: str, have: tuple[Any, ...], want: tuple[Any, ...]) -> None:
        missing = sorted(set(want) - set(have), key=str)
        if missing:
            gaps.append(f"{name}: also {', '.join(map(str, missing))}")

    def flag(name: str, have: bool, want: bool) -> None:
        if want and not have:
            gaps.append(f"{name}: required")

    extra_exclusions = sorted(set(live.exclude_namespaces) - set(needed.exclude_namespaces))
    if extra_exclusions:
        gaps.append(f"namespaces excluded that the policy reviews: {', '.join(extra_exclusions)}")
    if live.include_namespaces:
        superset("namespaces", live.include_namespaces, needed.include_namespaces or ("*",))
    if live.fault_tolerant != needed.fault_tolerant:
        gaps.append("faultTolerant selector (and operator presets): differ")
    flag(
        "mutation of fault-tolerant pods", live.mutate_fault_tolerant, needed.mutate_fault_tolerant
    )
    if MUTATE_OTHERS_ORDER.index(live.mutate_others) < MUTATE_OTHERS_ORDER.index(
        needed.mutate_others
    ):
        gaps.append(f"mutation of other pods: {needed.mutate_others}, not {live.mutate_others}")
    flag("mutation of workload templates", live.mutate_templates, needed.mutate_templates)
    superset("spot taint keys", live.spot_taint_keys, needed.spot_taint_keys)
    have_labels = {(k, v) for k, values in live.spot_labels for v in values}
    want_labels = {(k, v) for k, values in needed.spot_labels for v in values}
    superset("spot labels", tuple(have_labels), tuple(want_labels))
    flag("placement checks of other pods", live.check_others, needed.check_others)
    superset("poor-candidate owner kinds", live.poor.owner_kinds, needed.poor.owner_kinds)
    superset("latency-critical keys", live.poor.latency_keys, needed.poor.latency_keys)
    superset(
        "latency-critical priority classes",
        live.poor.priority_classes,
        needed.poor.priority_classes,
    )
    flag("hostPath volumes", live.poor.host_path, needed.poor.host_path)
    flag("volume claims", live.poor.claims, needed.poor.claims)
    if needed.grace_above_seconds is not None and (
        live.grace_above_seconds is None or live.grace_above_seconds > needed.grace_above_seconds
    ):
        gaps.append(f"grace periods above {needed.grace_above_seconds}s")
    flag("spotguard annotations", live.steering_annotations, needed.steering_annotations)
    flag("spec.nodeName", live.node_name, needed.node_name)
    flag("bindings", live.bindings, needed.bindings)
    extra_trust = sorted(set(live.trusted_schedulers) - set(needed.trusted_schedulers))
    if needed.bindings and extra_trust:
        gaps.append(f"bindings by {', '.join(extra_trust)}")
    gaps += _kind_gaps(live.kinds, needed.kinds)
    return gaps


def _kind_gaps(live: tuple[KindScope, ...], needed: tuple[KindScope, ...]) -> list[str]:
    gaps: list[str] = []
    by_kind = {(k.group, k.kind): k for k in live}
    for kind in needed:
        name = f"{kind.kind}.{kind.group}" if kind.group else kind.kind
        have = by_kind.get((kind.group, kind.kind))
        if have is None or have.resource != kind.resource:
            gaps.append(f"kind {name}: not sent")
            continue
        if "*" not in have.versions and not set(kind.versions) <= set(have.versions):
            gaps.append(f"kind {name}: versions {', '.join(kind.versions)}")
        paths = {t.path: t for t in have.templates}
        for template in kind.templates:
            found = paths.get(template.path)
            if found is None or found.pod_spec != template.pod_spec:
                gaps.append(f"kind {name}: template {template.path}")
            elif found.opted_in != template.opted_in:
                gaps.append(f"kind {name}: operator opt-in of {template.path} differs")
            elif template.mutate and not found.mutate:
                gaps.append(f"kind {name}: mutation of {template.path}")
    return gaps
