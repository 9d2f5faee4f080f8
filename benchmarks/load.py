"""The Go load generator (benchmarks/loadgen): built once per source version into the
cache, and run with the server's URL and CA. Shared by the benchmark, the soak and the
tests that need the API server's own HTTP client (Go's) under load."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from controlplane.build import cache_root
from testsupport.server import REPO, RunningServer

LOADGEN_DIR = REPO / "benchmarks" / "loadgen"


def go_available() -> bool:
    return shutil.which("go") is not None


def build_go_program(source: Path, name: str) -> Path:
    """A one-package Go program (``go.mod``, ``go.sum``, ``main.go`` in ``source``), built
    once per source version into ``<cache>/<name>/<digest>/<name>``. It is built beside
    its place and renamed there, so a concurrent or interrupted build leaves no half binary.
    """
    digest = hashlib.sha256()
    for file in ("go.mod", "go.sum", "main.go"):
        if (source / file).is_file():
            digest.update((source / file).read_bytes())
    binary = cache_root() / name / digest.hexdigest()[:12] / name
    if not binary.exists():
        print(f"building {name} into {binary.parent} ...", flush=True)
        binary.parent.mkdir(parents=True, exist_ok=True)
        partial = binary.with_name(f"{name}.{os.getpid()}")
        subprocess.run(
            ["go", "build", "-o", str(partial), "."], cwd=source, check=True, timeout=900
        )
        partial.replace(binary)
    return binary


def build_loadgen() -> Path:
    """The Go load generator, built once per source version."""
    return build_go_program(LOADGEN_DIR, "loadgen")


def loadgen_command(
    loadgen: Path, server: RunningServer, path: str, body: Path | None, **options: Any
) -> list[str]:
    command = [str(loadgen), "-url", server.url + path, "-ca", str(server.ca_file)]
    if body is not None:
        command += ["-body", str(body)]
    for key, value in options.items():
        command += [f"-{key}", str(value)]
    return command


def start_loadgen(
    loadgen: Path, server: RunningServer, path: str, body: Path | None, **options: Any
) -> subprocess.Popen[str]:
    """Run in the background; :func:`result` collects its figures."""
    command = loadgen_command(loadgen, server, path, body, **options)
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def result(process: subprocess.Popen[str], timeout: float = 120) -> dict[str, Any]:
    output, _ = process.communicate(timeout=timeout)
    if process.returncode != 0:
        raise RuntimeError(f"loadgen exited with {process.returncode}")
    figures: dict[str, Any] = json.loads(output)
    return figures
