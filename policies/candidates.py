"""Who may run on spot: fault tolerance, and what makes a fault-tolerant pod a poor candidate.

Mutation, validation and the binding check all ask the same question ("must this pod
stay off spot, and which rule says so?"), so the answer is computed here once, as a list
of :class:`OffSpotReason`: empty for a pod that may use spot, one entry ("not
fault-tolerant") for an ordinary pod, one per poor-candidate rule that matches a pod
labelled fault-tolerant. Each reason carries its rule, mode and wording, so every check
phrases a violation the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from policies.decisions import PodContext
from policies.model import Mode, Policy, Rule
from policies.pods import annotations_of, display_name, labels_of, spec_of


@dataclass(frozen=True)
class OffSpotReason:
    """Why a pod must stay off spot, phrased for violations: ``{subject} but {problem}``.

    The fix depends on the reason: a pod that is not fault-tolerant may simply lack the
    opt-in (``opt_in_hint``), a poor candidate should not be on spot at all (``advice``).
    """

    rule: Rule
    mode: Mode
    subject: str  # "pod is not fault-tolerant", "pod is owned by StatefulSet db"
    brief: str  # prefix of the one-line warning ("" or "StatefulSet pod ")
    opt_in_hint: str = ""  # "if pod web-0 checkpoints and survives preemption, add label ..."
    advice: str = ""  # "StatefulSet pods keep a stable identity ...: run them on on-demand nodes"

    def fix(self, action: str) -> str:
        """The fix for a violation whose own remedy is ``action`` ("remove this toleration")."""
        if self.opt_in_hint:
            return f"{self.opt_in_hint}; otherwise {action}"
        return f"{action}; {self.advice}"


def is_fault_tolerant(pod: Mapping[str, Any], policy: Policy, opted_in: bool = False) -> bool:
    """The pod's labels opt it in, or its workload kind is opted in by an operator preset."""
    return opted_in or policy.opts_in(labels_of(pod))


def off_spot_reasons(
    pod: Mapping[str, Any], context: PodContext, policy: Policy, fault_tolerant: bool
) -> list[OffSpotReason]:
    """Every rule (not off) that wants this pod off spot; empty when it may use spot."""
    if not fault_tolerant:
        mode = policy.mode_of(Rule.SPOT_REQUIRES_FAULT_TOLERANCE)
        if mode is Mode.OFF:
            return []
        return [
            OffSpotReason(
                rule=Rule.SPOT_REQUIRES_FAULT_TOLERANCE,
                mode=mode,
                subject="pod is not fault-tolerant",
                brief="",
                opt_in_hint=(
                    f"if pod {display_name(pod)} checkpoints and survives preemption, "
                    f"{policy.fault_tolerant.describe_opt_in()}"
                ),
            )
        ]
    return poor_candidate_reasons(pod, context, policy)


def poor_candidate_reasons(
    pod: Mapping[str, Any], context: PodContext, policy: Policy
) -> list[OffSpotReason]:
    """Why a fault-tolerant pod should still stay off spot, one reason per matching rule."""
    reasons: list[OffSpotReason] = []
    for rule, finder in (
        (Rule.STATEFUL_WORKLOAD, _stateful_owner),
        (Rule.LATENCY_CRITICAL, _latency_critical),
        (Rule.LOCAL_STORAGE, _local_storage),
    ):
        mode = policy.mode_of(rule)
        if mode is Mode.OFF:
            continue
        found = finder(pod, context, policy)
        if found:
            subject, brief, advice = found
            reasons.append(OffSpotReason(rule, mode, subject, brief, advice=advice))
    return reasons


_Finding = tuple[str, str, str] | None  # (subject, brief, advice)


def _stateful_owner(pod: Mapping[str, Any], context: PodContext, policy: Policy) -> _Finding:
    kinds = policy.poor_candidates.stateful_owner_kinds
    for owner in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if owner.get("kind") in kinds:
            return (
                f"pod is owned by {owner.get('kind')} {owner.get('name', '')}".rstrip(),
                f"{owner.get('kind')} pod ",
                f"{owner.get('kind')} pods keep a stable identity and storage that a "
                "preemption breaks: run them on on-demand nodes",
            )
    return None


def _latency_critical(pod: Mapping[str, Any], context: PodContext, policy: Policy) -> _Finding:
    settings = policy.poor_candidates
    key = settings.latency_critical_key
    advice = "a preemption would interrupt it: run it on on-demand nodes"
    for source, values in (("label", labels_of(pod)), ("annotation", annotations_of(pod))):
        if str(values.get(key, "")).lower() == "true":
            return f"pod is latency-critical ({source} {key}=true)", "latency-critical pod ", advice
    priority_class = spec_of(pod).get("priorityClassName")
    if priority_class in settings.latency_critical_priority_classes:
        return (
            f"pod is latency-critical (priorityClassName {priority_class})",
            "latency-critical pod ",
            advice,
        )
    return None


def _local_storage(pod: Mapping[str, Any], context: PodContext, policy: Policy) -> _Finding:
    settings = policy.poor_candidates
    for volume in spec_of(pod).get("volumes") or []:
        host_path = (volume.get("hostPath") or {}).get("path")
        if (
            host_path
            and settings.host_path
            and not _exempt(host_path, settings.host_path_exempt_prefixes)
        ):
            return (
                f"pod keeps data on its node (hostPath {host_path})",
                "pod with node-local storage ",
                "its data is lost with the node: run it on on-demand nodes, or move the data "
                "to network storage",
            )
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        if claim and context.cluster.is_local_claim(context.namespace, claim):
            return (
                f"pod uses a local PersistentVolume (PVC {claim})",
                "pod with node-local storage ",
                "a local volume pins it to one node, and when a spot node is reclaimed the pod "
                "stays Pending for good: run it on on-demand nodes",
            )
    return None


def _exempt(path: str, prefixes: tuple[str, ...]) -> bool:
    normal = path.rstrip("/") + "/"
    return any(normal.startswith(prefix.rstrip("/") + "/") for prefix in prefixes)
