"""CEL match conditions that send the API server to spotguard only when a review can matter.

From a :class:`~policies.relevance.Relevance` this builds, for each webhook, named
conditions the API server evaluates in-process before calling (all must be true):

- pods (:mod:`policies.pod_cel`, typed and cheap): the mutating webhook gets
  fault-tolerant pods, and the others only when some spot node is untainted (or, when
  every spot node is tainted, those that may tolerate a spot taint); pods with
  ``spec.nodeName`` are never mutated. The validating webhook gets pods that name a node,
  tolerate or select spot while they must stay off it, or are fault-tolerant with
  something to check (a grace period above the notice window, a spotguard annotation, a
  poor-candidate trait); on UPDATE only pods whose placement fields changed.
- workloads (their own webhook; :mod:`policies.template_cel`, total over any JSON): the
  same questions of each pod template, found with the policy's template paths; on UPDATE
  only when a template's part of the object changed.
- bindings: every binding except those made by the trusted schedulers.

Each condition is an over-approximation: it may send a review that turns out to need
nothing, never skip one that needs something (a property test checks this with the API
server's own evaluator). Every expression is total (see :mod:`policies.cel`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from policies import cel
from policies.cel import Names, Walker, all_of, any_of, negate
from policies.pod_cel import PodQuestions
from policies.relevance import KindScope, Relevance, TemplateScope
from policies.selectors import is_label_key, is_label_value
from policies.template_cel import TemplatePod, TemplateQuestions, with_constants

#: Placement fields a pod may change after creation (tolerations only grow; nodeSelector
#: and affinity while scheduling gates hold it): an UPDATE is judged only if one changed.
UPDATE_FIELDS = ("tolerations", "nodeSelector", "affinity")


@dataclass(frozen=True)
class MatchCondition:
    name: str
    expression: str

    def to_api(self) -> dict[str, str]:
        return {"name": self.name, "expression": self.expression}


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
#: Among what the validating webhook's rules send (pods, pods/binding, bindings): a pod.
_IS_POD_OR_SUBRESOURCE = 'request.resource.resource == "pods" && !has(request.subResource)'


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


def _templates(template: TemplateScope, question: str, questions: TemplateQuestions) -> str:
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
                    cel.is_map(node), ask(TemplatePod(node, template.pod_spec, template.opted_in))
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
    questions = TemplateQuestions(relevance, Names())
    templates = [t for t in kind.templates if question == "validate" or t.mutate]
    prefixes = sorted({_template_prefix(t) for t in templates})
    changed = any_of(*(_changed(p, questions.walk) for p in prefixes))
    relevant = any_of(*(_templates(t, question, questions) for t in templates))
    expression = any_of(
        negate(_is_resource(kind.group, kind.resource)),
        all_of(any_of(negate(_IS_UPDATE), changed), with_constants(relevance, relevant)),
    )
    detail = f"{kind.resource}.{kind.group}" if kind.group else kind.resource
    return MatchCondition(_condition_name("templates", detail), expression)


def mutating_conditions(relevance: Relevance) -> list[MatchCondition]:
    """The mutating webhook's conditions (pods CREATE; workloads if templates are mutated).

    Its rules send pods only (unless templates are mutated), so the pod condition needs no
    test of what the request is about.
    """
    pod = PodQuestions(relevance, Names()).needs_mutation()
    if not relevance.mutate_templates:
        return [MatchCondition("pods", pod)]
    conditions = [MatchCondition("pods", any_of(negate(_IS_POD), pod))]
    conditions += [
        _kind_condition(k, "mutate", relevance)
        for k in relevance.kinds
        if any(t.mutate for t in k.templates)
    ]
    return conditions


def mutating_object_selector(relevance: Relevance) -> dict[str, Any] | None:
    """The mutating webhook's pods as a label selector, when that is all it needs: only
    fault-tolerant pods are mutated (see relevance.keep_off_spot_is_moot), by one selector,
    and no workload template. The API server matches an objectSelector on the labels it
    already has, without the CEL evaluation a match condition costs it for every pod.
    Pods that name a node are then sent too, and answered without a patch. A selector the
    API server would refuse as an objectSelector (a key or value no label can have, which
    the policy allows: it matches no pod) stays a match condition."""
    if (
        relevance.mutate_others != "none"
        or not relevance.mutate_fault_tolerant
        or relevance.mutate_templates
        or len(relevance.fault_tolerant) != 1
    ):
        return None
    (selector,) = relevance.fault_tolerant
    keys = [k for k, _ in selector.match_labels] + [k for k, _, _ in selector.match_expressions]
    values = [v for _, v in selector.match_labels] + [
        v for _, _, vs in selector.match_expressions for v in vs
    ]
    if not (all(map(is_label_key, keys)) and all(map(is_label_value, values))):
        return None
    rendered: dict[str, Any] = {}
    if selector.match_labels:
        rendered["matchLabels"] = dict(selector.match_labels)
    if selector.match_expressions:
        rendered["matchExpressions"] = [
            {"key": key, "operator": operator, **({"values": list(values)} if values else {})}
            for key, operator, values in selector.match_expressions
        ]
    return rendered


def workload_conditions(relevance: Relevance) -> list[MatchCondition]:
    """The workloads webhook's conditions: one per kind (each true for the other kinds).

    Workloads have a webhook of their own so that a pod review, by far the most frequent,
    evaluates only the pod and binding condition: the API server evaluates every condition
    of a webhook whose rules match, and each costs it CPU.
    """
    return [_kind_condition(k, "validate", relevance) for k in relevance.kinds]


def validating_conditions(relevance: Relevance) -> list[MatchCondition]:
    """The validating webhook's one condition, for pods and bindings (its rules send only
    those): a pod CREATE by the pod's questions, a pod UPDATE by whether its placement
    changed, a binding by who makes it. One condition, because each one is evaluated for
    every request the rules match."""
    walk = Walker(Names())
    changed = any_of(*(_changed(("spec", name), walk) for name in UPDATE_FIELDS))
    created = PodQuestions(relevance, Names()).needs_validation()
    pod = f"{_IS_UPDATE} ? {cel.group(changed)} : {cel.group(created)}"
    binding = cel.TRUE
    if relevance.bindings and relevance.trusted_schedulers:
        trusted = cel.strings(relevance.trusted_schedulers)
        binding = negate(
            all_of("has(request.userInfo.username)", f"request.userInfo.username in {trusted}")
        )
    if binding == cel.TRUE:
        return [MatchCondition("pods-and-bindings", any_of(negate(_IS_POD_OR_SUBRESOURCE), pod))]
    return [
        MatchCondition(
            "pods-and-bindings",
            f"{_IS_POD_OR_SUBRESOURCE} ? {cel.group(pod)} : {cel.group(binding)}",
        )
    ]


def iter_expressions(relevance: Relevance) -> Iterator[tuple[str, MatchCondition]]:
    """Every (webhook, condition), for tests and for the CLI's summary."""
    for condition in mutating_conditions(relevance):
        yield "mutate", condition
    for condition in validating_conditions(relevance):
        yield "validate", condition
    for condition in workload_conditions(relevance):
        yield "workloads", condition


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

    ``webhook``: ``mutate`` (pods, CREATE; with mutated templates also the workload
    kinds), ``validate`` (pods, CREATE and UPDATE, and bindings: the ``pods/binding``
    subresource and the legacy ``bindings`` resource) or ``workloads`` (every workload
    kind, CREATE and UPDATE). Kinds of one API group and version set share a rule. A
    policy that can change nothing (mode ``off``) routes nothing.
    """
    if webhook == "workloads":
        return _kind_rules(relevance.kinds) if _validates_pods(relevance) else []
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
    if not validate and relevance.mutate_templates:
        rules += _kind_rules(
            tuple(k for k in relevance.kinds if any(t.mutate for t in k.templates))
        )
    return rules


def _kind_rules(kinds: tuple[KindScope, ...]) -> list[dict[str, Any]]:
    grouped: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for kind in kinds:
        grouped.setdefault((kind.group, kind.versions), []).append(kind.resource)
    return [
        {
            "apiGroups": [group],
            "apiVersions": list(versions),
            "operations": ["CREATE", "UPDATE"],
            "resources": sorted(set(resources)),
            "scope": "Namespaced",
        }
        for (group, versions), resources in grouped.items()
    ]
