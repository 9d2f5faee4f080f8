"""One kubelet, built from the pinned Kubernetes modules, as a real node of the harness.

What a kubelet needs on these machines, and how it gets it:

- **credentials**: a client certificate for ``system:node:<name>`` in ``system:nodes``,
  signed by the harness's CA (which the API server trusts), so the Node authorizer lets it
  register its Node, renew its Lease and read what its pods reference (NodeRestriction is
  not enabled, so it may also set its spot labels itself);
- **cgroups**: these machines have cgroup v1 (the unified hierarchy holds no
  controllers), which 1.37's kubelet refuses unless ``failCgroupV1: false``; the
  ``cgroupfs`` driver (there is no systemd), and a cgroup root of its own per kubelet
  (created here in every hierarchy), so two kubelets, or two harnesses, never meet;
- **no swap** here, and ``failSwapOn: false`` all the same;
- **its runtime**: its own containerd (controlplane/containerd.py) by socket;
- **loopback only**: it serves on 127.0.0.1 on free ports, reports 127.0.0.1 as its
  address, gives pods no DNS server (``resolvConf: ""``), and keeps every file (root dir,
  certificates, pod logs, volume plugins) in its node's directory.

It sets the kernel settings it wants at start (``vm.overcommit_memory=1``,
``kernel.panic=10``, ``kernel.panic_on_oops=1``, ...); :class:`KernelSettings` puts back
the values it found once the last kubelet has stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from controlplane.containerd import Containerd
from controlplane.process import Process, ProcessError

CGROUP_V1 = Path("/sys/fs/cgroup")


class KubeletError(RuntimeError):
    """A kubelet could not be set up or did not start."""


@dataclass(frozen=True)
class NodeTaint:
    key: str
    value: str
    effect: str

    def to_api(self) -> dict[str, str]:
        return {"key": self.key, "value": self.value, "effect": self.effect}


@dataclass(frozen=True)
class RealNode:
    """A node run by a real kubelet: its name, group, labels and taints."""

    name: str
    group: str
    spot: bool
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[NodeTaint, ...] = ()


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise KubeletError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def _cgroup_hierarchies() -> list[Path]:
    """The mounted cgroup v1 hierarchies (cpu, memory, pids, ..., name=systemd)."""
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            if fstype == "cgroup":
                found.append(Path(fields[4]))
    return found


def create_cgroup_root(name: str) -> None:
    """``/<name>`` in every hierarchy (cpuset needs its cpus and mems copied down)."""
    for hierarchy in _cgroup_hierarchies():
        path = hierarchy / name
        path.mkdir(exist_ok=True)
        for setting in ("cpuset.cpus", "cpuset.mems"):
            if (path / setting).exists() and not (path / setting).read_text().strip():
                (path / setting).write_text((hierarchy / setting).read_text())


def _cgroups_below(root: Path) -> list[Path]:
    """``root`` and every cgroup below it, deepest first. runc removes a container's
    cgroup when the container goes, so a directory may vanish while this walks: skipped."""
    return [Path(d) for d, _, _ in os.walk(root, topdown=False, onerror=lambda _: None)]


def remove_cgroup_root(name: str) -> None:
    """Remove ``/<name>`` and the cgroups below it, deepest first (they must be empty)."""
    for hierarchy in _cgroup_hierarchies():
        for path in _cgroups_below(hierarchy / name):
            with contextlib.suppress(FileNotFoundError):
                path.rmdir()


def kill_cgroup(name: str) -> None:
    """SIGKILL every process left in ``/<name>``, e.g. a container that ignored SIGTERM."""
    for hierarchy in _cgroup_hierarchies():
        root = hierarchy / name
        if not root.is_dir():
            continue
        for cgroup in _cgroups_below(root):
            try:
                pids = (cgroup / "cgroup.procs").read_text().split()
            except FileNotFoundError:
                continue
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        return  # every process is in every hierarchy: one is enough


class KernelSettings:
    """The sysctls a kubelet sets at start, remembered so they can be put back."""

    NAMES = (
        "vm/overcommit_memory",
        "vm/panic_on_oom",
        "kernel/panic",
        "kernel/panic_on_oops",
        "kernel/keys/root_maxkeys",
        "kernel/keys/root_maxbytes",
    )

    def __init__(self) -> None:
        paths = {name: self._path(name) for name in self.NAMES}
        self.saved = {name: path.read_text() for name, path in paths.items() if path.exists()}

    @staticmethod
    def _path(name: str) -> Path:
        return Path("/proc/sys") / name

    def restore(self) -> None:
        for name, value in self.saved.items():
            path = self._path(name)
            if path.read_text() != value:
                path.write_text(value)


@dataclass
class Kubelet:
    node: RealNode
    directory: Path
    containerd: Containerd
    server: str
    ca_file: Path
    ca_key: Path
    instance: str
    port: int
    healthz_port: int
    process: Process | None = None

    @property
    def cgroup_root(self) -> str:
        return f"spotguard-{self.instance}-{self.node.name}"

    @property
    def pod_logs_dir(self) -> Path:
        return self.directory / "pod-logs"

    @property
    def root_dir(self) -> Path:
        return self.directory / "root"

    def write_credentials(self) -> Path:
        """A ``system:node:<name>`` client certificate and the kubeconfig that uses it."""
        pki = self.directory / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "3650", "-subj", f"/O=system:nodes/CN=system:node:{self.node.name}",
            "-CA", str(self.ca_file), "-CAkey", str(self.ca_key),
            "-addext", "basicConstraints=critical,CA:FALSE",
            "-addext", "keyUsage=critical,digitalSignature",
            "-addext", "extendedKeyUsage=clientAuth",
            "-keyout", "node.key", "-out", "node.crt",
            cwd=pki,
        )  # fmt: skip
        kubeconfig = self.directory / "kubeconfig"
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "spotguard",
                    "cluster": {"server": self.server, "certificate-authority": str(self.ca_file)},
                }
            ],
            "users": [
                {
                    "name": self.node.name,
                    "user": {
                        "client-certificate": str(pki / "node.crt"),
                        "client-key": str(pki / "node.key"),
                    },
                }
            ],
            "contexts": [
                {"name": "node", "context": {"cluster": "spotguard", "user": self.node.name}}
            ],
            "current-context": "node",
        }
        kubeconfig.write_text(json.dumps(document, indent=2))
        kubeconfig.chmod(0o600)
        return kubeconfig

    def config(self) -> dict[str, object]:
        """The KubeletConfiguration (v1beta1)."""
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": "127.0.0.1",
            "port": self.port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self.healthz_port,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(self.ca_file)},
            },
            "authorization": {"mode": "AlwaysAllow"},  # serves on loopback only
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{self.cgroup_root}",
            "cgroupsPerQOS": True,
            "failCgroupV1": False,
            "failSwapOn": False,
            "oomScoreAdj": 0,  # no CAP_SYS_RESOURCE here: it cannot lower its own
            "containerRuntimeEndpoint": self.containerd.endpoint,
            "imageServiceEndpoint": self.containerd.endpoint,
            "registerNode": True,
            "registerWithTaints": [t.to_api() for t in self.node.taints],
            "podLogsDir": str(self.pod_logs_dir),
            "volumePluginDir": str(self.directory / "volume-plugins"),
            "resolvConf": "",
            "maxPods": 20,
            "serializeImagePulls": False,
            # Disk and memory are shared with the whole machine: evict nothing for them,
            # and never collect the images the harness imported.
            "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%",
                             "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "nodeStatusUpdateFrequency": "2s",
            "nodeStatusReportFrequency": "10s",
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
        }  # fmt: skip

    def start(self, bin_dir: Path, logs_dir: Path) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        kubeconfig = self.write_credentials()
        config = self.directory / "kubelet-config.json"
        config.write_text(json.dumps(self.config(), indent=2))
        create_cgroup_root(self.cgroup_root)
        labels = ",".join(f"{k}={v}" for k, v in sorted(self.node.labels.items()))
        self.process = Process.start(
            f"kubelet-{self.node.name}",
            [
                str(bin_dir / "kubelet"),
                f"--config={config}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={self.root_dir}",
                f"--cert-dir={self.directory / 'pki'}",
                f"--hostname-override={self.node.name}",
                "--node-ip=127.0.0.1",
                f"--node-labels={labels}",
                # Timestamps of "Running preStop hook", "PreStop hook completed" and
                # "Killing container with a grace period" (SIGTERM) for the drill.
                "--logging-format=json",
                "--v=3",
            ],
            logs_dir,
        )

    def check(self) -> None:
        if self.process is not None:
            try:
                self.process.check()
            except ProcessError as error:
                raise KubeletError(str(error)) from None

    def stop(self) -> None:
        """Stop the kubelet; its pods' processes are ended by its containerd's stop."""
        if self.process is not None:
            self.process.stop()
