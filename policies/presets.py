"""Spot capacity presets: how each provider marks spot nodes and how long it warns.

The facts here are the providers' own conventions (node labels, default taints, notice
windows). Keeping them as data lets a policy combine presets ("eks" + "karpenter") without
any provider-specific code in the rules.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Taint:
    """A node taint. ``value`` None means any value (tolerated with ``operator: Exists``)."""

    key: str
    value: str | None
    effect: str


@dataclass(frozen=True)
class NodeLabel:
    """A node label whose presence with one of ``values`` marks a spot node.

    ``taints``: taints every node carrying this label is known to carry (an AKS spot pool
    is always tainted; an EKS one never is). The placement model uses them to tell which
    pods could land on such a node at all; they are spot taints too.
    """

    key: str
    values: tuple[str, ...]
    taints: tuple[Taint, ...] = ()


@dataclass(frozen=True)
class Preset:
    """One provider's spot conventions; ``provider`` keys its usable notice in the policy."""

    name: str
    provider: str
    labels: tuple[NodeLabel, ...]
    taints: tuple[Taint, ...]
    description: str


AKS_SPOT_TAINT = Taint("kubernetes.azure.com/scalesetpriority", "spot", "NoSchedule")

# Only AKS guarantees its taint. GKE taints spot nodes only when node auto-provisioning
# creates them, Karpenter only when the NodePool says so, EKS and the generic conventions
# never by themselves: their labels come without guaranteed taints.
#
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
            # AKS taints every spot pool itself; the taint cannot be left off.
            labels=(NodeLabel(AKS_SPOT_TAINT.key, ("spot",), taints=(AKS_SPOT_TAINT,)),),
            taints=(AKS_SPOT_TAINT,),
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
