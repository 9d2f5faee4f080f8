"""The simulated cluster's nodes, as data: which node groups exist, how each is labelled
and tainted like a cloud's node group, and the Node object kwok keeps Ready for each.

Tests and demos ask here which nodes are spot (:func:`group_of_node`); the harness
creates the nodes from :data:`NODE_GROUPS`; the real-node parts reuse :class:`NodeTaint`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Well-known node labels and taints.
LIFECYCLE_LABEL = "node.kubernetes.io/lifecycle"
EKS_CAPACITY_TYPE_LABEL = "eks.amazonaws.com/capacityType"
AKS_PRIORITY_LABEL = "kubernetes.azure.com/scalesetpriority"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
#: Label put on every simulated node naming its :class:`NodeGroup`, for tests.
NODE_GROUP_LABEL = "spotguard.dev/node-group"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"


@dataclass(frozen=True)
class NodeTaint:
    """A taint on a Node object (a concrete value; policies match taints in policies.presets)."""

    key: str
    value: str
    effect: str  # NoSchedule, PreferNoSchedule or NoExecute

    def to_api(self) -> dict[str, str]:
        return {"key": self.key, "value": self.value, "effect": self.effect}


CRITICAL_ADDONS_ONLY = NodeTaint("CriticalAddonsOnly", "true", "NoSchedule")
AKS_SPOT_TAINT = NodeTaint(AKS_PRIORITY_LABEL, "spot", "NoSchedule")


@dataclass(frozen=True)
class SimulatedNode:
    name: str
    taints: tuple[NodeTaint, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeGroup:
    """A group of identical simulated nodes, labelled like a cloud node group."""

    name: str
    spot: bool
    instance_type: str
    labels: Mapping[str, str]
    nodes: tuple[SimulatedNode, ...]
    allocatable: Mapping[str, str] = field(
        default_factory=lambda: {
            "cpu": "32",
            "memory": "128Gi",
            "pods": "110",
            "ephemeral-storage": "500Gi",
            "nvidia.com/gpu": "8",
        }
    )

    @property
    def node_names(self) -> tuple[str, ...]:
        return tuple(node.name for node in self.nodes)


#: The simulated cluster: one place that says which nodes exist.
NODE_GROUPS: tuple[NodeGroup, ...] = (
    NodeGroup(
        name="on-demand",
        spot=False,
        instance_type="g5.xlarge",
        labels={LIFECYCLE_LABEL: "on-demand", EKS_CAPACITY_TYPE_LABEL: "ON_DEMAND"},
        nodes=(
            # Reserved for critical add-ons: tainted, and labelled as EKS add-on groups are.
            SimulatedNode(
                "on-demand-1",
                taints=(CRITICAL_ADDONS_ONLY,),
                labels={CRITICAL_ADDONS_ONLY.key: CRITICAL_ADDONS_ONLY.value},
            ),
            SimulatedNode("on-demand-2"),
            SimulatedNode("on-demand-3"),
        ),
    ),
    NodeGroup(  # as on AKS: spot nodes are always tainted
        name="spot-tainted",
        spot=True,
        instance_type="Standard_NC4as_T4_v3",
        labels={AKS_PRIORITY_LABEL: "spot"},
        nodes=(
            SimulatedNode("spot-tainted-1", taints=(AKS_SPOT_TAINT,)),
            SimulatedNode("spot-tainted-2", taints=(AKS_SPOT_TAINT,)),
        ),
    ),
    NodeGroup(  # as on EKS managed node groups: spot nodes carry no taint
        name="spot-untainted",
        spot=True,
        instance_type="g4dn.xlarge",
        labels={EKS_CAPACITY_TYPE_LABEL: "SPOT"},
        nodes=(SimulatedNode("spot-untainted-1"), SimulatedNode("spot-untainted-2")),
    ),
)


def node_group(name: str) -> NodeGroup:
    """The :class:`NodeGroup` called ``name``."""
    for group in NODE_GROUPS:
        if group.name == name:
            return group
    raise KeyError(name)


def group_of_node(node_name: str) -> NodeGroup:
    """The :class:`NodeGroup` that simulated node ``node_name`` belongs to."""
    for group in NODE_GROUPS:
        if node_name in group.node_names:
            return group
    raise KeyError(node_name)


def node_manifest(group: NodeGroup, node: SimulatedNode, kube_version: str) -> dict[str, Any]:
    """The Node object for one simulated node (kwok fills in conditions)."""
    labels = {
        **group.labels,
        INSTANCE_TYPE_LABEL: group.instance_type,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": node.name,
        "type": "kwok",
        NODE_GROUP_LABEL: group.name,
        **node.labels,
    }
    resources = dict(group.allocatable)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": labels,
            "annotations": {
                KWOK_ANNOTATION: "fake",
                "node.alpha.kubernetes.io/ttl": "0",
            },
        },
        "spec": {"taints": [t.to_api() for t in node.taints]},
        "status": {
            "allocatable": resources,
            "capacity": resources,
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": kube_version,
                "kubeProxyVersion": kube_version,
                "containerRuntimeVersion": "kwok",
            },
        },
    }


def simulated_node(name: str) -> SimulatedNode:
    """The :class:`SimulatedNode` called ``name``."""
    for node in group_of_node(name).nodes:
        if node.name == name:
            return node
    raise KeyError(name)
