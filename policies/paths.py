"""Template paths: where a workload kind keeps its pod templates, written as data.

A path is dot-separated field names, read from the object's root. Two wildcards fan out:
``name[*]`` visits every item of the list ``name``, and a lone ``*`` visits every value of
the mapping reached so far. So ``spec.replicatedJobs[*].template.spec.template`` reaches
each JobSet job's pod template and ``spec.pytorchReplicaSpecs.*.template`` each replica
type's. Keeping this a tiny language of its own (not JSONPath) means a policy can say
where a new CRD keeps its templates without any code, and every match has one concrete
location that reads like the YAML (``spec.pytorchReplicaSpecs.Worker.template``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

#: One concrete step into decoded JSON: a mapping key or a list index.
Step = str | int
Location = tuple[Step, ...]

_FIELD = r"[A-Za-z_][A-Za-z0-9_-]*"
_SEGMENT = re.compile(rf"^(?:(?P<field>{_FIELD})(?P<items>\[\*\])?|(?P<values>\*))$")


@dataclass(frozen=True)
class TemplatePath:
    """A parsed path: ``steps`` are field names, ``"[*]"`` (list items) or ``"*"`` (map values)."""

    text: str
    steps: tuple[str, ...]


def parse_path(text: str) -> TemplatePath:
    """Parse ``text``; raise ValueError saying what is wrong, for the policy's error list."""
    if not text:
        raise ValueError("must not be empty")
    steps: list[str] = []
    for segment in text.split("."):
        match = _SEGMENT.match(segment)
        if not match:
            raise ValueError(
                f"segment {segment!r} is not a field name, name[*] (list items) or * (map values)"
            )
        if match.group("values"):
            steps.append("*")
            continue
        steps.append(match.group("field"))
        if match.group("items"):
            steps.append("[*]")
    if steps[0] == "*":
        raise ValueError("must start with a field name")
    return TemplatePath(text=text, steps=tuple(steps))


def locate(root: Any, path: TemplatePath) -> Iterator[tuple[Location, Any]]:
    """Every value at ``path`` under ``root``, with its concrete location, in document order.

    Missing, null or mistyped intermediate fields yield nothing: an object that has no
    template there (a Job without ``spec``, a RayCluster without worker groups) simply has
    none to check. The values found are yielded whatever their type (null excepted), so
    the shape checker can report one that is not a mapping.
    """
    nodes: list[tuple[Location, Any]] = [((), root)]
    for step in path.steps:
        following: list[tuple[Location, Any]] = []
        for location, node in nodes:
            if step == "[*]" and isinstance(node, list):
                following += [((*location, i), item) for i, item in enumerate(node)]
            elif step == "*" and isinstance(node, dict):
                following += [((*location, key), value) for key, value in node.items()]
            elif step not in ("[*]", "*") and isinstance(node, dict) and step in node:
                following.append(((*location, step), node[step]))
        nodes = following
    for location, node in nodes:
        if node is not None:
            yield location, node


def value_at(root: Any, location: Location) -> Any:
    """The value at a concrete location, or None where the document has none."""
    node = root
    for step in location:
        if isinstance(step, int):
            if not isinstance(node, list) or step >= len(node):
                return None
        elif not isinstance(node, dict) or step not in node:
            return None
        node = node[step]
    return node


def render(location: Location) -> str:
    """``("spec", "replicatedJobs", 0, "template")`` as ``spec.replicatedJobs[0].template``."""
    text = ""
    for step in location:
        if isinstance(step, int):
            text += f"[{step}]"
        else:
            text += f".{step}" if text else step
    return text
