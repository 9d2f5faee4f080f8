"""The checkpoint budget: does a pod's final checkpoint fit the time preemption leaves?

A save that must be durable when the node goes away has the preStop hook's budget:
min(grace period, usable notice) minus the reserve kept for SIGTERM handling. At the
policy's write bandwidth, a checkpoint larger than bandwidth x budget cannot be saved in
time; the fix is periodic checkpoints, with the final save only flushing the newest one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from policies.decisions import Violation
from policies.model import Mode, Policy, Rule
from policies.pods import annotations_of, spec_of

CHECKPOINT_SIZE_ANNOTATION = "spotguard.dev/checkpoint-size"
_FIELD = f"metadata.annotations[{CHECKPOINT_SIZE_ANNOTATION}]"
_UNITS = {
    "": 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}  # fmt: skip
_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|Ti|k|M|G|T)?\s*$")


def parse_size(text: str) -> int | None:
    """Bytes of a Kubernetes-style quantity (``16Gi``, ``500M``, ``1.5G``); None if not one."""
    match = _QUANTITY.match(text)
    if match is None:
        return None
    return int(float(match.group(1)) * _UNITS[match.group(2) or ""])


def checkpoint_budget_violations(pod: Mapping[str, Any], policy: Policy) -> list[Violation]:
    mode = policy.mode_of(Rule.CHECKPOINT_FITS_NOTICE)
    declared = annotations_of(pod).get(CHECKPOINT_SIZE_ANNOTATION)
    if mode is Mode.OFF or declared is None:
        return []
    size = parse_size(declared)
    if size is None:
        return [
            Violation(
                Rule.CHECKPOINT_FITS_NOTICE, mode, _FIELD,
                f"{declared!r} is not a size", "write a quantity such as 16Gi or 500M",
                f"checkpoint size {declared!r} is not a quantity such as 16Gi",
            )
        ]  # fmt: skip
    grace = spec_of(pod).get("terminationGracePeriodSeconds")
    window = min(grace, policy.notice_seconds) if isinstance(grace, int) else policy.notice_seconds
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
