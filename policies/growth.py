"""Growth bounds: what spotguard adds never turns a valid object into one the API refuses.

Two limits apply to what a mutating webhook returns, whatever the object:

- annotations: at most 256 KiB in total, keys plus values
  (``TotalAnnotationSizeLimitB`` in ``k8s.io/apimachinery/pkg/api/validation``);
- the object: it is stored in one etcd request, and etcd refuses requests over 1.5 MiB by
  default (``DefaultMaxRequestBytes`` in ``go.etcd.io/etcd/server/v3/embed``). The API
  server itself reads request bodies up to 3 MiB (``MaxRequestBodyBytes`` in
  ``k8s.io/apiserver/pkg/server``), so an object may arrive larger than it can be stored.

The object's size is measured as compact JSON, which is never smaller than the protobuf
the API server stores built-in kinds in, so the bound errs on the safe side. An object
that is already over a limit is not made larger. What does not fit is dropped in order of
weight and a warning says so: first spotguard's ``injected`` record, then the checkpoint
hook, its environment and volume (about 1.5 KB per container); the placement changes
(tolerations, affinity, grace period) are dropped only if even they do not fit.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import orjson

from policies.annotations import INJECTED
from policies.model import Policy
from policies.pods import JSONObject
from policies.verdict import MutationVerdict

TOTAL_ANNOTATION_BYTES = 256 * 1024
MAX_OBJECT_BYTES = 1536 * 1024


def annotation_bytes(obj: Mapping[str, Any]) -> int:
    """Total size of an object's annotations as the API server counts it (UTF-8 bytes)."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return sum(
        len(str(key).encode("utf-8", "surrogatepass"))
        + len(str(value).encode("utf-8", "surrogatepass"))
        for key, value in annotations.items()
    )


def object_bytes(obj: Any) -> int:
    """Size of the object as compact JSON."""
    try:
        return len(orjson.dumps(obj))
    except TypeError:  # a key orjson refuses (YAML read by the CLI may have int keys)
        return len(json.dumps(obj, separators=(",", ":"), default=str).encode())


def overflow(original: Mapping[str, Any], mutated: Mapping[str, Any]) -> str:
    """Which limit the mutation pushes the object past ("" when it fits).

    A limit the original already exceeded counts as passed whenever the mutation grows
    what it measures: spotguard must not make a refused object worse.
    """
    before, after = annotation_bytes(original), annotation_bytes(mutated)
    if after > before and after > TOTAL_ANNOTATION_BYTES:
        limit = TOTAL_ANNOTATION_BYTES
        return f"annotations would total {after} bytes, more than the API allows ({limit})"
    size = object_bytes(mutated)
    if size > MAX_OBJECT_BYTES and size > object_bytes(original):
        return f"the object would be {size} bytes, more than etcd stores ({MAX_OBJECT_BYTES})"
    return ""


def without_record(original: Mapping[str, Any], mutated: dict[str, Any]) -> dict[str, Any]:
    """``mutated`` with spotguard's ``injected`` record as the original had it."""
    metadata = dict(mutated.get("metadata") or {})
    annotations = dict(metadata.get("annotations") or {})
    previous = ((original.get("metadata") or {}).get("annotations") or {}).get(INJECTED)
    if previous is None:
        annotations.pop(INJECTED, None)
    else:
        annotations[INJECTED] = previous
    if annotations or "annotations" in (original.get("metadata") or {}):
        metadata["annotations"] = annotations
    else:
        metadata.pop("annotations", None)
    return {**mutated, "metadata": metadata}


def lean(policy: Policy) -> Policy:
    """The policy without its heavy injections (checkpoint hook, environment, volume)."""
    inject = policy.inject
    return replace(
        policy,
        inject=replace(
            inject,
            pre_stop=replace(inject.pre_stop, enabled=False),
            checkpoint=replace(inject.checkpoint, claim_name=None, env=False),
        ),
    )


def bounded(
    original: JSONObject, mutate: Callable[[Policy], MutationVerdict], policy: Policy
) -> MutationVerdict:
    """The mutation, or the largest part of it that keeps the object within the API's limits.

    Tried in order: everything; without spotguard's ``injected`` record; without the
    checkpoint hook, environment and volume; nothing. Each step down is a warning.
    """
    full: MutationVerdict = mutate(policy)
    if full.patched is None:
        return full
    reason = overflow(original, full.patched)
    if not reason:
        return full
    candidates = [(full, without_record(original, full.patched), "spotguard's injected record")]
    slim: MutationVerdict = mutate(lean(policy))
    if slim.patched is not None:
        dropped = "the checkpoint hook, its environment and volume"
        candidates += [
            (slim, slim.patched, dropped),
            (slim, without_record(original, slim.patched), f"{dropped}, and the record"),
        ]
    for verdict, patched, dropped in candidates:
        if not overflow(original, patched):
            note = f"spotguard: {reason}; not injected: {dropped}"
            return replace(verdict, patched=patched, warnings=(*verdict.warnings, note))
    note = f"spotguard: {reason}; nothing injected"
    return replace(full, patched=None, changes=(), rules=(), warnings=(*full.warnings, note))
