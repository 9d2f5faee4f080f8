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
    """One provider's spot conventions and the grace share a pod really gets on preemption."""

    name: str
    provider: str
    labels: tuple[NodeLabel, ...]
    taints: tuple[Taint, ...]
    usable_notice_seconds: int
    description: str


# Usable notice: the part of the provider's warning a pod can spend on terminating.
# AWS warns 2 min ahead (best effort); a node handler needs a few seconds to start the
# drain, so about 110 s remain. GKE's graceful node shutdown gives ordinary pods about
# 15 s of the 30 s notice. Azure warns at least 30 s ahead.
PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            name="eks",
            provider="aws",
            labels=(NodeLabel("eks.amazonaws.com/capacityType", ("SPOT",)),),
            taints=(),
            usable_notice_seconds=110,
            description="EKS managed node groups (label only, no default taint)",
        ),
        Preset(
            name="karpenter",
            provider="aws",
            labels=(NodeLabel("karpenter.sh/capacity-type", ("spot",)),),
            taints=(),
            usable_notice_seconds=110,
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
            usable_notice_seconds=15,
            description="GKE Spot and legacy preemptible VMs",
        ),
        Preset(
            name="aks",
            provider="azure",
            labels=(NodeLabel("kubernetes.azure.com/scalesetpriority", ("spot",)),),
            taints=(Taint("kubernetes.azure.com/scalesetpriority", "spot", "NoSchedule"),),
            usable_notice_seconds=30,
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
            usable_notice_seconds=30,
            description="Common self-managed conventions (lifecycle=spot, spot=true taint)",
        ),
    )
}
