"""Real nodes next to the simulated ones: containerd + kubelet per node, on this machine.

``ControlPlane(workdir, real_nodes=True)`` starts :data:`REAL_NODES` (two spot nodes
labelled and tainted as a self-managed spot group, one on-demand node) after the control
plane, and stops them first. Each node gets, under ``<workdir>/nodes/<name>/``, its own
containerd with the harness's images imported, its own pod network, and a kubelet joined
to the API server with a node certificate. Pods on them are real processes in real
containers: a preStop hook runs, SIGTERM is sent, a container exits with a status.

Needs root, containerd, runc and the CNI plugins (``make host-packages``), the kubelet
(``python -m controlplane.build``) and the images (``python -m controlplane.images``,
built on first use). :func:`containers_unavailable` says why containers cannot run here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

from controlplane.containerd import Containerd, unmount_below
from controlplane.harness import free_port
from controlplane.images import PAUSE_IMAGE, ImageArchive, ensure_images
from controlplane.kubelet import (
    KernelSettings,
    Kubelet,
    NodeTaint,
    RealNode,
    kill_cgroup,
    remove_cgroup_root,
)
from controlplane.podnetwork import CNI_BIN_DIR, PodNetwork, instance_id

LIFECYCLE_LABEL = "node.kubernetes.io/lifecycle"
KARPENTER_CAPACITY_LABEL = "karpenter.sh/capacity-type"
NODE_GROUP_LABEL = "spotguard.dev/node-group"
#: The self-managed spot convention (spotguard's "generic" preset tolerates it).
SPOT_TAINT = NodeTaint("spot", "true", "NoSchedule")


def _node(name: str, group: str, spot: bool) -> RealNode:
    capacity = "spot" if spot else "on-demand"
    labels = {
        LIFECYCLE_LABEL: capacity,
        KARPENTER_CAPACITY_LABEL: capacity,
        NODE_GROUP_LABEL: group,
        "node.kubernetes.io/instance-type": "local",
    }
    return RealNode(name, group, spot, labels, (SPOT_TAINT,) if spot else ())


#: Two spot nodes (a preempted pod can resume on the other) and one on-demand node.
REAL_NODES: tuple[RealNode, ...] = (
    _node("real-spot-1", "real-spot", spot=True),
    _node("real-spot-2", "real-spot", spot=True),
    _node("real-on-demand-1", "real-on-demand", spot=False),
)


class Plane(Protocol):
    """What the real nodes need of the control plane (controlplane.harness.ControlPlane)."""

    workdir: Path
    logs_dir: Path
    cert_dir: Path
    server: str
    ca_file: Path

    @property
    def bin_dir(self) -> Path: ...

    def request(self, method: str, path: str, body: object = None) -> tuple[int, object]: ...


def containers_unavailable() -> str | None:
    """Why real containers cannot run on this machine, or None if they can."""
    if os.geteuid() != 0:
        return "real nodes need root (containerd, runc, cgroups, network namespaces)"
    for program in ("containerd", "ctr", "runc"):
        if shutil.which(program) is None:
            return f"{program} is not installed (make host-packages installs it)"
    if not (CNI_BIN_DIR / "bridge").exists():
        return f"no CNI plugins in {CNI_BIN_DIR} (make host-packages installs them)"
    if (
        not Path("/sys/fs/cgroup/memory").is_dir()
        and not Path("/sys/fs/cgroup/cgroup.controllers").exists()
    ):
        return "no cgroup filesystem at /sys/fs/cgroup"
    return None


@dataclass
class NodeParts:
    node: RealNode
    containerd: Containerd
    kubelet: Kubelet


class RealNodes:
    """Start, watch and stop the real nodes of one control plane."""

    def __init__(self, plane: Plane, nodes: Sequence[RealNode] = REAL_NODES) -> None:
        self.plane = plane
        self.nodes = tuple(nodes)
        self.instance = instance_id(plane.workdir)
        self.parts: dict[str, NodeParts] = {}
        self.images: tuple[ImageArchive, ...] = ()
        self._kernel: KernelSettings | None = None

    def node_dir(self, name: str) -> Path:
        return self.plane.workdir / "nodes" / name

    def kubelet(self, name: str) -> Kubelet:
        return self.parts[name].kubelet

    def containerd(self, name: str) -> Containerd:
        return self.parts[name].containerd

    def start(self, timeout: float = 90.0) -> None:
        reason = containers_unavailable()
        if reason is not None:
            raise RuntimeError(f"cannot start real nodes: {reason}")
        self.images = ensure_images()
        self._kernel = KernelSettings()
        for index, node in enumerate(self.nodes, start=1):
            directory = self.node_dir(node.name)
            network = PodNetwork(directory / "cni", self.instance, index)
            containerd = Containerd(directory / "containerd", network, PAUSE_IMAGE)
            kubelet = Kubelet(
                node, directory / "kubelet", containerd, self.plane.server, self.plane.ca_file,
                self.plane.cert_dir / "ca.key", self.instance, free_port(), free_port(),
            )  # fmt: skip
            self.parts[node.name] = NodeParts(node, containerd, kubelet)
            containerd.start(self.plane.logs_dir, f"containerd-{node.name}")
        for parts in self.parts.values():
            parts.containerd.wait_ready()
            parts.containerd.import_images(self.images)
            parts.kubelet.start(self.plane.bin_dir, self.plane.logs_dir)
        self.wait_ready(timeout)

    def check(self) -> None:
        for parts in self.parts.values():
            parts.containerd.check()
            parts.kubelet.check()

    def wait_ready(self, timeout: float) -> None:
        """Every node registered, Ready, with its labels and exactly its taints."""
        end = time.monotonic() + timeout
        pending = [n.name for n in self.nodes]
        while time.monotonic() < end:
            self.check()
            pending = [n.name for n in self.nodes if not self._ready(n)]
            if not pending:
                return
            time.sleep(0.2)
        raise RuntimeError(f"real nodes not Ready in {timeout:.0f} s: {pending}")

    def _ready(self, node: RealNode) -> bool:
        status, body = self.plane.request("GET", f"/api/v1/nodes/{node.name}")
        if status != 200 or not isinstance(body, dict):
            return False
        labels = body["metadata"].get("labels") or {}
        conditions = body.get("status", {}).get("conditions") or []
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        taints = {
            (t["key"], t.get("value", ""), t["effect"]) for t in body["spec"].get("taints") or []
        }
        wanted = {(t.key, t.value, t.effect) for t in node.taints}
        labelled = all(labels.get(k) == v for k, v in node.labels.items())
        return ready and labelled and taints == wanted

    def stop(self) -> None:
        """Kubelets first, then every container, containerd, mounts, bridges, cgroups.

        Every step runs even if one fails (a leak is worse than a late error); the first
        error is raised at the end.
        """
        errors: list[Exception] = []

        def attempt(step: Callable[[], None]) -> None:
            try:
                step()
            except Exception as error:  # noqa: BLE001 (kept and raised below)
                errors.append(error)

        for parts in self.parts.values():
            attempt(parts.kubelet.stop)
        for name, parts in self.parts.items():
            attempt(partial(kill_cgroup, parts.kubelet.cgroup_root))
            attempt(parts.containerd.stop)
            attempt(partial(unmount_below, self.node_dir(name)))  # the kubelet's mounts
        for parts in self.parts.values():
            # A process still exiting keeps its cgroup busy: that one is left behind.
            with contextlib.suppress(OSError):
                remove_cgroup_root(parts.kubelet.cgroup_root)
        self.parts.clear()
        if self._kernel is not None:
            attempt(self._kernel.restore)
            self._kernel = None
        if errors:
            raise errors[0]
