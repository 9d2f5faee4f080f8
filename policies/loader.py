"""Turn a policy document (YAML text or a mapping) into a compiled :class:`Policy`.

Loading starts from the built-in defaults and merges the user's document over them, so a
ConfigMap only states what it changes. Any problem raises :class:`PolicyError` listing
every bad field by path; callers keep their last good policy.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import replace
from functools import cache
from importlib import resources
from typing import Any, TypeVar

import yaml

from policies.model import (
    AffinitySettings,
    CheckpointSettings,
    ExemptionSettings,
    InjectSettings,
    LabelSelector,
    Mode,
    Policy,
    PoorCandidateSettings,
    PreStopSettings,
    Rule,
    SelectorRequirement,
    SpotClass,
    TemplateLocation,
    WorkloadKind,
)
from policies.operators import OPERATOR_PRESETS
from policies.paths import parse_path
from policies.presets import PRESETS, NodeLabel, Preset, Taint
from policies.schema import format_path, schema_errors
from policies.yaml_values import AliasCycle, measure


class PolicyError(ValueError):
    """The document is not a valid policy; ``problems`` holds one ``path: message`` each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid policy: " + "; ".join(problems))
        self.problems = problems


def default_document() -> dict[str, Any]:
    """A fresh copy of the built-in policy document."""
    return copy.deepcopy(_default_document())


@cache
def _default_document() -> dict[str, Any]:
    """default_policy.yaml, with the ``rules`` block built from the rule table (Rule)."""
    text = resources.files("policies").joinpath("default_policy.yaml").read_text("utf-8")
    document = yaml.safe_load(text)
    assert isinstance(document, dict) and "rules" not in document, "rules come from Rule"
    document["rules"] = {rule.key: {"mode": str(rule.default)} for rule in Rule}
    return document


#: The keys of ``faultTolerant`` that form its label selector. A document that states either
#: replaces the default selector whole: merging would keep the default opt-in label beside
#: the user's own, so a pod would have to carry both. ``operatorPresets`` merges on its own.
_SELECTOR_KEYS = frozenset({"matchLabels", "matchExpressions"})


def _merge_fault_tolerant(override: Any, base: dict[str, Any]) -> Any:
    if not isinstance(override, dict) or not override:
        return override  # the schema names the problem
    if _SELECTOR_KEYS & override.keys():
        kept = {k: v for k, v in base.items() if k not in _SELECTOR_KEYS}
        return {**kept, **override}
    return {**base, **override}


def merge_over_defaults(overrides: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into ``base``: mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in overrides.items():
        if key == "faultTolerant" and isinstance(merged.get(key), dict):
            merged[key] = _merge_fault_tolerant(value, merged[key])
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_over_defaults(value, merged[key])
        else:
            merged[key] = value
    return merged


def parse_policy_text(text: str) -> Policy:
    """Parse YAML (or JSON) policy text; an empty document means the defaults.

    Nesting deep enough to exhaust Python's recursion (PyYAML composes recursively) is
    refused like any other bad document: a RecursionError escaping would reach the
    ConfigMap watch as a broken connection, and the revision would be neither in force
    nor reported refused."""
    try:
        return _parse_policy_text(text)
    except RecursionError:
        raise PolicyError(["(document): nested too deeply"]) from None


def _parse_policy_text(text: str) -> Policy:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise PolicyError([f"(document): not valid YAML{where}: {problem}"]) from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise PolicyError(["(document): must be a mapping"])
    try:
        expanded = measure(document).expanded
    except AliasCycle as error:
        raise PolicyError([f"(document): {error}"]) from None
    if expanded > MAX_EXPANDED_VALUES:
        raise PolicyError(
            [f"(document): expands to more than {MAX_EXPANDED_VALUES} values (YAML aliases)"]
        )
    return compile_policy(document)


#: A policy holds hundreds of values. YAML aliases share one value in many places, and
#: the schema check walks every place: nine levels of nine aliases each are a few
#: hundred bytes of text that would take the check hours (a review waits on it).
#: (Keys and values count, as policies.yaml_values measures.)
MAX_EXPANDED_VALUES = 100_000


def compile_policy(document: dict[str, Any]) -> Policy:
    """Validate ``document`` (merged over the defaults) and resolve it into a Policy."""
    merged = merge_over_defaults(_unquoted_off(document), default_document())
    problems = schema_errors(merged)
    if problems:
        raise PolicyError(problems)
    problems = _semantic_errors(merged)
    if problems:
        raise PolicyError(problems)
    return _build(merged)


def _unquoted_off(document: dict[str, Any]) -> dict[str, Any]:
    """Read YAML 1.1's ``mode: off`` (parsed as the boolean false) as the mode "off"."""
    fixed = dict(document)
    if fixed.get("mode") is False:
        fixed["mode"] = "off"
    rules = fixed.get("rules")
    if isinstance(rules, dict):
        fixed["rules"] = {
            name: {**rule, "mode": "off"}
            if isinstance(rule, dict) and rule.get("mode") is False
            else rule
            for name, rule in rules.items()
        }
    return fixed


def _semantic_errors(doc: dict[str, Any]) -> list[str]:
    """Checks a JSON Schema cannot express neatly."""
    problems: list[str] = []
    for index, requirement in enumerate(doc["faultTolerant"].get("matchExpressions", [])):
        path = format_path(["faultTolerant", "matchExpressions", index, "values"])
        has_values = bool(requirement.get("values"))
        if requirement["operator"] in ("In", "NotIn") and not has_values:
            problems.append(f"{path}: must not be empty for operator {requirement['operator']}")
        if requirement["operator"] in ("Exists", "DoesNotExist") and has_values:
            problems.append(f"{path}: must be empty for operator {requirement['operator']}")
    selector = doc["faultTolerant"]
    if (
        not selector.get("matchLabels")
        and not selector.get("matchExpressions")
        and not selector.get("operatorPresets")
    ):
        problems.append(
            "faultTolerant: name matchLabels, matchExpressions or operatorPresets "
            "(an empty selector would opt every pod in)"
        )
    problems += _workload_errors(doc["workloads"])
    spot = doc["spotNodes"]
    if not spot["presets"] and not spot["labels"] and not spot["taints"]:
        problems.append("spotNodes: name at least one preset, label or taint")
    if not spot["presets"] and spot["noticeWindowSeconds"] is None:
        problems.append("spotNodes.noticeWindowSeconds: required when no preset is selected")
    return problems


def _template_entry(entry: str | dict[str, Any]) -> dict[str, Any]:
    return {"path": entry} if isinstance(entry, str) else entry


def _workload_errors(workloads: dict[str, Any]) -> list[str]:
    """Template paths must parse; a kind may appear once per list."""
    problems: list[str] = []
    for field in ("kinds", "extraKinds"):
        seen: set[tuple[str, str]] = set()
        for index, item in enumerate(workloads[field]):
            key = (item["group"], item["kind"])
            if key in seen:
                where = format_path(["workloads", field, index])
                problems.append(f"{where}: {item['kind']} of group {item['group']!r} listed twice")
            seen.add(key)
            for number, entry in enumerate(item["templatePaths"]):
                try:
                    parse_path(_template_entry(entry)["path"])
                except ValueError as error:
                    where = format_path(["workloads", field, index, "templatePaths", number])
                    problems.append(f"{where}: {error}")
    return problems


def _workload_kinds(workloads: dict[str, Any]) -> tuple[WorkloadKind, ...]:
    """The default kinds, with each extra kind added or replacing the one it names."""
    by_key: dict[tuple[str, str], dict[str, Any]] = {}
    for item in [*workloads["kinds"], *workloads["extraKinds"]]:
        by_key[(item["group"], item["kind"])] = item
    return tuple(
        WorkloadKind(
            group=item["group"],
            kind=item["kind"],
            resource=item.get("resource") or item["kind"].lower() + "s",
            versions=tuple(item.get("versions") or ["*"]),
            operators=tuple(item.get("operators") or []),
            templates=tuple(
                TemplateLocation(
                    path=parse_path(entry["path"]),
                    pod_spec=entry.get("podSpec", False),
                    mutate=entry.get("mutate", True),
                    operator_opt_in=entry.get("operatorOptIn", True),
                )
                for entry in map(_template_entry, item["templatePaths"])
            ),
        )
        for item in by_key.values()
    )


def _revision(doc: dict[str, Any]) -> str:
    """A short content hash: the same policy always has the same revision, wherever loaded."""
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


_T = TypeVar("_T")


def _unique(items: list[_T]) -> tuple[_T, ...]:
    return tuple(dict.fromkeys(items))


def _taint(item: dict[str, Any]) -> Taint:
    return Taint(item["key"], item.get("value"), item["effect"])


def _spot_labels(spot: dict[str, Any], presets: list[Preset]) -> list[NodeLabel]:
    """The presets' labels (with their guaranteed taints, unless the policy distrusts
    them) and the policy's own, with the taints it says their nodes always carry."""
    labels = [
        label if spot["guaranteedPresetTaints"] else replace(label, taints=())
        for preset in presets
        for label in preset.labels
    ]
    labels += [
        NodeLabel(
            item["key"],
            tuple(item["values"]),
            tuple(_taint(t) for t in item.get("taints", [])),
        )
        for item in spot["labels"]
    ]
    return labels


def _spot_classes(labels: list[NodeLabel]) -> tuple[SpotClass, ...]:
    """One class per spot label value; a value named twice gets both entries' taints."""
    taints: dict[tuple[str, str], list[Taint]] = {}
    for label in labels:
        for value in label.values:
            taints.setdefault((label.key, value), []).extend(label.taints)
    return tuple(SpotClass(key, value, _unique(found)) for (key, value), found in taints.items())


def _build(doc: dict[str, Any]) -> Policy:
    spot = doc["spotNodes"]
    presets = [PRESETS[name] for name in spot["presets"]]
    labels = _spot_labels(spot, presets)
    taints = [taint for preset in presets for taint in preset.taints]
    taints += [_taint(t) for t in spot["taints"]]
    # A taint every node of a spot label carries is a spot taint too: fault-tolerant pods
    # must tolerate it, other pods must not.
    taints += [taint for label in labels for taint in label.taints]
    usable = spot["usableNoticeSeconds"]
    notice = spot["noticeWindowSeconds"] or min(usable[p.provider] for p in presets)

    selector = doc["faultTolerant"]
    inject = doc["inject"]
    affinity = inject["nodeAffinity"]
    pre_stop = inject["preStop"]
    checkpoint = inject["checkpoint"]
    operator_presets = [OPERATOR_PRESETS[name] for name in selector.get("operatorPresets", [])]
    poor = doc["poorCandidates"]
    return Policy(
        revision=_revision(doc),
        mode=Mode.parse(doc["mode"]),
        rule_modes={rule: Mode.parse(doc["rules"][rule.key]["mode"]) for rule in Rule},
        include_namespaces=frozenset(doc["namespaces"]["include"]),
        exclude_namespaces=frozenset(doc["namespaces"]["exclude"]),
        fault_tolerant=LabelSelector(
            match_labels=tuple(sorted(selector.get("matchLabels", {}).items())),
            match_expressions=tuple(
                SelectorRequirement(r["key"], r["operator"], frozenset(r.get("values", ())))
                for r in selector.get("matchExpressions", [])
            ),
        ),
        spot_labels=_unique(labels),
        spot_taints=_unique(taints),
        spot_classes=_spot_classes(labels),
        notice_seconds=notice,
        checkpoint_write_gbps=float(doc["checkpointBudget"]["writeBandwidthGBps"]),
        inject=InjectSettings(
            tolerations=inject["tolerations"],
            affinity=AffinitySettings(
                prefer_spot_weight=affinity["preferSpotWeight"],
                avoid_critical_addons=affinity["avoidCriticalAddons"],
                critical_addons_label=affinity["criticalAddonsLabel"],
                instance_types=tuple(affinity["instanceTypes"]),
                instance_type_label=affinity["instanceTypeLabel"],
            ),
            pre_stop=PreStopSettings(
                enabled=pre_stop["enabled"],
                command=tuple(pre_stop["command"]),
                containers=frozenset(pre_stop["containers"]),
                replace_existing=pre_stop["replaceExisting"],
                sigterm_reserve_seconds=pre_stop["sigtermReserveSeconds"],
            ),
            termination_grace_period=inject["terminationGracePeriod"],
            checkpoint=CheckpointSettings(
                claim_name=checkpoint["claimName"],
                mount_path=checkpoint["mountPath"],
                env=checkpoint["env"],
            ),
        ),
        operator_selectors=tuple(sel for preset in operator_presets for sel in preset.selectors),
        operator_presets=frozenset(preset.name for preset in operator_presets),
        workloads=_workload_kinds(doc["workloads"]),
        mutate_templates=doc["workloads"]["mutateTemplates"],
        poor_candidates=PoorCandidateSettings(
            stateful_owner_kinds=frozenset(poor["statefulOwnerKinds"]),
            latency_critical_key=poor["latencyCritical"]["key"],
            latency_critical_priority_classes=frozenset(
                poor["latencyCritical"]["priorityClassNames"]
            ),
            host_path=poor["localStorage"]["hostPath"],
            host_path_exempt_prefixes=tuple(poor["localStorage"]["hostPathExemptPrefixes"]),
        ),
        deny_unknown_nodes=doc["nodeBinding"]["unknownNodes"] == "deny",
        exemptions=ExemptionSettings(
            daemon_set_pod_creators=frozenset(doc["exemptions"]["daemonSetPodCreators"]),
            node_user_prefix=doc["exemptions"]["mirrorPodCreators"]["nodeUserPrefix"],
            node_group=doc["exemptions"]["mirrorPodCreators"]["nodeGroup"],
        ),
        trusted_schedulers=frozenset(doc["nodeBinding"]["trustedSchedulers"]),
    )


@cache
def default_policy() -> Policy:
    """The built-in policy, compiled once."""
    return compile_policy({})
