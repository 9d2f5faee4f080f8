"""JSON Schema of the policy document, and error messages that name the bad field.

The schema checks shape only; defaults come from ``default_policy.yaml``, merged under the
user's document before validation, so the schema can require every key.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from policies.model import Rule
from policies.operators import OPERATOR_PRESETS
from policies.paths import render
from policies.presets import PRESETS

MODES = ["enforce", "audit", "off"]
EFFECTS = ["NoSchedule", "PreferNoSchedule", "NoExecute"]
SELECTOR_OPERATORS = ["In", "NotIn", "Exists", "DoesNotExist"]

_STRING_LIST: dict[str, Any] = {"type": "array", "items": {"type": "string", "minLength": 1}}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    """A closed object: every property required, no unknown keys (typos are errors)."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


_RULE = _object({"mode": {"enum": MODES}})

_LABEL_SELECTOR_REQUIREMENT = {
    "type": "object",
    "properties": {
        "key": {"type": "string", "minLength": 1},
        "operator": {"enum": SELECTOR_OPERATORS},
        "values": _STRING_LIST,
    },
    "required": ["key", "operator"],
    "additionalProperties": False,
}

_OPERATORS = {"type": "array", "items": {"enum": sorted(OPERATOR_PRESETS)}}

#: A node taint; a null or absent value stands for any value.
_TAINT = {
    "type": "object",
    "properties": {
        "key": {"type": "string", "minLength": 1},
        "value": {"type": ["string", "null"]},
        "effect": {"enum": EFFECTS},
    },
    "required": ["key", "effect"],
    "additionalProperties": False,
}

_TEMPLATE_PATH = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {
            "type": "object",
            "properties": {
                "path": {"type": "string", "minLength": 1},
                "podSpec": {"type": "boolean"},
                "mutate": {"type": "boolean"},
                "operatorOptIn": {"type": "boolean"},
            },
            "required": ["path"],
            "additionalProperties": False,
        },
    ],
    "x-message": "must be a template path, or a mapping with path (and podSpec, mutate, "
    "operatorOptIn)",
}

_WORKLOAD_KIND = {
    "type": "object",
    "properties": {
        "group": {"type": "string"},
        "kind": {"type": "string", "minLength": 1},
        "resource": {"type": "string", "minLength": 1},
        "versions": {**_STRING_LIST, "minItems": 1},
        "operators": _OPERATORS,
        "templatePaths": {"type": "array", "items": _TEMPLATE_PATH},
    },
    "required": ["group", "kind", "templatePaths"],
    "additionalProperties": False,
}

POLICY_SCHEMA: dict[str, Any] = _object(
    {
        "apiVersion": {"const": "spotguard.dev/v1alpha1"},
        "kind": {"const": "SpotPolicy"},
        "mode": {"enum": MODES},
        "namespaces": _object({"include": _STRING_LIST, "exclude": _STRING_LIST}),
        "exemptions": _object(
            {
                "daemonSetPodCreators": _STRING_LIST,
                "mirrorPodCreators": _object(
                    {"nodeUserPrefix": {"type": "string"}, "nodeGroup": {"type": "string"}}
                ),
            }
        ),
        "faultTolerant": {
            "type": "object",
            "properties": {
                "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
                "matchExpressions": {"type": "array", "items": _LABEL_SELECTOR_REQUIREMENT},
                "operatorPresets": _OPERATORS,
            },
            "additionalProperties": False,
            "minProperties": 1,
        },
        "spotNodes": _object(
            {
                "presets": {"type": "array", "items": {"enum": sorted(PRESETS)}},
                "labels": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "key": {"type": "string", "minLength": 1},
                            "values": {**_STRING_LIST, "minItems": 1},
                            "taints": {"type": "array", "items": _TAINT},
                        },
                        "required": ["key", "values"],
                        "additionalProperties": False,
                    },
                },
                "taints": {"type": "array", "items": _TAINT},
                "guaranteedPresetTaints": {"type": "boolean"},
                "noticeWindowSeconds": {"type": ["integer", "null"], "minimum": 1},
                "usableNoticeSeconds": _object(
                    {
                        provider: {"type": "integer", "minimum": 1}
                        for provider in ("aws", "gcp", "azure", "generic")
                    }
                ),
            }
        ),
        "inject": _object(
            {
                "tolerations": {"type": "boolean"},
                "nodeAffinity": _object(
                    {
                        "preferSpotWeight": {"type": "integer", "minimum": 0, "maximum": 100},
                        "avoidCriticalAddons": {"type": "boolean"},
                        "criticalAddonsLabel": {"type": "string", "minLength": 1},
                        "instanceTypes": _STRING_LIST,
                        "instanceTypeLabel": {"type": "string", "minLength": 1},
                    }
                ),
                "preStop": _object(
                    {
                        "enabled": {"type": "boolean"},
                        "command": {**_STRING_LIST, "minItems": 1},
                        "containers": _STRING_LIST,
                        "replaceExisting": {"type": "boolean"},
                        "sigtermReserveSeconds": {"type": "integer", "minimum": 0},
                    }
                ),
                "terminationGracePeriod": {"type": "boolean"},
                "checkpoint": _object(
                    {
                        "claimName": {"type": ["string", "null"], "minLength": 1},
                        "mountPath": {"type": "string", "pattern": "^/"},
                        "env": {"type": "boolean"},
                    }
                ),
            }
        ),
        "workloads": _object(
            {
                "mutateTemplates": {"type": "boolean"},
                "kinds": {"type": "array", "items": _WORKLOAD_KIND},
                "extraKinds": {"type": "array", "items": _WORKLOAD_KIND},
            }
        ),
        "poorCandidates": _object(
            {
                "statefulOwnerKinds": _STRING_LIST,
                "latencyCritical": _object(
                    {
                        "key": {"type": "string", "minLength": 1},
                        "priorityClassNames": _STRING_LIST,
                    }
                ),
                "localStorage": _object(
                    {
                        "hostPath": {"type": "boolean"},
                        "hostPathExemptPrefixes": {
                            "type": "array",
                            "items": {"type": "string", "pattern": "^/"},
                        },
                    }
                ),
            }
        ),
        "nodeBinding": _object(
            {"unknownNodes": {"enum": ["allow", "deny"]}, "trustedSchedulers": _STRING_LIST}
        ),
        "checkpointBudget": _object(
            {"writeBandwidthGBps": {"type": "number", "exclusiveMinimum": 0}}
        ),
        "rules": _object({rule.key: _RULE for rule in Rule}),
    }
)

_VALIDATOR = Draft202012Validator(POLICY_SCHEMA)


def format_path(path: Iterable[str | int]) -> str:
    """Render a document path the way users read YAML: ``spotNodes.taints[1].effect``."""
    return render(tuple(path)) or "(document)"


def _describe(error: ValidationError) -> str:
    """One short sentence per failed check; jsonschema's own text quotes whole subtrees."""
    validator = error.validator
    argument: Any = error.validator_value
    if isinstance(error.schema, dict) and "x-message" in error.schema:
        return str(error.schema["x-message"])
    if validator == "enum":
        return "must be one of " + ", ".join(str(choice) for choice in argument)
    if validator == "const":
        return f"must be {argument}"
    if validator == "type":
        kinds = argument if isinstance(argument, list) else [argument]
        return "must be " + " or ".join(
            {"integer": "an integer", "object": "a mapping", "array": "a list"}.get(k, f"a {k}")
            for k in kinds
        )
    if validator == "exclusiveMinimum":
        return f"must be greater than {argument}"
    if validator == "minimum":
        return f"must be at least {argument}"
    if validator == "maximum":
        return f"must be at most {argument}"
    if validator == "minItems":
        return f"must have at least {argument} item(s)"
    if validator == "minProperties":
        return "must not be empty"
    if validator == "minLength":
        return "must not be empty"
    if validator == "pattern":
        return f"must match {argument}"
    return error.message


def schema_errors(document: dict[str, Any]) -> list[str]:
    """Every schema violation as ``path: problem``, sorted by path for stable output."""
    messages: list[str] = []
    for error in _VALIDATOR.iter_errors(document):
        path = list(error.absolute_path)
        if error.validator == "additionalProperties":
            known = set(error.schema.get("properties", {}))
            for extra in sorted(set(error.instance) - known):
                messages.append(f"{format_path([*path, extra])}: unknown field")
        elif error.validator == "required":
            missing = [key for key in error.validator_value if key not in error.instance]
            for key in missing:
                messages.append(f"{format_path([*path, key])}: required field is missing")
        else:
            messages.append(f"{format_path(path)}: {_describe(error)}")
    return sorted(set(messages))
