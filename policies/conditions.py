"""CEL match conditions that send the API server to spotguard only when a review can matter.

From a :class:`~policies.relevance.Relevance` this builds, for each webhook, named
conditions the API server evaluates in-process before calling (all must be true):

- pods: the mutating webhook gets fault-tolerant pods, and the others only when some spot
  node is untainted (or, when every spot node is tainted, those that may tolerate a spot
  taint); pods with ``spec.nodeName`` are never mutated. The validating webhook gets pods
  that name a node, tolerate or select spot while they must stay off it, or are
  fault-tolerant with something to check (a grace period above the notice window, a
  spotguard annotation, a poor-candidate trait); on UPDATE only pods whose placement
  fields changed.
- workloads: the same questions of each pod template, found with the policy's template
  paths; on UPDATE only when a template's part of the object changed.
- bindings: every binding except those made by the trusted schedulers.

Each condition is an over-approximation: it may send a review that turns out to need
nothing, never skip one that needs something (a property test checks this with the API
server's own evaluator). Every expression is total (see :mod:`policies.cel`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from policies import cel
from policies.cel import Names, Walker, all_of, any_of, negate
from policies.relevance import (
    INJECTED_ANNOTATION,
    STEERING_PREFIX,
    KindScope,
    Relevance,
    Selector,
    TemplateScope,
)

#: Placement fields a pod may change after creation (tolerations only grow; nodeSelector
#: and affinity while scheduling gates hold it): an UPDATE is judged only if one changed.
UPDATE_FIELDS = ("tolerations", "nodeSelector", "affinity")
REQUIRED_TERMS = (
    "affinity",
    "nodeAffinity",
    "requiredDuringSchedulingIgnoredDuringExecution",
    "nodeSelectorTerms",
)
#: Names the constants of a condition are bound to (see :func:`_with_constants`).
SPOT_LABELS = "spotLabels"
SPOT_TAINT_KEYS = "spotTaintKeys"


@dataclass(frozen=True)
class MatchCondition:
    name: str
    expression: str

    def to_api(self) -> dict[str, str]:
        return {"name": self.name, "expression": self.expression}


@dataclass(frozen=True)
class _Pod:
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
    owners: str  # a list (empty where there are none)
    opted_in: bool
    spec_only: bool


def _map_or_empty(expression: str, key: str) -> str:
    value = cel.field(expression, key)
    guard = all_of(cel.is_map(expression), f"{cel.string(key)} in {expression}", cel.is_map(value))
    return f"{guard} ? {value} : {{}}"


def _list_or_empty(expression: str, key: str) -> str:
    value = cel.field(expression, key)
    guard = all_of(cel.is_map(expression), f"{cel.string(key)} in {expression}", cel.is_list(value))
    return f"{guard} ? {value} : []"


class _PodQuestions:
    """The per-pod predicates, as CEL, for one relevance."""

    def __init__(self, relevance: Relevance, names: Names) -> None:
        self.r = relevance
        self.walk = Walker(names)
        self.names = names

    def scope(self, pod: _Pod, body: Callable[[_Bound], str]) -> str:
        """``body`` with the pod's spec, labels, annotations and owners bound."""
        spec, meta = self.names("spec"), self.names("meta")
        labels, annotations, owners = (
            self.names("labels"),
            self.names("annotations"),
            self.names("owners"),
        )
        bound = _Bound(spec, labels, annotations, owners, pod.opted_in, pod.spec_only)
        inner = body(bound)
        if pod.spec_only:
            inner = cel.bind(
                "{}", labels, cel.bind("{}", annotations, cel.bind("[]", owners, inner))
            )
            return cel.bind(f"{cel.is_map(pod.node)} ? {pod.node} : {{}}", spec, inner)
        inner = cel.bind(
            _map_or_empty(meta, "labels"),
            labels,
            cel.bind(
                _map_or_empty(meta, "annotations"),
                annotations,
                cel.bind(_list_or_empty(meta, "ownerReferences"), owners, inner),
            ),
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
        """``labels`` (a map) matches ``selector``, with Kubernetes' selector semantics."""
        parts: list[str] = []
        for key, value in selector.match_labels:
            parts.append(
                all_of(
                    f"{cel.string(key)} in {labels}",
                    f"{cel.field(labels, key)} == {cel.string(value)}",
                )
            )
        for key, operator, values in selector.match_expressions:
            present = f"{cel.string(key)} in {labels}"
            member = all_of(present, f"{cel.field(labels, key)} in {cel.strings(values)}")
            parts.append(
                {
                    "In": member,
                    "NotIn": negate(member),
                    "Exists": present,
                    "DoesNotExist": negate(present),
                }[operator]
            )
        return all_of(*parts)

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
        if p.owner_kinds and not pod.spec_only:
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
            f"&& {a} != {cel.string(INJECTED_ANNOTATION)})"
        )

    # -- the two questions ---------------------------------------------------------------

    def needs_mutation(self, pod: _Pod) -> str:
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

    def needs_validation(self, pod: _Pod) -> str:
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


def _with_constants(relevance: Relevance, expression: str) -> str:
    """Bind the policy's spot labels and taint keys once, for the whole condition."""
    labels = cel.string_lists(dict(relevance.spot_labels))
    keys = cel.strings(relevance.spot_taint_keys)
    return cel.bind(labels, SPOT_LABELS, cel.bind(keys, SPOT_TAINT_KEYS, expression))


# -- requests ------------------------------------------------------------------------------

_IS_SUBRESOURCE = 'has(request.subResource) && request.subResource != ""'
_IS_UPDATE = 'request.operation == "UPDATE"'


def _is_resource(group: str, resource: str) -> str:
    return all_of(
        f"request.resource.group == {cel.string(group)}",
        f"request.resource.resource == {cel.string(resource)}",
        negate(_IS_SUBRESOURCE),
    )


_IS_POD = _is_resource("", "pods")
_IS_BINDING = all_of(
    'request.resource.group == ""',
    any_of(
        all_of(
            'request.resource.resource == "pods"',
            'has(request.subResource) && request.subResource == "binding"',
        ),
        'request.resource.resource == "bindings"',
    ),
)


def _changed(keys: tuple[str, ...], walk: Walker) -> str:
    return f"{walk.value_or_null('object', keys)} != {walk.value_or_null('oldObject', keys)}"


def _condition_name(prefix: str, detail: str) -> str:
    """A valid condition name (a qualified name of at most 63 characters)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", f"{prefix}-{detail}").strip("-._")
    if len(name) > 63:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[:54].rstrip('-._')}-{digest}"
    return name


def _split_path(path: str) -> list[str]:
    steps: list[str] = []
    for step in path.split("."):
        if step.endswith("[*]"):
            steps += [step[:-3], "[*]"]
        else:
            steps.append(step)
    return steps


def _templates(template: TemplateScope, question: str, questions: _PodQuestions) -> str:
    """Some template at ``template.path`` in the object answers ``question`` yes."""
    walk = questions.walk
    ask = questions.needs_mutation if question == "mutate" else questions.needs_validation

    def visit(here: str, rest: list[str]) -> str:
        fixed: list[str] = []
        while rest and rest[0] not in ("*", "[*]"):
            fixed.append(rest.pop(0))
        if not rest:
            return walk.at(
                here,
                fixed,
                lambda node: all_of(
                    cel.is_map(node), ask(_Pod(node, template.pod_spec, template.opted_in))
                ),
            )
        wildcard, following = rest[0], rest[1:]
        if wildcard == "[*]":
            return walk.each(here, fixed, lambda item: visit(item, list(following)))
        return walk.each_key(
            here,
            fixed,
            lambda mapping, key: cel.bind(
                f"{mapping}[{key}]", (value := questions.names("m")), visit(value, list(following))
            ),
        )

    return visit("object", _split_path(template.path))


def _template_prefix(template: TemplateScope) -> tuple[str, ...]:
    """The fixed part of a template path, before its first wildcard."""
    prefix: list[str] = []
    for step in _split_path(template.path):
        if step in ("*", "[*]"):
            break
        prefix.append(step)
    return tuple(prefix)


def _kind_condition(kind: KindScope, question: str, relevance: Relevance) -> MatchCondition:
    questions = _PodQuestions(relevance, Names())
    templates = [t for t in kind.templates if question == "validate" or t.mutate]
    prefixes = sorted({_template_prefix(t) for t in templates})
    changed = any_of(*(_changed(p, questions.walk) for p in prefixes))
    relevant = any_of(*(_templates(t, question, questions) for t in templates))
    expression = any_of(
        negate(_is_resource(kind.group, kind.resource)),
        all_of(any_of(negate(_IS_UPDATE), changed), _with_constants(relevance, relevant)),
    )
    detail = f"{kind.resource}.{kind.group}" if kind.group else kind.resource
    return MatchCondition(_condition_name("templates", detail), expression)


def mutating_conditions(relevance: Relevance) -> list[MatchCondition]:
    """The mutating webhook's conditions (pods CREATE; workloads if templates are mutated)."""
    questions = _PodQuestions(relevance, Names())
    pod = questions.needs_mutation(_Pod("object"))
    conditions = [MatchCondition("pods", any_of(negate(_IS_POD), _with_constants(relevance, pod)))]
    if relevance.mutate_templates:
        conditions += [
            _kind_condition(k, "mutate", relevance)
            for k in relevance.kinds
            if any(t.mutate for t in k.templates)
        ]
    return conditions


def validating_conditions(relevance: Relevance) -> list[MatchCondition]:
    """The validating webhook's conditions (pods, bindings, workloads)."""
    questions = _PodQuestions(relevance, Names())
    changed = any_of(*(_changed(("spec", name), questions.walk) for name in UPDATE_FIELDS))
    created = questions.needs_validation(_Pod("object"))
    conditions = [
        MatchCondition(
            "pods",
            any_of(
                negate(_IS_POD),
                all_of(_IS_UPDATE, changed),
                all_of(negate(_IS_UPDATE), _with_constants(relevance, created)),
            ),
        )
    ]
    if relevance.bindings and relevance.trusted_schedulers:
        trusted = cel.strings(relevance.trusted_schedulers)
        conditions.append(
            MatchCondition(
                "bindings",
                any_of(
                    negate(_IS_BINDING),
                    negate(
                        all_of(
                            "has(request.userInfo.username)",
                            f"request.userInfo.username in {trusted}",
                        )
                    ),
                ),
            )
        )
    conditions += [_kind_condition(k, "validate", relevance) for k in relevance.kinds]
    return conditions


def iter_expressions(relevance: Relevance) -> Iterator[tuple[str, MatchCondition]]:
    """Every (webhook, condition), for tests and for the CLI's summary."""
    for condition in mutating_conditions(relevance):
        yield "mutate", condition
    for condition in validating_conditions(relevance):
        yield "validate", condition


# -- rules ---------------------------------------------------------------------------------


def _validates_pods(relevance: Relevance) -> bool:
    r = relevance
    return (
        r.check_others
        or not r.poor.empty
        or r.grace_above_seconds is not None
        or r.steering_annotations
        or r.node_name
    )


def webhook_rules_for(relevance: Relevance, webhook: str) -> list[dict[str, Any]]:
    """The admissionregistration.k8s.io/v1 ``rules`` that route what can matter here.

    ``webhook`` is ``mutate`` or ``validate``. Pods (CREATE; UPDATE too for validation);
    for validation also bindings (the ``pods/binding`` subresource and the legacy
    ``bindings`` resource) and every workload kind; for mutation the workload kinds only
    when templates are mutated. Kinds of one API group and version set share a rule. A
    policy that can change nothing (mode ``off``) routes nothing.
    """
    validate = webhook == "validate"
    mutates_pods = relevance.mutate_fault_tolerant or relevance.mutate_others != "none"
    if not (_validates_pods(relevance) if validate else mutates_pods):
        return []
    rules: list[dict[str, Any]] = [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE", "UPDATE"] if validate else ["CREATE"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    if validate and relevance.bindings:
        rules.append(
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": ["pods/binding", "bindings"],
                "scope": "Namespaced",
            }
        )
    if validate or relevance.mutate_templates:
        grouped: dict[tuple[str, tuple[str, ...]], list[str]] = {}
        for kind in relevance.kinds:
            if validate or any(t.mutate for t in kind.templates):
                grouped.setdefault((kind.group, kind.versions), []).append(kind.resource)
        for (group, versions), resources in grouped.items():
            rules.append(
                {
                    "apiGroups": [group],
                    "apiVersions": list(versions),
                    "operations": ["CREATE", "UPDATE"],
                    "resources": sorted(set(resources)),
                    "scope": "Namespaced",
                }
            )
    return rules
