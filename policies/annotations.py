"""The annotations spotguard reads, parsed strictly and within bounds.

Annotation values are free text written by whoever writes the pod, so each one is read
here with a bound on its size (and, for JSON, on its nesting) and a clear account of what
is wrong, never an exception:

- ``spotguard.dev/prestop-command``: the checkpoint hook's command, a JSON list of strings
  (run as is) or a plain shell command (run with ``/bin/sh -c``);
- ``spotguard.dev/checkpoint-containers``: comma-separated names of the containers that
  get the hook;
- ``spotguard.dev/injected``: spotguard's own record of what it injected. Anyone can
  write it, so any value is tolerated (an unreadable one is simply replaced).

A steering annotation that names nothing or does not parse is reported as a
:class:`SteeringProblem`; validation turns it into a violation of the ``inject`` rule (a
warning in audit mode, a denial in enforce mode) and mutation falls back to the policy's
choice, so a typo never silently drops the checkpoint hook of a pod that goes to spot.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from policies.shapes import nesting_exceeds

PRESTOP_COMMAND = "spotguard.dev/prestop-command"
CHECKPOINT_CONTAINERS = "spotguard.dev/checkpoint-containers"
INJECTED = "spotguard.dev/injected"

#: Largest JSON annotation value read (bytes); spotguard's own record is about 100.
MAX_JSON_BYTES = 4096
#: Deepest JSON nesting read: a command is a flat list, the record a mapping of a list.
MAX_JSON_DEPTH = 4
#: Largest hook command accepted: it is copied into every hooked container.
MAX_COMMAND_BYTES = 4096
#: Names quoted in one message at most: the annotation is free text, and every quote of it
#: is copied into the denial, the mutating webhook's warning and the audit log.
MAX_QUOTED_NAMES = 10
#: Longest name quoted whole (a container name is a DNS label, at most 63 characters).
MAX_QUOTED_NAME_LENGTH = 63


class AnnotationError(ValueError):
    """An annotation value that cannot be read; the message says why."""


def bounded_json(text: str, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Decode JSON no larger than ``max_bytes`` and no deeper than :data:`MAX_JSON_DEPTH`.

    orjson parses without Python recursion (and refuses more than 1024 levels itself);
    the result is then checked level by level, so no input reaches a recursion limit.
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise AnnotationError(f"it is {size} bytes long, more than the {max_bytes} allowed")
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise AnnotationError(f"it is not valid JSON ({error})") from None
    if nesting_exceeds(value, MAX_JSON_DEPTH):
        raise AnnotationError(f"it nests deeper than {MAX_JSON_DEPTH} levels")
    return value


@dataclass(frozen=True)
class SteeringProblem:
    """A steering annotation that cannot be followed, phrased for a violation."""

    annotation: str
    problem: str
    fix: str
    brief: str

    @property
    def field(self) -> str:
        return f"metadata.annotations[{self.annotation}]"


def pre_stop_command(value: str | None) -> tuple[tuple[str, ...] | None, SteeringProblem | None]:
    """(command, problem) for a ``prestop-command`` value; (None, None) when absent."""
    if value is None:
        return None, None
    fix = (
        'write a JSON list of strings such as ["python", "/app/save.py"], or a plain shell '
        "command, or remove the annotation to use the policy's hook"
    )

    def problem(text: str, brief: str) -> tuple[None, SteeringProblem]:
        return None, SteeringProblem(PRESTOP_COMMAND, text, fix, f"{PRESTOP_COMMAND} {brief}")

    stripped = value.strip()
    if not stripped:
        return problem("is empty", "is empty")
    if "\x00" in value:
        return problem("contains a NUL character, which no command can", "contains NUL")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_COMMAND_BYTES:
        return problem(f"is longer than {MAX_COMMAND_BYTES} bytes", "is too long")
    if stripped[0] not in "[{":
        return ("/bin/sh", "-c", value), None
    try:
        parsed = bounded_json(stripped, MAX_COMMAND_BYTES)
    except AnnotationError as error:
        return problem(f"looks like JSON but {error}", "is not valid JSON")
    if (
        isinstance(parsed, list)
        and parsed
        and all(isinstance(part, str) and part for part in parsed)
    ):
        return tuple(parsed), None
    return problem(
        "is JSON but not a non-empty list of non-empty strings", "is not a list of strings"
    )


def _quoted(names: list[str], total: int) -> str:
    """The first few of ``total`` names for a message, each cut to a container name's length."""
    shown = [
        name if len(name) <= MAX_QUOTED_NAME_LENGTH else name[:MAX_QUOTED_NAME_LENGTH] + "..."
        for name in names[:MAX_QUOTED_NAMES]
    ]
    more = total - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")


def checkpoint_containers(
    value: str | None, container_names: Iterable[str]
) -> tuple[frozenset[str] | None, SteeringProblem | None]:
    """(names, problem) for a ``checkpoint-containers`` value; (None, None) when absent.

    Every name must be a regular container of the pod: a typo would otherwise hook
    nothing while the pod still goes to spot.
    """
    if value is None:
        return None, None
    present = list(dict.fromkeys(container_names))
    # str methods mapped in C: the value is free text, possibly a megabyte of names.
    names = frozenset(map(str.strip, value.split(","))) - {""}
    listing = _quoted(present, len(present)) or "none"
    fix = (
        f"list containers of the pod, comma-separated ({listing}), or remove the "
        "annotation to hook the policy's choice"
    )
    if not names:
        problem = "names no container"
        return None, SteeringProblem(
            CHECKPOINT_CONTAINERS, problem, fix, f"{CHECKPOINT_CONTAINERS} {problem}"
        )
    unknown = names.difference(present)
    if unknown:
        first = heapq.nsmallest(MAX_QUOTED_NAMES, unknown)  # sorting all would cost more
        which = "is not a container" if len(unknown) == 1 else "are not containers"
        quoted = _quoted(first, len(unknown))
        problem = f"names {quoted}, which {which} of the pod (its containers: {listing})"
        brief = f"{CHECKPOINT_CONTAINERS} names unknown container {_quoted(first[:1], 1)}"
        return None, SteeringProblem(CHECKPOINT_CONTAINERS, problem, fix, brief)
    return names, None


def injected_kinds(annotations: Mapping[str, str]) -> list[str]:
    """The kinds a previous ``spotguard.dev/injected`` record lists; [] for anything else."""
    text = annotations.get(INJECTED)
    if not isinstance(text, str):
        return []
    try:
        record = bounded_json(text)
    except AnnotationError:
        return []
    kinds = record.get("injected") if isinstance(record, dict) else None
    if not isinstance(kinds, list):
        return []
    return [kind for kind in kinds if isinstance(kind, str)]
