"""kube-scheduler's parsing and matching of node selectors and tolerations (Kubernetes 1.37).

What :mod:`policies.placement` builds on, mirrored from the Go sources:

- a required term's ``matchExpressions`` become label requirements through apimachinery's
  ``labels.NewRequirement``: the key must be a qualified name, every value a label value,
  ``In``/``NotIn`` need values, ``Exists``/``DoesNotExist`` none, ``Gt``/``Lt`` exactly one
  that ``strconv.ParseInt`` accepts. Any error and the whole term matches no node (the
  scheduler ignores parse errors, it does not fail the pod); so does an empty term;
- ``matchFields`` support ``In``/``NotIn`` with exactly one value; the node's only field is
  ``metadata.name`` (any other key reads as the empty string);
- ``spec.nodeSelector`` entries are exact matches, unvalidated;
- a toleration matches a taint as ``core/v1`` ``Toleration.ToleratesTaint`` says; only
  ``NoSchedule`` and ``NoExecute`` taints can keep a pod off a node.

JSON ``null`` reads as Go's zero value (an empty string, an empty list); a field of the
wrong JSON type, which the API server could not even decode, makes what holds it match
nothing (or tolerate nothing): this module never raises on decoded JSON.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

from policies.model import BLOCKING_EFFECTS
from policies.presets import Taint

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
NAME_FIELD = "metadata.name"
LABEL_OPERATORS = frozenset({"In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"})

_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*")
_PARSE_INT = re.compile(r"[+-]?[0-9]+")
_DECIMAL_INTEGER = re.compile(r"0|-?[1-9][0-9]*")


@lru_cache(maxsize=4096)
def is_label_key(key: str) -> bool:
    """apimachinery's ``IsQualifiedName``: ``[prefix/]name``, the prefix a DNS subdomain."""
    parts = key.split("/")
    if len(parts) > 2:
        return False
    if len(parts) == 2 and not (
        parts[0] and len(parts[0]) <= 253 and _DNS_SUBDOMAIN.fullmatch(parts[0])
    ):
        return False
    name = parts[-1]
    return 0 < len(name) <= 63 and _NAME.fullmatch(name) is not None


@lru_cache(maxsize=4096)
def is_label_value(value: str) -> bool:
    """apimachinery's ``IsValidLabelValue``: empty, or a name of at most 63 characters."""
    return value == "" or (len(value) <= 63 and _NAME.fullmatch(value) is not None)


def parse_int64(text: str) -> int | None:
    """Go's ``strconv.ParseInt(text, 10, 64)``: an optional sign, decimal digits, int64."""
    if not _PARSE_INT.fullmatch(text):
        return None
    number = int(text)
    return number if INT64_MIN <= number <= INT64_MAX else None


def parse_decimal_integer(text: str) -> int | None:
    """``content.IsDecimalInteger`` and then ParseInt: no sign but '-', no leading zero."""
    return parse_int64(text) if _DECIMAL_INTEGER.fullmatch(text) else None


def _text(value: Any) -> str | None:
    """A JSON string field: null is Go's empty string; any other type does not decode."""
    if value is None:
        return ""
    return value if isinstance(value, str) else None


def _texts(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return ()
    if not isinstance(value, list):
        return None
    items = tuple(_text(item) for item in value)
    return None if any(item is None for item in items) else items  # type: ignore[return-value]


class Requirement(NamedTuple):
    """One parsed label requirement. ``operator`` ``In`` also stands for a nodeSelector
    entry (an exact match: the key present with that value)."""

    key: str
    operator: str
    values: tuple[str, ...]

    @property
    def bound(self) -> int:
        """The integer of ``Gt``/``Lt`` (validated when parsed)."""
        number = parse_int64(self.values[0])
        assert number is not None
        return number

    def matches(self, labels: Mapping[str, str]) -> bool:
        """apimachinery's ``Requirement.Matches``."""
        present = self.key in labels
        if self.operator == "In":
            return present and labels[self.key] in self.values
        if self.operator == "NotIn":
            return not present or labels[self.key] not in self.values
        if self.operator == "Exists":
            return present
        if self.operator == "DoesNotExist":
            return not present
        number = parse_int64(labels[self.key]) if present else None
        if number is None:  # absent, or a label that is no integer: Gt and Lt fail
            return False
        return number > self.bound if self.operator == "Gt" else number < self.bound


def parse_requirement(expression: Any) -> Requirement | None:
    """A ``matchExpressions`` item as the scheduler parses it; None where it fails."""
    if not isinstance(expression, dict):
        return None
    key, operator = _text(expression.get("key")), _text(expression.get("operator"))
    values = _texts(expression.get("values"))
    if key is None or operator is None or values is None or operator not in LABEL_OPERATORS:
        return None
    if not is_label_key(key) or not all(is_label_value(v) for v in values):
        return None
    if operator in ("In", "NotIn") and not values:
        return None
    if operator in ("Exists", "DoesNotExist") and values:
        return None
    if operator in ("Gt", "Lt") and (len(values) != 1 or parse_int64(values[0]) is None):
        return None
    return Requirement(key, operator, values)


class FieldRequirement(NamedTuple):
    """One parsed ``matchFields`` item: the node's field ``key`` equals ``value`` or not."""

    key: str
    operator: str  # In or NotIn
    value: str

    def matches(self, fields: Mapping[str, str]) -> bool:
        equal = fields.get(self.key, "") == self.value
        return equal if self.operator == "In" else not equal


def parse_field_requirement(expression: Any) -> FieldRequirement | None:
    if not isinstance(expression, dict):
        return None
    key, operator = _text(expression.get("key")), _text(expression.get("operator"))
    values = _texts(expression.get("values"))
    if key is None or values is None or operator not in ("In", "NotIn") or len(values) != 1:
        return None
    return FieldRequirement(key, operator, values[0])


class Term(NamedTuple):
    """A parsed ``nodeSelectorTerm``: its requirements and field requirements, ANDed.
    ``parsed`` False: the scheduler could not parse it. Unparsed or empty, it matches
    no node."""

    requirements: tuple[Requirement, ...]
    fields: tuple[FieldRequirement, ...] = ()
    parsed: bool = True

    @property
    def matchable(self) -> bool:
        return self.parsed and bool(self.requirements or self.fields)

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        if not self.matchable or not all(r.matches(labels) for r in self.requirements):
            return False
        # The scheduler skips field requirements for a node without a name (none exists).
        return not name or all(f.matches({NAME_FIELD: name}) for f in self.fields)


def parse_term(term: Any) -> Term:
    """A ``nodeSelectorTerms`` item; null is the empty term."""
    if term is None:
        return Term(())
    if not isinstance(term, dict):
        return Term((), (), parsed=False)
    expressions, fields = term.get("matchExpressions") or [], term.get("matchFields") or []
    if not isinstance(expressions, list) or not isinstance(fields, list):
        return Term((), (), parsed=False)
    requirements = [parse_requirement(e) for e in expressions]
    field_requirements = [parse_field_requirement(f) for f in fields]
    if any(r is None for r in requirements) or any(f is None for f in field_requirements):
        return Term((), (), parsed=False)
    return Term(tuple(requirements), tuple(field_requirements))  # type: ignore[arg-type]


class Toleration(NamedTuple):
    key: str
    operator: str
    value: str
    effect: str

    def may_match(self, key: str, effect: str) -> bool:
        """The key and effect test of ``ToleratesTaint`` (empty matches everything)."""
        return (not self.effect or self.effect == effect) and (not self.key or self.key == key)

    def tolerates(self, taint: Taint, *, comparisons: bool = False) -> bool:
        """``ToleratesTaint`` for a concrete taint (value None is the empty value).
        ``comparisons``: the TaintTolerationComparisonOperators feature gate."""
        if not self.may_match(taint.key, taint.effect):
            return False
        value = taint.value or ""
        if self.operator in ("", "Equal"):
            return self.value == value
        if self.operator == "Exists":
            return True
        if self.operator in ("Lt", "Gt") and comparisons:
            mine, theirs = parse_decimal_integer(self.value), parse_decimal_integer(value)
            if mine is None or theirs is None:
                return False
            return theirs < mine if self.operator == "Lt" else theirs > mine
        return False

    def tolerates_some_of(self, taint: Taint) -> bool:
        """Whether some node carrying ``taint`` (value None: any value a taint can have,
        a label value) is tolerated; ``Lt``/``Gt`` as with the feature gate on."""
        if taint.value is not None:
            return self.tolerates(taint, comparisons=True)
        if not self.may_match(taint.key, taint.effect):
            return False
        if self.operator in ("", "Equal"):
            return is_label_value(self.value)
        if self.operator == "Exists":
            return True
        bound = parse_decimal_integer(self.value) if self.operator in ("Lt", "Gt") else None
        if bound is None:
            return False
        # An integer taint value is a label value: 0 up to the largest int64.
        return bound > 0 if self.operator == "Lt" else bound < INT64_MAX

    def tolerates_every_of(self, taint: Taint) -> bool:
        """Whether every node carrying ``taint`` (value None: any value) is tolerated;
        ``Lt``/``Gt`` never count (the feature gate may be off)."""
        if not self.may_match(taint.key, taint.effect):
            return False
        if self.operator == "Exists":
            return True
        return (
            taint.value is not None
            and self.operator in ("", "Equal")
            and (self.value == taint.value)
        )


def parse_toleration(toleration: Any) -> Toleration | None:
    """A ``tolerations`` item (null is the empty toleration); None if it does not decode."""
    if toleration is None:
        toleration = {}
    if not isinstance(toleration, Mapping):
        return None
    fields = [_text(toleration.get(f)) for f in ("key", "operator", "value", "effect")]
    if any(f is None for f in fields):
        return None
    return Toleration(*fields)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Placement:
    """A pod spec's placement fields as the scheduler reads them.

    ``node_selector`` None: mistyped, matches nothing. ``required`` None: no required node
    affinity; an empty tuple: present without terms (an empty ``nodeSelectorTerms`` list,
    which the API rejects, or a mistyped field), matching nothing. ``raw_terms``: the
    terms as written, index for index with ``required``.
    """

    node_selector: tuple[tuple[str, str], ...] | None
    required: tuple[Term, ...] | None
    raw_terms: tuple[Any, ...]
    tolerations: tuple[Toleration, ...]

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        """The NodeAffinity filter: the nodeSelector, and one required term if any."""
        if self.node_selector is None:
            return False
        if not all(key in labels and labels[key] == v for key, v in self.node_selector):
            return False
        return self.required is None or any(t.matches(name, labels) for t in self.required)

    def tolerates_node(self, taints: Sequence[Taint], *, comparisons: bool = False) -> bool:
        """The TaintToleration filter: every NoSchedule/NoExecute taint is tolerated."""
        return all(
            any(tol.tolerates(taint, comparisons=comparisons) for tol in self.tolerations)
            for taint in taints
            if taint.effect in BLOCKING_EFFECTS
        )


def _node_selector(value: Any) -> tuple[tuple[str, str], ...] | None:
    if value is None:
        return ()
    if not isinstance(value, dict):
        return None
    entries = [(key, _text(item)) for key, item in value.items()]
    if any(item is None or not isinstance(key, str) for key, item in entries):
        return None
    return tuple(entries)  # type: ignore[arg-type]


def raw_required_terms(spec: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """The required terms as written; None without required node affinity, an empty
    tuple when it has no term (or a field on the way is mistyped)."""
    affinity = spec.get("affinity")
    if affinity is None:
        return None
    if not isinstance(affinity, dict):
        return ()
    node_affinity = affinity.get("nodeAffinity")
    if node_affinity is None:
        return None
    if not isinstance(node_affinity, dict):
        return ()
    required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is None:
        return None
    terms = required.get("nodeSelectorTerms") if isinstance(required, dict) else None
    return tuple(terms) if isinstance(terms, list) else ()


def parse_placement(spec: Any) -> Placement:
    """Read a pod spec's ``nodeSelector``, required node affinity and tolerations."""
    if not isinstance(spec, Mapping):
        return Placement(None, (), (), ())
    raw_terms = raw_required_terms(spec)
    tolerations = spec.get("tolerations")
    parsed = [parse_toleration(t) for t in tolerations] if isinstance(tolerations, list) else []
    return Placement(
        node_selector=_node_selector(spec.get("nodeSelector")),
        required=None if raw_terms is None else tuple(parse_term(t) for t in raw_terms),
        raw_terms=raw_terms or (),
        tolerations=tuple(t for t in parsed if t is not None),
    )
