"""What a parsed YAML document holds once its aliases are written out.

YAML aliases (``*name``) share one value in many places; whatever walks the document as
JSON (a schema check, ``json.dumps``, a review) walks every place. A few hundred bytes of
nested aliases are billions of values to such a walk ("billion laughs"), and an alias
inside the value it names is endless. Both the policy loader and the manifest reader ask
here before they walk, in one pass that sizes each shared value once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_JSON_SCALARS = (str, int, float, bool, type(None))


class AliasCycle(ValueError):
    """A YAML alias refers to the value that contains it."""


@dataclass(frozen=True)
class YamlValues:
    #: Values (keys, items, scalars) once every alias is written out.
    expanded: int
    #: Values as parsed: each shared one counted once.
    distinct: int
    #: The type of the first scalar JSON cannot hold (``!!binary``, ``!!set``, a date),
    #: or None.
    foreign: type | None


def measure(document: Any) -> YamlValues:
    """Size ``document`` in time linear in what was parsed; :class:`AliasCycle` if an alias
    contains itself."""
    expanded: dict[int, int] = {}  # id(container) -> values in it, aliases written out
    open_containers: set[int] = set()
    distinct = 0
    foreign: type | None = None
    stack: list[tuple[Any, bool]] = [(document, False)]
    while stack:
        value, closing = stack.pop()
        children = _children(value)
        if closing:
            open_containers.discard(id(value))
            expanded[id(value)] = 1 + sum(expanded.get(id(c), 1) for c in children or ())
            continue
        if id(value) in expanded:
            continue
        if id(value) in open_containers:
            raise AliasCycle("a YAML alias refers to the value that contains it")
        if children is None:
            if foreign is None and not isinstance(value, _JSON_SCALARS):
                foreign = type(value)
            continue
        open_containers.add(id(value))
        distinct += 1 + len(children)
        stack.append((value, True))
        stack.extend((child, False) for child in children)
    return YamlValues(expanded.get(id(document), 1), distinct, foreign)


def _children(value: Any) -> list[Any] | None:
    """A mapping's keys and values, a list's items; None for a scalar."""
    if isinstance(value, dict):
        return [*value.keys(), *value.values()]
    if isinstance(value, list):
        return value
    return None
