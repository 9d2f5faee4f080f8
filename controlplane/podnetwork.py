"""Pod networking of one real node, kept on this machine.

Each node's containerd gets one CNI network: a Linux bridge of its own (named after the
harness instance and the node, so parallel harnesses never share one) and addresses from
a private /24 that host-local IPAM hands out, with its state in the node's directory.
The bridge has no address on the host, no gateway, no masquerading and no route out, so
a pod reaches nothing but its own node's pods on that bridge: nothing leaves the machine.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: Debian's containernetworking-plugins install the plugins here.
CNI_BIN_DIR = Path("/usr/lib/cni")
#: Where libcni caches each attachment's result (containerd 1.6 does not move it).
CNI_RESULTS_DIR = Path("/var/lib/cni/results")
#: Pod addresses: 10.88.<node>.0/24, the range containerd's own examples use.
POD_RANGE_PREFIX = "10.88"


@dataclass(frozen=True)
class PodNetwork:
    """The CNI network of node number ``index`` of the harness whose id is ``instance``."""

    directory: Path
    instance: str  # a few hex characters, unique per harness work directory
    index: int

    @property
    def bridge(self) -> str:
        name = f"sg{self.instance[:8]}-{self.index}"
        assert len(name) <= 15, name  # Linux interface names
        return name

    @property
    def subnet(self) -> str:
        return f"{POD_RANGE_PREFIX}.{self.index}.0/24"

    @property
    def name(self) -> str:
        return f"spotguard-{self.instance}-{self.index}"

    @property
    def conf_dir(self) -> Path:
        return self.directory / "net.d"

    def write(self) -> None:
        """The CNI configuration containerd loads (its ``cni.conf_dir``)."""
        plugins = ("bridge", "host-local", "loopback")
        missing = [p for p in plugins if not (CNI_BIN_DIR / p).exists()]
        if missing:
            raise FileNotFoundError(
                f"CNI plugins {missing} not in {CNI_BIN_DIR} (make host-packages installs them)"
            )
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        config = {
            "cniVersion": "1.0.0",
            "name": self.name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": False,
                    "ipMasq": False,
                    "hairpinMode": False,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.subnet}]],
                        "dataDir": str(self.directory / "ipam"),
                    },
                }
            ],
        }
        (self.conf_dir / "10-spotguard.conflist").write_text(json.dumps(config, indent=2))

    def remove(self) -> None:
        """Delete the bridge (once its pods are gone) and the address leases."""
        ip = shutil.which("ip")
        if ip is not None:
            subprocess.run(
                [ip, "link", "delete", self.bridge, "type", "bridge"],
                capture_output=True, check=False,
            )  # fmt: skip
        shutil.rmtree(self.directory / "ipam", ignore_errors=True)
        # Pods killed with their node were never detached: drop libcni's cached results
        # of this network (and of the loopback attachments of the same containers).
        for cached in CNI_RESULTS_DIR.glob(f"{self.name}-*"):
            container = cached.name.removeprefix(f"{self.name}-").rpartition("-")[0]
            (CNI_RESULTS_DIR / f"cni-loopback-{container}-lo").unlink(missing_ok=True)
            cached.unlink(missing_ok=True)


def instance_id(workdir: Path) -> str:
    """Hex characters that tell this harness's machine-wide names from another's."""
    return hashlib.sha256(str(workdir.resolve()).encode()).hexdigest()[:8]
