"""deploy/kind: the cluster config and the one-command install for users with Docker.

The full run (deploy/kind/up.sh in a throwaway kind cluster, then down.sh) needs a Docker
engine and kind; where either is missing it is skipped with the reason. The checks of the
config and of the scripts' own behaviour need neither and always run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from testsupport.server import REPO

KIND_DIR = REPO / "deploy" / "kind"
UP, DOWN = KIND_DIR / "up.sh", KIND_DIR / "down.sh"
ON_DEMAND = {
    "node.kubernetes.io/lifecycle": "on-demand",
    "eks.amazonaws.com/capacityType": "ON_DEMAND",
}
AKS_SPOT = "kubernetes.azure.com/scalesetpriority"
UP_TIMEOUT = 1800  # cluster creation, an image build and the demo


def sh(*command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def first_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line.strip() for line in (result.stderr + result.stdout).splitlines()]
    errors = [line for line in lines if "error" in line.lower() or "cannot" in line.lower()]
    return (errors or [line for line in lines if line] or [f"exit status {result.returncode}"])[-1]


def kind_problem() -> str | None:
    """Why kind cannot run here, or None."""
    if shutil.which("docker") is None:
        return "kind needs a Docker engine; none here: no docker command"
    try:
        info = sh("docker", "info")
    except subprocess.TimeoutExpired:
        return "kind needs a Docker engine; none here: docker info did not answer in 30 s"
    if info.returncode != 0:
        return f"kind needs a Docker engine; none here: {first_line(info)}"
    if shutil.which("kind") is None:
        return "kind is not installed (a Docker engine is available)"
    version = sh("kind", "version")
    if version.returncode != 0:
        return f"kind does not run: {first_line(version)}"
    return None


def cluster_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((KIND_DIR / "cluster.yaml").read_text())
    return config


def join_taints(node: dict[str, Any]) -> list[dict[str, Any]]:
    taints: list[dict[str, Any]] = []
    for patch in node.get("kubeadmConfigPatches", []):
        document = yaml.safe_load(patch)
        assert document["kind"] != "InitConfiguration" or node["role"] == "control-plane", (
            "an InitConfiguration patch on a worker is silently ignored by kind"
        )
        if document["kind"] == "JoinConfiguration":
            taints += document.get("nodeRegistration", {}).get("taints", [])
    return taints


def test_cluster_has_on_demand_and_both_kinds_of_spot_workers() -> None:
    config = cluster_config()
    assert (config["kind"], config["apiVersion"]) == ("Cluster", "kind.x-k8s.io/v1alpha4")
    nodes = config["nodes"]
    assert [n["role"] for n in nodes].count("control-plane") == 1
    workers = [n for n in nodes if n["role"] == "worker"]
    on_demand = [w for w in workers if ON_DEMAND.items() <= w.get("labels", {}).items()]
    assert len(on_demand) == 2 and not any(join_taints(w) for w in on_demand)
    aks = [w for w in workers if w.get("labels", {}).get(AKS_SPOT) == "spot"]
    assert len(aks) == 1
    assert join_taints(aks[0]) == [{"key": AKS_SPOT, "value": "spot", "effect": "NoSchedule"}]
    eks = [
        w for w in workers if w.get("labels", {}).get("eks.amazonaws.com/capacityType") == "SPOT"
    ]
    assert len(eks) == 1 and join_taints(eks[0]) == []  # EKS does not taint spot nodes
    assert len(workers) == 4


@pytest.mark.parametrize("script", [UP, DOWN], ids=["up.sh", "down.sh"])
def test_scripts_are_strict_bash(script: Path) -> None:
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert os.access(script, os.X_OK), f"{script} is not executable"
    syntax = sh("bash", "-n", str(script))
    assert syntax.returncode == 0, syntax.stderr
    if shutil.which("shellcheck"):
        lint = sh("shellcheck", str(script))
        assert lint.returncode == 0, lint.stdout


def test_up_sh_says_clearly_when_docker_is_not_running(tmp_path: Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    docker = fake / "docker"
    docker.write_text(
        "#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock.'"
        " >&2\nexit 1\n"
    )
    docker.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        [str(UP)], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "up.sh: no Docker engine reachable (docker info: Cannot connect to the Docker daemon"
        " at unix:///var/run/docker.sock.); start Docker and retry"
    )


@pytest.mark.kind
def test_up_sh_installs_spotguard_and_runs_the_demo() -> None:
    problem = kind_problem()
    if problem is not None:
        pytest.skip(problem)
    # A cluster of its own, so a user's `spotguard` cluster is never touched or deleted.
    env = {**os.environ, "SPOTGUARD_KIND_CLUSTER": f"spotguard-test-{uuid.uuid4().hex[:6]}"}
    try:
        result = subprocess.run(
            [str(UP)], cwd=REPO, capture_output=True, text=True, env=env,
            timeout=UP_TIMEOUT, check=False,
        )  # fmt: skip
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-5000:]
        assert "webhook live:" in output
        assert "=> rejected, as expected" in output
        placed = re.findall(r"^  (\S+)\s+(\S+)\s+(SPOT|on-demand)$", result.stdout, re.M)
        storefront = [capacity for pod, _, capacity in placed if pod.startswith("storefront-")]
        training = [capacity for pod, _, capacity in placed if pod.startswith("resnet-train-")]
        assert storefront and set(storefront) == {"on-demand"}, result.stdout
        assert training and "SPOT" in training, result.stdout
    finally:
        subprocess.run([str(DOWN)], env=env, capture_output=True, timeout=300, check=False)
