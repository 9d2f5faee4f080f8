"""The container image: built from the Dockerfile, it runs `spotguard` as uid 65532, with a
read-only root filesystem, and carries no build or install tools.

Building needs a Docker engine. Where `docker info` fails (no daemon, as on the machines
these tests usually run on) every test here is skipped with docker's own error line, and
nothing is built.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from certs.pki import generate_pair
from devtools.server import REPO

BUILD_TIMEOUT = 1800  # a cold build downloads the base image and every dependency


def docker_problem() -> str | None:
    """Why Docker cannot build here, or None when an engine answers."""
    if shutil.which("docker") is None:
        return "no docker command on this machine"
    try:
        result = subprocess.run(
            ["docker", "info"], capture_output=True, text=True, timeout=30, check=False
        )
    except subprocess.TimeoutExpired:
        return "no Docker engine on this machine: docker info did not answer within 30 s"
    if result.returncode == 0:
        return None
    lines = [line.strip() for line in (result.stderr + result.stdout).splitlines()]
    errors = [line for line in lines if "error" in line.lower() or "cannot" in line.lower()]
    detail = (errors or [line for line in lines if line] or ["docker info failed"])[-1]
    return f"no Docker engine on this machine: {detail}"


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    problem = docker_problem()
    if problem is not None:
        pytest.skip(problem)
    tag = f"spotguard:test-{uuid.uuid4().hex[:8]}"
    build = subprocess.run(
        ["docker", "build", "--tag", tag, str(REPO)],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    try:
        yield tag
    finally:
        subprocess.run(["docker", "image", "rm", "--force", tag], capture_output=True, check=False)


def run(image: str, *args: str, entrypoint: str | None = None) -> subprocess.CompletedProcess[str]:
    """``docker run`` as the manifests run it: read-only root, a writable /tmp only."""
    command = ["docker", "run", "--rm", "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL"]
    if entrypoint is not None:
        command += ["--entrypoint", entrypoint]
    return subprocess.run(
        [*command, image, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_image_runs_spotguard_as_non_root(image: str) -> None:
    result = run(image, "--help")  # the ENTRYPOINT is `spotguard`
    assert result.returncode == 0, result.stderr
    assert "serve" in result.stdout and "certs" in result.stdout
    user = run(image, "-c", "import os; print(os.getuid(), os.getgid())", entrypoint="python")
    assert user.stdout.split() == ["65532", "65532"], user.stderr
    inspect = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{json .Config.User}} {{json .Config.Cmd}}",
         image],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert inspect.stdout.split(" ", 1)[0] == '"65532:65532"'
    assert '"serve"' in inspect.stdout


def test_default_command_serves_over_tls_with_a_read_only_root(image: str, tmp_path: Path) -> None:
    """The image's default CMD (`serve` on 0.0.0.0:8443 with /etc/spotguard/certs), run the
    way the Deployment runs it, answers /readyz and stops cleanly on SIGTERM."""
    certs = generate_pair(tmp_path / "certs", ["localhost"], ["127.0.0.1"])
    tmp_path.joinpath("certs").chmod(0o755)
    for path in (certs.cert, certs.key):
        path.chmod(0o644)  # the container's uid 65532 must read them, like fsGroup allows
    name = f"spotguard-test-{uuid.uuid4().hex[:8]}"
    started = subprocess.run(
        ["docker", "run", "--detach", "--name", name, "--read-only", "--tmpfs", "/tmp",
         "--cap-drop", "ALL", "--publish", "127.0.0.1::8443",
         "--volume", f"{tmp_path / 'certs'}:/etc/spotguard/certs:ro", image],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    try:
        port = subprocess.run(
            ["docker", "port", name, "8443/tcp"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.split()[0].rsplit(":", 1)[1]  # fmt: skip
        session = requests.Session()
        session.trust_env = False
        deadline = time.monotonic() + 60
        while True:
            try:
                response = session.get(
                    f"https://127.0.0.1:{port}/readyz", verify=str(certs.ca_cert), timeout=2
                )
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "ready"
        stopped = subprocess.run(
            ["docker", "stop", "--time", "30", name], capture_output=True, timeout=60, check=False
        )
        assert stopped.returncode == 0
        state = subprocess.run(
            ["docker", "inspect", "--format", "{{.State.ExitCode}}", name],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        assert state.stdout.strip() == "0", "spotguard serve did not exit cleanly on SIGTERM"
    finally:
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True, check=False)
        subprocess.run(["docker", "rm", "--force", name], capture_output=True, check=False)
        print(logs.stdout[-2000:], logs.stderr[-2000:])


def test_image_has_no_build_or_install_tools(image: str) -> None:
    probe = (
        "import importlib.util, shutil; "
        "print([t for t in ('gcc', 'cc', 'make', 'pip', 'pip3') if shutil.which(t)], "
        "[m for m in ('pip', 'setuptools', 'wheel') if importlib.util.find_spec(m)])"
    )
    result = run(image, "-c", probe, entrypoint="python")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[] []"


def test_image_builds_for_amd64_and_arm64() -> None:
    """The multi-architecture build the Dockerfile documents (docker buildx, both
    platforms). It needs a Docker engine and a buildx builder that can build arm64 (QEMU or
    a native node); the result stays in the build cache, nothing is pushed."""
    problem = docker_problem()
    if problem is not None:
        pytest.skip(problem)
    builders = subprocess.run(
        ["docker", "buildx", "inspect"], capture_output=True, text=True, timeout=60, check=False
    )
    if builders.returncode != 0:
        pytest.skip(f"docker buildx is not available: {builders.stderr.strip()[-200:]}")
    if "linux/arm64" not in builders.stdout or "linux/amd64" not in builders.stdout:
        pytest.skip("the current buildx builder cannot build both linux/amd64 and linux/arm64")
    build = subprocess.run(
        ["docker", "buildx", "build", "--platform", "linux/amd64,linux/arm64",
         "--output", "type=cacheonly", str(REPO)],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT * 2, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
