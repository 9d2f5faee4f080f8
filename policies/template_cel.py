"""Match-condition CEL for pod templates inside any object: total over arbitrary JSON.

A custom resource may hold anything where a template is expected (its schema may preserve
unknown fields), so every predicate here guards each step with a type and a presence test
(:mod:`policies.cel`) and binds the template's parts to variables once (a map or list,
empty where the template has none). Pods under review, whose types the API server
guarantees, get the cheaper predicates of :mod:`policies.pod_cel` instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from policies import cel
from policies.annotations import INJECTED
from policies.cel import Names, Walker, all_of, any_of, negate
from policies.relevance import STEERING_PREFIX, Relevance, Selector

REQUIRED_TERMS = (
    "affinity",
    "nodeAffinity",
    "requiredDuringSchedulingIgnoredDuringExecution",
    "nodeSelectorTerms",
)
#: Names the constants of a condition are bound to (see :func:`with_constants`).
SPOT_LABELS = "spotLabels"
SPOT_TAINT_KEYS = "spotTaintKeys"


@dataclass(frozen=True)
class TemplatePod:
    """Where a pod is: the pod under review, or a template inside an object.

    ``node`` denotes the pod (or template) mapping; ``spec_only`` for a bare pod spec,
    which has no metadata; ``opted_in`` when an operator preset makes it fault-tolerant.
    """

    node: str
    spec_only: bool = False
    opted_in: bool = False


@dataclass(frozen=True)
class _Bound:
    """Variables a pod's parts are bound to: each a map (empty where the pod has none),
    so the predicates below can read them with no more guards than a presence test."""

    spec: str
    labels: str
    annotations: str
    owners: str  # a list: the object under review, the owner of the template's pods
    opted_in: bool
    spec_only: bool


def _map_or_empty(expression: str, key: str) -> str:
    value = cel.field(expression, key)
    guard = all_of(cel.is_map(expression), f"{cel.string(key)} in {expression}", cel.is_map(value))
    return f"{guard} ? {value} : {{}}"


class TemplateQuestions:
    """The per-pod predicates, as CEL over any JSON, for one relevance."""

    def __init__(self, relevance: Relevance, names: Names) -> None:
        self.r = relevance
        self.walk = Walker(names)
        self.names = names

    def scope(self, pod: TemplatePod, body: Callable[[_Bound], str]) -> str:
        """``body`` with the pod's spec, labels, annotations and owners bound."""
        spec, meta = self.names("spec"), self.names("meta")
        labels, annotations, owners = (
            self.names("labels"),
            self.names("annotations"),
            self.names("owners"),
        )
        bound = _Bound(spec, labels, annotations, owners, pod.opted_in, pod.spec_only)
        # The pods a template makes are owned by the object under review, whatever owners
        # the template's metadata names (policies.workloads.template_pod): the object
        # itself is the one owner reference the rules see.
        inner = cel.bind("[object]", owners, body(bound))
        if pod.spec_only:
            inner = cel.bind("{}", labels, cel.bind("{}", annotations, inner))
            return cel.bind(f"{cel.is_map(pod.node)} ? {pod.node} : {{}}", spec, inner)
        inner = cel.bind(
            _map_or_empty(meta, "labels"),
            labels,
            cel.bind(_map_or_empty(meta, "annotations"), annotations, inner),
        )
        inner = cel.bind(_map_or_empty(pod.node, "metadata"), meta, inner)
        return cel.bind(_map_or_empty(pod.node, "spec"), spec, inner)

    # -- who the pod is ------------------------------------------------------------------

    def fault_tolerant(self, pod: _Bound) -> str:
        if pod.opted_in:
            return cel.TRUE
        if pod.spec_only:
            return cel.FALSE
        return any_of(*(self._selects(pod.labels, s) for s in self.r.fault_tolerant))

    @staticmethod
    def _selects(labels: str, selector: Selector) -> str:
        return cel.selector_matches(labels, selector.match_labels, selector.match_expressions)

    # -- where it can go -----------------------------------------------------------------

    @staticmethod
    def names_node(pod: _Bound, strict: bool) -> str:
        """``spec.nodeName`` set. ``strict``: only a non-empty string counts (the mutating
        rules skip exactly those); otherwise any value but the empty string does."""
        node = f"{pod.spec}.nodeName"
        if strict:
            return all_of(f'"nodeName" in {pod.spec}', cel.is_string(node), f'{node} != ""')
        return all_of(f'"nodeName" in {pod.spec}', f'{node} != ""')

    def tolerates_spot(self, pod: _Bound) -> str:
        """Some toleration may match a spot taint: its key is a spot taint's, or it has no
        key (with operator Exists it tolerates every taint)."""
        if not self.r.spot_taint_keys:
            return cel.FALSE

        def may_match(toleration: str) -> str:
            key = f"{toleration}.key"
            return any_of(
                f'!("key" in {toleration})',
                negate(cel.is_string(key)),
                f'{key} == ""',
                f"{key} in {SPOT_TAINT_KEYS}",
            )

        return self.walk.each(pod.spec, ("tolerations",), may_match, is_map_known=True)

    def selects_spot(self, pod: _Bound) -> str:
        """A nodeSelector entry or a required node-affinity term that may reach spot."""
        if not self.r.spot_labels:
            return cel.FALSE
        by_selector = self.walk.each_key(
            pod.spec,
            ("nodeSelector",),
            lambda selector, k: all_of(
                f"{k} in {SPOT_LABELS}",
                any_of(
                    negate(cel.is_string(f"{selector}[{k}]")),
                    f"{selector}[{k}] in {SPOT_LABELS}[{k}]",
                ),
            ),
            is_map_known=True,
        )
        by_affinity = self.walk.each(
            pod.spec,
            REQUIRED_TERMS,
            lambda term: any_of(
                self.walk.each(term, ("matchExpressions",), self._reaches_spot, is_map_known=True),
                self.walk.at(
                    term,
                    ("matchFields",),
                    lambda f: all_of(cel.is_list(f), f"size({f}) > 0"),
                    is_map_known=True,
                ),
            ),
            is_map_known=True,
        )
        return any_of(by_selector, by_affinity)

    def _reaches_spot(self, expression: str) -> str:
        """A required node-selector requirement that does not rule out spot nodes: it names
        a spot label (or no usable key) and is not DoesNotExist, NotIn every spot value,
        or In only other values."""
        key, operator, values = (f"{expression}.{f}" for f in ("key", "operator", "values"))
        spot = self.names("s")
        v = self.names("v")
        has_operator = f'"operator" in {expression}'
        has_values = all_of(f'"values" in {expression}', cel.is_list(values))
        rules_out = any_of(
            all_of(has_operator, f'{operator} == "DoesNotExist"'),
            all_of(
                has_operator,
                f'{operator} == "NotIn"',
                has_values,
                f"{spot}.all({v}, {v} in {values})",
            ),
            all_of(
                has_operator,
                f'{operator} == "In"',
                has_values,
                f"{values}.all({v}, {cel.is_string(v)} && !({v} in {spot}))",
            ),
        )
        return any_of(
            f'!("key" in {expression})',
            negate(cel.is_string(key)),
            all_of(
                f"{key} in {SPOT_LABELS}",
                negate(cel.bind(f"{SPOT_LABELS}[{key}]", spot, rules_out)),
            ),
        )

    # -- what a fault-tolerant pod may get checked for -----------------------------------

    def poor(self, pod: _Bound) -> str:
        """A trait of a poor spot candidate (stateful owner, latency-critical, local data)."""
        p = self.r.poor
        parts: list[str] = []
        if p.owner_kinds:
            o = self.names("o")
            kinds = cel.strings(p.owner_kinds)
            parts.append(
                f'{pod.owners}.exists({o}, {cel.is_map(o)} && "kind" in {o} && {o}.kind in {kinds})'
            )
        for key in () if pod.spec_only else p.latency_keys:
            parts += [
                f"{cel.string(key)} in {pod.labels}",
                f"{cel.string(key)} in {pod.annotations}",
            ]
        if p.priority_classes:
            classes = cel.strings(p.priority_classes)
            parts.append(
                f'"priorityClassName" in {pod.spec} && {pod.spec}.priorityClassName in {classes}'
            )
        volume_kinds = (["hostPath"] if p.host_path else []) + (
            ["persistentVolumeClaim", "ephemeral"] if p.claims else []
        )
        if volume_kinds:
            parts.append(
                self.walk.each(
                    pod.spec,
                    ("volumes",),
                    lambda v: any_of(*(f"{cel.string(k)} in {v}" for k in volume_kinds)),
                    is_map_known=True,
                )
            )
        return any_of(*parts)

    def grace_above_notice(self, pod: _Bound) -> str:
        limit = self.r.grace_above_seconds
        if limit is None:
            return cel.FALSE
        grace = f"{pod.spec}.terminationGracePeriodSeconds"
        return all_of(
            f'"terminationGracePeriodSeconds" in {pod.spec}',
            any_of(f"type({grace}) != int", f"{grace} > {limit}"),
        )

    def steering(self, pod: _Bound) -> str:
        """A spotguard annotation other than spotguard's own record of what it injected."""
        if not self.r.steering_annotations or pod.spec_only:
            return cel.FALSE
        a = self.names("a")
        return (
            f"{pod.annotations}.exists({a}, {a}.startsWith({cel.string(STEERING_PREFIX)}) "
            f"&& {a} != {cel.string(INJECTED)})"
        )

    # -- the two questions ---------------------------------------------------------------

    def needs_mutation(self, pod: TemplatePod) -> str:
        r = self.r

        def body(bound: _Bound) -> str:
            if r.mutate_fault_tolerant and r.mutate_others == "all":
                decided = cel.TRUE
            else:
                fault_tolerant = self.fault_tolerant(bound)
                others = {
                    "none": cel.FALSE,
                    "tolerating": self.tolerates_spot(bound),
                    "all": cel.TRUE,
                }[r.mutate_others]
                decided = any_of(
                    all_of(fault_tolerant, cel.TRUE if r.mutate_fault_tolerant else cel.FALSE),
                    all_of(negate(fault_tolerant), others),
                )
            return all_of(negate(self.names_node(bound, strict=True)), decided)

        return self.scope(pod, body)

    def needs_validation(self, pod: TemplatePod) -> str:
        r = self.r

        def body(bound: _Bound) -> str:
            ft, poor = self.names("ft"), self.names("poor")
            must_stay_off = any_of(negate(ft) if r.check_others else cel.FALSE, poor)
            decided = any_of(
                self.names_node(bound, strict=False) if r.node_name else cel.FALSE,
                all_of(any_of(self.tolerates_spot(bound), self.selects_spot(bound)), must_stay_off),
                all_of(ft, any_of(self.grace_above_notice(bound), self.steering(bound), poor)),
            )
            return cel.bind(
                self.fault_tolerant(bound), ft, cel.bind(self.poor(bound), poor, decided)
            )

        return self.scope(pod, body)


def with_constants(relevance: Relevance, expression: str) -> str:
    """Bind the policy's spot labels and taint keys once, for the whole condition."""
    labels = cel.string_lists(dict(relevance.spot_labels))
    keys = cel.strings(relevance.spot_taint_keys)
    return cel.bind(labels, SPOT_LABELS, cel.bind(keys, SPOT_TAINT_KEYS, expression))
