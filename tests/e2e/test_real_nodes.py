"""Real nodes (containerd + kubelet) in the harness: the preemption drill, and the preStop
hook's behaviour inside a real container.

The drill (devtools/drill.py, also `make drill`) applies examples/tiny-training-job.yaml,
which spotguard mutates; a real kubelet runs the injected hook when a spot notice arrives
(an eviction through the Eviction API, or a NoExecute taint), and each claim about what
followed is checked against the kubelet's log, the trainer's container log and the
checkpoint volume. The hook matrix of tests/hook_behaviour.py runs here again, inside the
trainer image's container, under its ``/bin/sh`` (dash) and busybox's shell, by
``ctr tasks exec`` (what the kubelet's exec hook amounts to: the container's env, its
filesystem, its namespaces).

Skipped, with the reason, only where containers cannot run (not root, no containerd or
runc, no cgroups) or Go is missing to build the kubelet.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from controlplane.build import ensure_binaries
from controlplane.containerd import Containerd
from controlplane.harness import ControlPlane
from controlplane.realnodes import NODE_GROUP_LABEL, containers_unavailable
from devtools.drill import POLICY, VARIANTS, Drill, Variant
from devtools.drill_cluster import start_spotguard
from policies.loader import default_policy
from tests.hook_behaviour import Behaviour, HookResult, HookRunner, Tools, check_behaviour

pytestmark = pytest.mark.e2e

IMAGE_PATH = "/usr/local/bin:/usr/bin:/bin"  # the trainer image's PATH
#: The shells of the trainer image: /bin/sh is dash (as on Debian-based images); busybox.
CONTAINER_SHELLS = {"image-bin-sh-dash": ("/bin/sh",), "busybox-sh": ("/bin/busybox", "sh")}


@pytest.fixture(scope="module")
def real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    reason = containers_unavailable()
    if reason is not None:
        pytest.skip(f"real containers cannot run here: {reason}")
    if shutil.which("go") is None:
        pytest.skip("real nodes need Go to build the kubelet (make controlplane)")
    workdir = tmp_path_factory.mktemp("real-nodes")
    plane = ControlPlane(workdir, bin_dir=ensure_binaries(), nodes=False, real_nodes=True)
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="module")
def drill(real_cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drill]:
    workdir = tmp_path_factory.mktemp("drill")
    server = start_spotguard(real_cluster, workdir, POLICY)
    running = Drill(real_cluster, workdir)
    try:
        yield running
    finally:
        running.close()
        server.stop()


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
def test_drill(drill: Drill, variant: Variant) -> None:
    """Each claim of the drill holds (its timeline is in the captured output)."""
    outcome = drill.run(variant)
    assert len(outcome.preemptions) == len(variant.notices)
    failed = [claim.text for claim in outcome.claims if not claim.ok]
    assert not failed, "\n".join([*failed, f"logs in {drill.cluster.logs_dir}"])


@dataclass
class ShellPod:
    """A pod of the trainer image on the on-demand real node, its volume on this host."""

    name: str
    container_id: str
    containerd: Containerd
    volume: Path

    def runner(self, shell: tuple[str, ...]) -> HookRunner:
        """Runs the injected hook in the container under ``shell``, as the kubelet would."""
        script = default_policy().inject.pre_stop.command[-1]

        def run(extra: Mapping[str, str]) -> HookResult:
            overrides = [f"{k}={v}" for k, v in extra.items()]
            argv = ["/bin/busybox", "env", *overrides, *shell, "-c", script]
            exec_id = f"hook-{uuid.uuid4().hex[:8]}"
            started = time.time()
            result = self.containerd.ctr(
                "tasks", "exec", "--exec-id", exec_id, self.container_id, *argv, timeout=30
            )
            return HookResult(result.returncode, started, time.time())

        return run


@pytest.fixture(scope="module")
def shell_pod(real_cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> ShellPod:
    volume = tmp_path_factory.mktemp("hook-volume")
    real_cluster.ensure_namespace("hook-shells")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "shells", "namespace": "hook-shells"},
        "spec": {
            "nodeSelector": {NODE_GROUP_LABEL: "real-on-demand"},
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "shells",
                    "image": "localhost/spotguard/trainer:1",
                    "imagePullPolicy": "Never",
                    "command": ["/bin/busybox", "sleep", "3600"],
                    "env": [{"name": "SPOTGUARD_CHECKPOINT_DIR", "value": "/checkpoints"}],
                    "volumeMounts": [{"name": "ckpt", "mountPath": "/checkpoints"}],
                }
            ],
            "volumes": [{"name": "ckpt", "hostPath": {"path": str(volume)}}],
        },
    }
    real_cluster.kubectl("apply", "-f", "-", input=json.dumps(pod), check=True)
    end = time.monotonic() + 60
    while time.monotonic() < end:
        _, body = real_cluster.request("GET", "/api/v1/namespaces/hook-shells/pods/shells")
        statuses = (body or {}).get("status", {}).get("containerStatuses") or []
        if statuses and statuses[0].get("state", {}).get("running"):
            node = body["spec"]["nodeName"]
            container_id = statuses[0]["containerID"].removeprefix("containerd://")
            assert real_cluster.real is not None
            return ShellPod("shells", container_id, real_cluster.real.containerd(node), volume)
        time.sleep(0.2)
    raise TimeoutError(f"pod hook-shells/shells not running: {body}")


@pytest.mark.parametrize("behaviour", list(Behaviour), ids=lambda b: b.name.lower())
@pytest.mark.parametrize("shell", list(CONTAINER_SHELLS))
def test_hook_behaviour_in_a_real_container(
    shell_pod: ShellPod, shell: str, behaviour: Behaviour
) -> None:
    """The same assertions as on this machine, inside the trainer image's container."""
    run = shell_pod.runner(CONTAINER_SHELLS[shell])
    check_behaviour(
        behaviour, run, shell_pod.volume, shell_pod.name, Tools.FULL,
        env={"PATH": IMAGE_PATH}, overhead=1.0,
    )  # fmt: skip


@pytest.mark.parametrize("behaviour", [Behaviour.ACK, Behaviour.TIMEOUT], ids=["ack", "timeout"])
@pytest.mark.parametrize(
    ("shell", "tools"),
    [("image-bin-sh-dash", Tools.NEITHER), ("busybox-sh", Tools.FULL)],
    ids=["image-bin-sh-dash", "busybox-sh"],
)
def test_hook_in_a_real_container_with_an_empty_path(
    shell_pod: ShellPod, shell: str, tools: Tools, behaviour: Behaviour
) -> None:
    """No PATH in the container: dash has no date or sleep; busybox's shell still does."""
    run = shell_pod.runner(CONTAINER_SHELLS[shell])
    check_behaviour(
        behaviour, run, shell_pod.volume, shell_pod.name, tools, env={"PATH": ""}, overhead=1.0
    )


def test_pods_have_an_address_on_their_node_bridge_and_no_route_out(shell_pod: ShellPod) -> None:
    result = shell_pod.containerd.ctr(
        "tasks", "exec", "--exec-id", "routes", shell_pod.container_id,
        "/bin/busybox", "cat", "/proc/net/route",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    destinations = [line.split()[1] for line in result.stdout.splitlines()[1:]]
    assert destinations, result.stdout
    assert "00000000" not in destinations, f"a default route: {result.stdout}"
