"""Spot capacity presets: how each provider marks spot nodes and how long it warns.

The facts here are the providers' own conventions (node labels, default taints, notice
windows). Keeping them as data lets a policy combine presets ("eks" + "karpenter") without
any provider-specific code in the rules.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NodeLabel:
    """A node label whose presence with one of ``values`` marks a spot node."""

    key: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Taint:
    """A node taint. ``value`` None means any value (tolerated with ``operator: Exists``)."""

    key: str
    value: str | None
    effect: str


@dataclass(frozen=True)
class Preset:
    """One provider's spot conventions; ``provider`` keys its usable notice in the policy."""

    name: str
    provider: str
    labels: tuple[NodeLabel, ...]
    taints: tuple[Taint, ...]
    description: str


# How long each provider's notice really leaves a pod is policy data
# (spotNodes.usableNoticeSeconds in default_policy.yaml), keyed by ``provider``.
PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            name="eks",
            provider="aws",
            labels=(NodeLabel("eks.amazonaws.com/capacityType", ("SPOT",)),),
            taints=(),
            description="EKS managed node groups (label only, no default taint)",
        ),
        Preset(
            name="karpenter",
            provider="aws",
            labels=(NodeLabel("karpenter.sh/capacity-type", ("spot",)),),
            taints=(),
            description="Karpenter (taints only if the NodePool sets them)",
        ),
        Preset(
            name="gke",
            provider="gcp",
            labels=(
                NodeLabel("cloud.google.com/gke-spot", ("true",)),
                NodeLabel("cloud.google.com/gke-preemptible", ("true",)),
            ),
            taints=(Taint("cloud.google.com/gke-spot", "true", "NoSchedule"),),
            description="GKE Spot and legacy preemptible VMs",
        ),
        Preset(
            name="aks",
            provider="azure",
            labels=(NodeLabel("kubernetes.azure.com/scalesetpriority", ("spot",)),),
            taints=(Taint("kubernetes.azure.com/scalesetpriority", "spot", "NoSchedule"),),
            description="AKS spot node pools (always tainted)",
        ),
        Preset(
            name="generic",
            provider="generic",
            labels=(
                NodeLabel("node.kubernetes.io/lifecycle", ("spot",)),
                NodeLabel("lifecycle", ("spot",)),
            ),
            taints=(
                Taint("spot", "true", "NoSchedule"),
                Taint("spot", "true", "NoExecute"),
            ),
            description="Common self-managed conventions (lifecycle=spot, spot=true taint)",
        ),
    )
}
