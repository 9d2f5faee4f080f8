"""Writing CEL that cannot fail: the building blocks of spotguard's match conditions.

The API server evaluates a webhook's ``matchConditions`` on every request its rules
match. A condition that raises an error (a missing key, a string where a map was
expected) makes it apply the webhook's failurePolicy, and with ``Ignore`` that means the
webhook is skipped: an error is a bypass. So every expression built here is *total*:
each step into the object is guarded by a type test (``type(x) == map``) and a presence
test (``'key' in x``), lists are walked only after ``type(x) == list``, and values are
compared only after their type is known or with operators that accept any type (``==``,
``in``). Custom resources may carry anything under their templates, so the guards are
not optional even where built-in kinds are typed.

Each step into the object binds the value to a short variable (``[x.spec].exists(s,
...)``, a one-item comprehension), so a deep path is not spelled out again at every
guard. Only CEL the API server has offered since Kubernetes 1.30 is used (no
two-variable comprehensions, no ``cel.bind``), so the registrations work on every
release where ``matchConditions`` are on by default.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import Callable, Iterable, Sequence

#: Words CEL reserves: a field with such a name must be read with ``x['name']``.
_RESERVED = frozenset(
    {
        *("as", "break", "const", "continue", "else", "false", "for", "function", "if"),
        *("import", "in", "let", "loop", "package", "namespace", "null", "return", "true"),
        *("var", "void", "while"),
    }
)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

TRUE = "true"
FALSE = "false"

#: Builds an expression about a value, given an expression that denotes it.
Then = Callable[[str], str]


def string(value: str) -> str:
    """A CEL string literal (JSON's escapes are a subset of CEL's)."""
    return json.dumps(value, ensure_ascii=False)


def strings(values: Iterable[str]) -> str:
    """A CEL list literal of strings, sorted so the output is stable."""
    return "[" + ", ".join(string(v) for v in sorted(set(values))) + "]"


def string_lists(mapping: dict[str, Sequence[str]]) -> str:
    """A CEL map literal from strings to lists of strings, sorted."""
    items = ", ".join(f"{string(k)}: {strings(mapping[k])}" for k in sorted(mapping))
    return "{" + items + "}"


def field(expression: str, name: str) -> str:
    """``expression.name``, or ``expression["name"]`` where ``name`` is not an identifier."""
    if _IDENTIFIER.match(name) and name not in _RESERVED:
        return f"{expression}.{name}"
    return f"{expression}[{string(name)}]"


def is_map(expression: str) -> str:
    return f"type({expression}) == map"


def is_list(expression: str) -> str:
    return f"type({expression}) == list"


def is_string(expression: str) -> str:
    return f"type({expression}) == string"


def all_of(*parts: str) -> str:
    """Conjunction; ``true`` parts vanish, a ``false`` part makes it ``false``."""
    kept = list(dict.fromkeys(p for p in parts if p != TRUE))
    if FALSE in kept:
        return FALSE
    if not kept:
        return TRUE
    return " && ".join(_group(p, "&&") for p in kept)


def any_of(*parts: str) -> str:
    """Disjunction; ``false`` parts vanish, a ``true`` part makes it ``true``."""
    kept = list(dict.fromkeys(p for p in parts if p != FALSE))
    if TRUE in kept:
        return TRUE
    if not kept:
        return FALSE
    return " || ".join(_group(p, "||") for p in kept)


def negate(expression: str) -> str:
    if expression == TRUE:
        return FALSE
    if expression == FALSE:
        return TRUE
    return f"!{_group(expression, '!')}"


def group(expression: str) -> str:
    """``expression`` parenthesised unless it is a plain term."""
    return f"({expression})" if _top_level_operators(expression) else expression


@functools.lru_cache(maxsize=8192)
def _top_level_operators(expression: str) -> frozenset[str]:
    """The operators found outside parentheses, brackets, braces and string literals.

    Cached: rendering composes conditions from the same pieces many times over, and each
    scan is a pass over the characters (the cache made rendering several times faster)."""
    found: set[str] = set()
    depth = 0
    in_string = escaped = False
    for index, char in enumerate(expression):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char == '"':
            in_string = True
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0:
            pair = expression[index : index + 2]
            if pair in ("&&", "||", "==", "!=", "<=", ">="):
                found.add(pair)
            elif char in "<>?" or expression.startswith(" in ", index):
                found.add(char if char != " " else "in")
    return frozenset(found)


def _group(expression: str, context: str) -> str:
    """Parenthesise ``expression`` where its top-level operators would bind wrongly.

    Inside ``&&`` only a ``||`` or a ternary needs parentheses; inside ``||`` only a
    ternary; after ``!`` anything but a plain term does.
    """
    operators = _top_level_operators(expression)
    needs = {
        "&&": {"||", "?"},
        "||": {"?"},
    }.get(context)
    if needs is None:  # "!": only a bare term or call may follow unparenthesised
        needs = {"&&", "||", "==", "!=", "<=", ">=", "<", ">", "?", "in"}
    return f"({expression})" if operators & needs else expression


class Names:
    """Fresh comprehension variables, so nested ones never shadow each other."""

    def __init__(self) -> None:
        self._counter = itertools.count()

    def __call__(self, hint: str) -> str:
        return f"{hint}{next(self._counter)}"


class Walker:
    """Guarded steps into decoded JSON, each binding the value it reaches."""

    def __init__(self, names: Names) -> None:
        self.names = names

    def at(
        self, expression: str, keys: Sequence[str], then: Then, *, is_map_known: bool = False
    ) -> str:
        """``then(value)`` for the value at ``keys`` under ``expression``; false where a
        step is missing or is not a map."""
        if not keys:
            return then(expression)
        key, rest = keys[0], keys[1:]
        guard = TRUE if is_map_known else is_map(expression)
        value = field(expression, key)
        if not rest:
            return all_of(guard, f"{string(key)} in {expression}", then(value))
        variable = self.names(_hint(key))
        inner = self.at(variable, rest, then)
        return all_of(
            guard, f"{string(key)} in {expression}", f"[{value}].exists({variable}, {inner})"
        )

    def each(
        self, expression: str, keys: Sequence[str], then: Then, *, is_map_known: bool = False
    ) -> str:
        """Some item of the list at ``keys`` is a map and satisfies ``then(item)``."""

        def over(items: str) -> str:
            item = self.names("i")
            body = all_of(is_map(item), then(item))
            return all_of(is_list(items), f"{items}.exists({item}, {body})")

        return self.at(expression, keys, over, is_map_known=is_map_known)

    def each_key(
        self,
        expression: str,
        keys: Sequence[str],
        then: Callable[[str, str], str],
        *,
        is_map_known: bool = False,
    ) -> str:
        """Some key of the map at ``keys`` satisfies ``then(map, key)``."""

        def over(mapping: str) -> str:
            key = self.names("k")
            return all_of(is_map(mapping), f"{mapping}.exists({key}, {then(mapping, key)})")

        return self.at(expression, keys, over, is_map_known=is_map_known)

    def has(self, expression: str, keys: Sequence[str], *, is_map_known: bool = False) -> str:
        """The value at ``keys`` is present (any value, null included)."""
        return self.at(expression, keys, lambda _: TRUE, is_map_known=is_map_known)

    def value_or_null(self, expression: str, keys: Sequence[str]) -> str:
        """The value at ``keys``, or null where it is missing (for comparing two objects)."""
        guards: list[str] = []
        current = expression
        for key in keys:
            guards += [is_map(current), f"{string(key)} in {current}"]
            current = field(current, key)
        return f"({all_of(*guards)} ? {current} : null)"


def bind(value: str, variable: str, body: str) -> str:
    """``body`` with ``variable`` bound to ``value`` (a one-item comprehension)."""
    if variable not in body:
        return body
    return f"[{value}].exists({variable}, {body})"


def _hint(key: str) -> str:
    letters = re.sub(r"[^A-Za-z]", "", key)[:1].lower()
    return letters or "v"


def selector_matches(
    labels: str,
    match_labels: Sequence[tuple[str, str]],
    match_expressions: Sequence[tuple[str, str, Sequence[str]]],
) -> str:
    """``labels`` (an expression denoting a map of strings) matches a Kubernetes label
    selector: matchLabels and matchExpressions ANDed, with In, NotIn (true where the label
    is absent), Exists and DoesNotExist. A selector without requirements matches."""
    parts: list[str] = []
    for key, value in match_labels:
        parts.append(
            all_of(f"{string(key)} in {labels}", f"{field(labels, key)} == {string(value)}")
        )
    for key, operator, values in match_expressions:
        present = f"{string(key)} in {labels}"
        member = all_of(present, f"{field(labels, key)} in {strings(values)}")
        parts.append(
            {
                "In": member,
                "NotIn": negate(member),
                "Exists": present,
                "DoesNotExist": negate(present),
            }[operator]
        )
    return all_of(*parts)


def selector_matches_nothing_set(
    match_labels: Sequence[tuple[str, str]],
    match_expressions: Sequence[tuple[str, str, Sequence[str]]],
) -> bool:
    """Whether the selector matches an object without labels."""
    return not match_labels and all(
        op in ("NotIn", "DoesNotExist") for _, op, _ in match_expressions
    )
