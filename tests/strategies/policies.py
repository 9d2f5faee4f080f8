"""Policies: valid policy documents over every setting that decides, compiled once each."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from policies.loader import compile_policy
from policies.model import Policy
from policies.operators import OPERATOR_PRESETS
from policies.presets import PRESETS
from policies.schema import MODES

JSON = dict[str, Any]
BOOLEANS = st.booleans()
RULE_KEYS = (
    "inject", "keepOffSpot", "spotRequiresFaultTolerance", "gracePeriodFitsNotice",
    "checkpointFitsNotice", "statefulWorkload", "latencyCritical", "localStorage",
    "spotNodeBinding",
)  # fmt: skip
#: A CRD the policy reviews through workloads.extraKinds.
CRD_KIND = {
    "group": "example.com",
    "kind": "TrainingRun",
    "resource": "trainingruns",
    "templatePaths": ["spec.workers[*].template", {"path": "spec.launcher", "podSpec": True}],
}

# --- policies ----------------------------------------------------------------------------
# Strategies are built once, at import: building one costs hypothesis more than drawing.

_PRESET_LISTS = st.lists(st.sampled_from(sorted(PRESETS)), unique=True, max_size=3)
_CUSTOM_LABEL_LISTS = st.sampled_from(
    [[], [], [{"key": "pool", "values": ["cheap"]}],
     [{"key": "example.com/capacity", "values": ["spot", "SPOT"]}],
     [{"key": "lifecycle", "values": ["spot"]}, {"key": "pool", "values": ["cheap", "true"]}]]
)  # fmt: skip
_CUSTOM_TAINT_LISTS = st.sampled_from(
    [[], [], [{"key": "pool", "value": "cheap", "effect": "NoSchedule"}],
     [{"key": "example.com/capacity", "effect": "NoSchedule"}],  # any value
     [{"key": "spot", "value": "true", "effect": "PreferNoSchedule"},
      {"key": "lifecycle", "effect": "NoExecute"}]]
)  # fmt: skip
_NOTICE = st.sampled_from([None, 15, 30, 110, 600])
#: Enforce most often: most properties are about what enforce mode guarantees.
_MODE = st.sampled_from(["enforce", "enforce", "enforce", *MODES])
_RULE_MODES = st.lists(_MODE, min_size=len(RULE_KEYS), max_size=len(RULE_KEYS))
_SELECTOR: st.SearchStrategy[JSON] = st.sampled_from(
    [{}, {"matchLabels": {"example.com/preemptible": "yes"}},
     {"matchExpressions": [{"key": "example.com/preemptible", "operator": "Exists"}]}]
)  # fmt: skip
_OPERATOR_PRESETS = st.lists(st.sampled_from(sorted(OPERATOR_PRESETS)), unique=True, max_size=2)
_HOOK_CONTAINERS = st.sampled_from([[], [], ["trainer"], ["sidecar", "main"]])
_RESERVE = st.sampled_from([0, 5, 20])
_WEIGHT = st.sampled_from([0, 1, 100])
_INSTANCE_TYPES = st.sampled_from([[], ["g5.xlarge", "g4dn.xlarge"]])
_CLAIM = st.sampled_from([None, "team-checkpoints"])
_EXTRA_KINDS = st.sampled_from([[], [CRD_KIND]])
_UNKNOWN_NODES = st.sampled_from(["allow", "deny"])
_EXEMPT_PREFIXES = st.sampled_from([[], ["/mnt/nvme"]])
_NO_EXEMPTIONS = {
    "daemonSetPodCreators": [],
    "mirrorPodCreators": {"nodeUserPrefix": "", "nodeGroup": "system:nodes"},
}


def _spot_nodes(draw: st.DrawFn) -> JSON:
    presets = draw(_PRESET_LISTS)
    labels, taints = draw(_CUSTOM_LABEL_LISTS), draw(_CUSTOM_TAINT_LISTS)
    if not presets and not labels and not taints:
        labels = [{"key": "pool", "values": ["cheap"]}]
    spot: JSON = {"presets": presets, "labels": labels, "taints": taints}
    notice = draw(_NOTICE)
    if notice is not None or not presets:
        spot["noticeWindowSeconds"] = notice or 30
    return spot


def _inject(draw: st.DrawFn) -> JSON:
    return {
        "tolerations": draw(BOOLEANS),
        "nodeAffinity": {
            "preferSpotWeight": draw(_WEIGHT),
            "avoidCriticalAddons": draw(BOOLEANS),
            "instanceTypes": draw(_INSTANCE_TYPES),
        },
        "preStop": {
            "enabled": draw(BOOLEANS),
            "containers": draw(_HOOK_CONTAINERS),
            "replaceExisting": draw(BOOLEANS),
            "sigtermReserveSeconds": draw(_RESERVE),
        },
        "terminationGracePeriod": draw(BOOLEANS),
        "checkpoint": {"claimName": draw(_CLAIM), "env": draw(BOOLEANS)},
    }


def policy_document(draw: st.DrawFn) -> JSON:
    """A valid policy document (what a ConfigMap may hold), over every setting that decides."""
    selector = dict(draw(_SELECTOR))
    selector["operatorPresets"] = draw(_OPERATOR_PRESETS)
    rule_modes = draw(_RULE_MODES)
    document: JSON = {
        "mode": draw(_MODE),
        "spotNodes": _spot_nodes(draw),
        "faultTolerant": selector,
        "inject": _inject(draw),
        "rules": {key: {"mode": mode} for key, mode in zip(RULE_KEYS, rule_modes, strict=True)},
        "workloads": {"mutateTemplates": draw(BOOLEANS), "extraKinds": draw(_EXTRA_KINDS)},
        "nodeBinding": {"unknownNodes": draw(_UNKNOWN_NODES)},
        "poorCandidates": {"localStorage": {"hostPathExemptPrefixes": draw(_EXEMPT_PREFIXES)}},
    }
    if draw(BOOLEANS):
        document["exemptions"] = _NO_EXEMPTIONS
    return document


_COMPILED: dict[str, Policy] = {}


def policy(draw: st.DrawFn) -> Policy:
    """A compiled policy; documents repeat, so each is compiled once."""
    document = policy_document(draw)
    key = json.dumps(document, sort_keys=True)
    compiled = _COMPILED.get(key)
    if compiled is None:
        compiled = _COMPILED[key] = compile_policy(document)
    return compiled


def policy_documents() -> st.SearchStrategy[JSON]:
    return st.composite(policy_document)()


def policies() -> st.SearchStrategy[Policy]:
    """Compiled policies; every document :func:`policy_documents` draws is valid."""
    return st.composite(policy)()
