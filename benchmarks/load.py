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

from devtools.server import REPO, RunningServer

LOADGEN_DIR = REPO / "benchmarks" / "loadgen"


def cache_dir() -> Path:
    base = os.environ.get("SPOTGUARD_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "spotguard"
    )
    return Path(base)


def go_available() -> bool:
    return shutil.which("go") is not None


def build_loadgen() -> Path:
    """Build the Go load generator once per source version, into the cache."""
    digest = hashlib.sha256()
    for name in ("go.mod", "main.go"):
        digest.update((LOADGEN_DIR / name).read_bytes())
    binary = cache_dir() / "loadgen" / digest.hexdigest()[:12] / "loadgen"
    if not binary.exists():
        print(f"building load generator into {binary.parent} ...", flush=True)
        partial = binary.with_name(f"loadgen.{os.getpid()}")
        subprocess.run(["go", "build", "-o", str(partial), "."], cwd=LOADGEN_DIR, check=True)
        partial.replace(binary)
    return binary


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
