"""The JSON Patch diff: exact for any pair of documents, with RFC 6901 escaping."""

from __future__ import annotations

import random
from typing import Any

import jsonpatch
import pytest

from policies.patch import make_patch

KEYS = ["a", "b/c", "d~e", "~1", "/", "x~0/y", ""]


def random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.choice(["dict", "list", "scalar"] if depth < 3 else ["scalar"])
    if kind == "dict":
        return {rng.choice(KEYS): random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    if kind == "list":
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return rng.choice([None, True, 0, 1, "s", "t", 2.5])


def mutate(rng: random.Random, value: Any, depth: int = 0) -> Any:
    """A random edit of the kinds mutations make (add, append) and some they never make."""
    if isinstance(value, dict) and value and rng.random() < 0.7:
        key = rng.choice(list(value))
        edited = dict(value)
        choice = rng.random()
        if choice < 0.2:
            del edited[key]
        elif choice < 0.4:
            edited[rng.choice(KEYS)] = random_json(rng, depth + 1)
        else:
            edited[key] = mutate(rng, value[key], depth + 1)
        return edited
    if isinstance(value, list) and rng.random() < 0.7:
        edited_list = [
            mutate(rng, item, depth + 1) if rng.random() < 0.3 else item for item in value
        ]
        if rng.random() < 0.5:
            edited_list.append(random_json(rng, depth + 1))
        if edited_list and rng.random() < 0.2:
            edited_list.pop(rng.randrange(len(edited_list)))
        return edited_list
    return random_json(rng, depth)


@pytest.mark.parametrize("seed", range(300))
def test_applying_the_patch_gives_the_target(seed: int) -> None:
    rng = random.Random(seed)
    source = {"metadata": random_json(rng), "spec": random_json(rng)}
    target = mutate(rng, source)
    patch = make_patch(source, target)
    assert jsonpatch.apply_patch(source, patch) == target
    assert make_patch(target, target) == []


def test_keys_are_escaped_as_json_pointer_requires() -> None:
    source = {"metadata": {"annotations": {"a~b/c": "1"}}}
    target = {"metadata": {"annotations": {"a~b/c": "2", "example.com/x": "y"}}}
    assert make_patch(source, target) == [
        {"op": "replace", "path": "/metadata/annotations/a~0b~1c", "value": "2"},
        {"op": "add", "path": "/metadata/annotations/example.com~1x", "value": "y"},
    ]


def test_appended_items_are_added_at_the_end() -> None:
    source = {"spec": {"tolerations": [{"key": "gpu"}]}}
    target = {"spec": {"tolerations": [{"key": "gpu"}, {"key": "spot"}]}}
    assert make_patch(source, target) == [
        {"op": "add", "path": "/spec/tolerations/-", "value": {"key": "spot"}}
    ]
