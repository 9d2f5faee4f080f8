"""One containerd (Debian's package) per real node, every path in the node's directory.

Two kubelets cannot share a containerd: each kubelet removes the pods it does not know.
So each node runs its own, with its own root, state, sockets and runc root, the CRI
plugin's sandbox image set to the harness's pause image, pod network namespaces under its
state directory (so stopping finds and unmounts them), one CNI network
(controlplane/podnetwork.py), and OOM score adjustments kept at 0 or above (processes on
these machines lack CAP_SYS_RESOURCE, and runc fails to start a container whose
``oom_score_adj`` it cannot set). Images come from OCI archives (``ctr images import``); the
CRI plugin's ``k8s.io`` namespace is where the kubelet looks for them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from controlplane.images import ImageArchive
from controlplane.podnetwork import CNI_BIN_DIR, PodNetwork
from controlplane.process import Process, ProcessError

NAMESPACE = "k8s.io"  # the CRI plugin's containerd namespace


class ContainerdError(RuntimeError):
    """containerd is missing, did not start, or refused an image."""


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ContainerdError(f"{name} is not installed (make host-packages installs it)")
    return found


@dataclass
class Containerd:
    directory: Path
    network: PodNetwork
    sandbox_image: str
    process: Process | None = None

    @property
    def socket(self) -> Path:
        return self.directory / "containerd.sock"

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    @property
    def config_file(self) -> Path:
        return self.directory / "config.toml"

    def config(self) -> str:
        d = self.directory
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        return f"""\
version = 2
root = "{d / "root"}"
state = "{d / "state"}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d / "opt"}"

[{cri}]
  sandbox_image = "{self.sandbox_image}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  # Processes here lack CAP_SYS_RESOURCE, so no oom_score_adj below 0 (the sandbox's
  # -998, a Guaranteed pod's -997) can be set: clamp them to containerd's own (0).
  restrict_oom_score_adj = true
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{shutil.which("runc") or "runc"}"
        Root = "{d / "runc"}"
  [{cri}.cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{self.network.conf_dir}"
    max_conf_num = 1
"""

    def start(self, logs_dir: Path, name: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.network.write()
        self.config_file.write_text(self.config())
        self.process = Process.start(
            name, [_binary("containerd"), "--config", str(self.config_file)], logs_dir
        )

    def ctr(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [_binary("ctr"), "--address", str(self.socket), "--namespace", NAMESPACE, *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def wait_ready(self, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process is not None:
                self.process.check()
            if self.socket.exists() and self.ctr("version", timeout=5).returncode == 0:
                return
            time.sleep(0.1)
        raise ContainerdError(f"containerd did not answer on {self.socket} in {timeout:.0f} s")

    def import_images(self, images: Sequence[ImageArchive]) -> None:
        for image in images:
            result = self.ctr("images", "import", str(image.path))
            if result.returncode != 0:
                raise ContainerdError(f"ctr images import {image.path}: {result.stderr.strip()}")

    def check(self) -> None:
        if self.process is not None:
            try:
                self.process.check()
            except ProcessError as error:
                raise ContainerdError(str(error)) from None

    def remove_all_tasks(self) -> None:
        """Kill and delete every container of this containerd (pods, and their sandboxes)."""
        listed = self.ctr("tasks", "list", "--quiet", timeout=10)
        for task in listed.stdout.split():
            self.ctr("tasks", "delete", "--force", task, timeout=10)
        containers = self.ctr("containers", "list", "--quiet", timeout=10)
        for container in containers.stdout.split():
            self.ctr("containers", "delete", container, timeout=10)

    def stop(self) -> None:
        """Remove the containers, stop containerd, end its leftover shims, unmount."""
        if self.process is not None and self.process.process.poll() is None:
            self.remove_all_tasks()
        if self.process is not None:
            self.process.stop()
        for pid in _shims_of(self.socket):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        unmount_below(self.directory)
        self.network.remove()


def _shims_of(socket: Path) -> list[int]:
    """containerd-shim processes started by the containerd listening on ``socket``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and b"containerd-shim" in argv[0] and str(socket).encode() in argv:
            found.append(int(proc.name))
    return found


def unmount_below(directory: Path) -> None:
    """Lazily unmount every mount under ``directory``, deepest first (rootfs overlays,
    network namespaces, the kubelet's volumes), so the directory can be deleted."""
    prefix = str(directory.resolve()) + "/"
    points = []
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        for line in mountinfo:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix) or point + "/" == prefix:
                points.append(point)
    for point in sorted(set(points), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
