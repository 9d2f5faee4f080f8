"""The checkpoint budget: does a pod's final checkpoint fit the time preemption leaves?

A save that must be durable when the node goes away has the preStop hook's budget:
min(grace period, usable notice) minus the reserve kept for SIGTERM handling. At the
policy's write bandwidth, a checkpoint larger than bandwidth x budget cannot be saved in
time; the fix is periodic checkpoints, with the final save only flushing the newest one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from policies.decisions import Violation
from policies.model import Mode, Policy, Rule
from policies.pods import annotations_of, chosen_grace, spec_of
from policies.quantity import QuantityError, parse_bytes

CHECKPOINT_SIZE_ANNOTATION = "spotguard.dev/checkpoint-size"
_FIELD = f"metadata.annotations[{CHECKPOINT_SIZE_ANNOTATION}]"


def checkpoint_budget_violations(pod: Mapping[str, Any], policy: Policy) -> list[Violation]:
    mode = policy.mode_of(Rule.CHECKPOINT_FITS_NOTICE)
    declared = annotations_of(pod).get(CHECKPOINT_SIZE_ANNOTATION)
    if mode is Mode.OFF or declared is None:
        return []
    try:
        size = parse_bytes(declared)
    except QuantityError as error:
        return [
            Violation(
                Rule.CHECKPOINT_FITS_NOTICE, mode, _FIELD,
                f"{declared[:40]!r} is not a size: {error}",
                "write a Kubernetes quantity of bytes such as 16Gi, 500M or 1e12",
                f"checkpoint size {declared[:20]!r} is not a quantity such as 16Gi",
            )
        ]  # fmt: skip
    grace = chosen_grace(spec_of(pod), policy.inject.termination_grace_period)
    window = policy.notice_seconds if grace is None else min(grace, policy.notice_seconds)
    reserve = policy.inject.pre_stop.sigterm_reserve_seconds
    budget = max(window - reserve, 0)
    gbps = policy.checkpoint_write_gbps
    needed = size / (gbps * 1e9)
    if needed <= budget:
        return []
    fits = gbps * budget
    return [
        Violation(
            Rule.CHECKPOINT_FITS_NOTICE,
            mode,
            _FIELD,
            f"a {declared} checkpoint takes about {needed:.0f}s to save at {gbps:g} GB/s, but "
            f"preemption leaves {budget}s ({window}s until the pod is killed, minus "
            f"{reserve}s kept for SIGTERM)",
            "checkpoint periodically so the final save only flushes the newest checkpoint "
            f"(at most {fits:.1f} GB fits), or copy the state to pinned host memory (about "
            "50 GB/s) and write it asynchronously",
            f"{declared} checkpoint needs ~{needed:.0f}s to save; preemption leaves {budget}s",
        )
    ]
