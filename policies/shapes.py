"""Shapes: every field spotguard reads, checked before any rule runs.

The API server sends well-typed objects, but CRDs may preserve unknown fields, other
clients may call the webhook, and the CLI reads whatever a file holds. A rule that meets
a list where it expects a mapping would raise, and with ``failurePolicy: Ignore`` an
exception is a bypass. So the fields the rules read are described here once, as data,
and checked up front: what does not fit is reported by path (``object.spec.tolerations[0]:
must be a mapping``) and the request is refused as malformed instead of half-judged.

A field that is absent or null is unset, as the API server treats it; only the roots of
a pod (``metadata``, ``spec``) must be mappings when present. Fields the rules never read
are not looked at, however they are shaped, except for how deeply they nest: copying,
comparing and diffing an object walk all of it, so an object nested deeper than
:data:`MAX_NESTING` levels is refused before any of that runs (Python's recursion limit
would otherwise be hit somewhere in the standard library).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Deepest nesting of mappings and lists accepted in a reviewed object. Kubernetes objects
#: stay far below it (a JobSet template's deepest field, or its managedFields entry, is
#: about 30 levels down); CRDs that preserve unknown fields are the only way to go deeper.
MAX_NESTING = 100
#: At most this many problems are listed in one answer; the first ones say enough.
MAX_PROBLEMS = 10


def nesting_exceeds(value: Any, limit: int = MAX_NESTING) -> bool:
    """Whether mappings and lists nest more than ``limit`` levels deep, without recursing.

    Walks level by level, so its own depth is constant whatever the input.
    """
    if type(value) is not dict and type(value) is not list:
        return False
    level = [value]
    for _ in range(limit):
        level = [
            child
            for node in level
            for child in (node.values() if type(node) is dict else node)
            if type(child) is dict or type(child) is list
        ]
        if not level:
            return False
    return True


@dataclass(frozen=True)
class Scalar:
    """A string, integer (booleans excluded, as in JSON) or boolean."""

    type: type
    description: str

    def check(self, value: Any, path: str, problems: list[str]) -> None:
        if type(value) is not self.type:  # JSON decodes to exact types; bool is no int
            problems.append(f"{path}: must be {self.description}")


STRING = Scalar(str, "a string")
INTEGER = Scalar(int, "an integer")
BOOLEAN = Scalar(bool, "a boolean")


@dataclass(frozen=True)
class Fields:
    """A mapping whose listed fields have shapes; other fields are not read, so not checked."""

    fields: Mapping[str, Shape]
    #: Fields that may be absent but never null (a pod's ``metadata`` and ``spec``).
    not_null: frozenset[str] = field(default_factory=frozenset)

    def check(self, value: Any, path: str, problems: list[str]) -> None:
        if type(value) is not dict:
            problems.append(f"{path}: must be a mapping")
            return
        fields = self.fields
        # The object's own keys (a handful) rather than every field the shape knows.
        for name, item in value.items():
            shape = fields.get(name)
            if shape is not None and item is not None:
                shape.check(item, f"{path}.{name}", problems)
        for name in self.not_null:
            if name in value and value[name] is None:
                problems.append(f"{path}.{name}: must be a mapping, not null")


@dataclass(frozen=True)
class ListOf:
    item: Shape

    def check(self, value: Any, path: str, problems: list[str]) -> None:
        if type(value) is not list:
            problems.append(f"{path}: must be a list")
            return
        # A null in a list of strings reads as ""; a null where a mapping belongs is wrong.
        null_is_unset = isinstance(self.item, Scalar)
        _check_entries(enumerate(value), self.item, path, problems, null_is_unset)


@dataclass(frozen=True)
class MapOf:
    """A mapping from any key to values of one shape (labels, annotations, nodeSelector)."""

    value: Shape

    def check(self, value: Any, path: str, problems: list[str]) -> None:
        if type(value) is not dict:
            problems.append(f"{path}: must be a mapping")
            return
        value_shape = self.value
        # Labels and annotations: many, and all strings, so check the common case at once.
        if value_shape is STRING and all(type(v) is str or v is None for v in value.values()):
            return
        _check_entries(value.items(), value_shape, path, problems, null_is_unset=True)


Shape = Scalar | Fields | ListOf | MapOf


def _check_entries(
    entries: Iterable[tuple[object, Any]],
    shape: Shape,
    path: str,
    problems: list[str],
    null_is_unset: bool,
) -> None:
    """Check each ``(index or key, item)`` of a list or mapping against ``shape``, as
    ``path[index]``, stopping once more problems are found than are listed."""
    for key, item in entries:
        if item is None:
            if not null_is_unset:
                problems.append(f"{path}[{key}]: must be a mapping")
        else:
            shape.check(item, f"{path}[{key}]", problems)
        if len(problems) > MAX_PROBLEMS:
            return


STRING_MAP = MapOf(STRING)

_SELECTOR_REQUIREMENT = Fields({"key": STRING, "operator": STRING, "values": ListOf(STRING)})
_NODE_SELECTOR_TERM = Fields(
    {
        "matchExpressions": ListOf(_SELECTOR_REQUIREMENT),
        "matchFields": ListOf(_SELECTOR_REQUIREMENT),
    }
)
_CONTAINER = Fields(
    {
        "name": STRING,
        "lifecycle": Fields({"preStop": Fields({})}),
        "env": ListOf(Fields({"name": STRING})),
        "volumeMounts": ListOf(Fields({"name": STRING, "mountPath": STRING})),
    }
)

#: The parts of a PodSpec the rules read.
POD_SPEC = Fields(
    {
        "nodeName": STRING,
        "priorityClassName": STRING,
        "terminationGracePeriodSeconds": INTEGER,
        "containers": ListOf(_CONTAINER),
        "initContainers": ListOf(_CONTAINER),
        "tolerations": ListOf(
            Fields(
                {
                    "key": STRING,
                    "operator": STRING,
                    "value": STRING,
                    "effect": STRING,
                    "tolerationSeconds": INTEGER,
                }
            )
        ),
        "volumes": ListOf(
            Fields(
                {
                    "name": STRING,
                    "hostPath": Fields({"path": STRING}),
                    "persistentVolumeClaim": Fields({"claimName": STRING}),
                }
            )
        ),
        "nodeSelector": STRING_MAP,
        "affinity": Fields(
            {
                "nodeAffinity": Fields(
                    {
                        "requiredDuringSchedulingIgnoredDuringExecution": Fields(
                            {"nodeSelectorTerms": ListOf(_NODE_SELECTOR_TERM)}
                        ),
                        "preferredDuringSchedulingIgnoredDuringExecution": ListOf(
                            Fields({"weight": INTEGER, "preference": _NODE_SELECTOR_TERM})
                        ),
                    }
                )
            }
        ),
    }
)

_OWNER_REFERENCE = Fields(
    {"apiVersion": STRING, "kind": STRING, "name": STRING, "uid": STRING, "controller": BOOLEAN}
)
_POD_METADATA = Fields(
    {
        "name": STRING,
        "generateName": STRING,
        "namespace": STRING,
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
        "ownerReferences": ListOf(_OWNER_REFERENCE),
    }
)

#: A Pod, or a PodTemplateSpec (the same metadata and spec, nothing else read).
POD = Fields({"metadata": _POD_METADATA, "spec": POD_SPEC}, frozenset({"metadata", "spec"}))

#: A workload object around its templates: what messages and template pods read of it.
WORKLOAD = Fields(
    {
        "apiVersion": STRING,
        "kind": STRING,
        # The growth bound sums the object's own annotations too.
        "metadata": Fields(
            {"name": STRING, "generateName": STRING, "namespace": STRING, "annotations": STRING_MAP}
        ),
    },
    frozenset({"metadata"}),
)

#: A Binding (``pods/binding``): which pod, and the node it is bound to.
BINDING = Fields(
    {"metadata": Fields({"name": STRING}), "target": Fields({"kind": STRING, "name": STRING})},
    frozenset({"metadata"}),
)

#: ``request.userInfo``: who sends the request, as the API server authenticated them.
USER_INFO = Fields(
    {"username": STRING, "uid": STRING, "groups": ListOf(STRING), "extra": MapOf(ListOf(STRING))}
)


def problems_of(value: Any, shape: Shape, path: str) -> list[str]:
    """Every place where ``value`` does not fit ``shape``, as ``path: what it must be``."""
    problems: list[str] = []
    shape.check(value, path, problems)
    return problems[:MAX_PROBLEMS]
