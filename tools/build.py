"""Build ``helm`` and ``promtool`` from the Go modules pinned in ``tools/go.mod``.

Run ``python -m tools.build`` from the repository root (``make tools`` does), or call
:func:`ensure_tools` from Python. The binaries land beside the control plane's, outside
the repository::

    ${SPOTGUARD_CACHE:-${XDG_CACHE_HOME:-~/.cache}/spotguard}/tools/<key>/bin

``<key>`` hashes ``go.mod``, ``go.sum``, this script's :data:`BUILD_SCRIPT_VERSION`, the
build tags and the Go version, so a second call is a no-op until a pin changes. This is
its own module, not part of ``controlplane/go.mod``: that one pins Kubernetes for the
control plane, and helm and Prometheus must not move those pins.

promtool is built with the ``remove_all_sd`` tag: ``promtool test rules`` needs no service
discovery, and the tag leaves the cloud SDKs (AWS, Azure, GCE, ...) out of the build.

Set ``SPOTGUARD_TOOLS_BIN`` to a directory holding prebuilt ``helm`` and ``promtool`` to
skip building altogether.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from controlplane.build import BuildError, build_lock, cache_root, go_command, go_version

#: Bump when this script changes how binaries are built (flags, tags, set of binaries).
BUILD_SCRIPT_VERSION = "1"
MODULE_DIR = Path(__file__).resolve().parent
BIN_ENV = "SPOTGUARD_TOOLS_BIN"
#: promtool without service discovery plugins (see the module docstring).
BUILD_TAGS = "remove_all_sd"


@dataclass(frozen=True)
class Tool:
    """One binary: its file name and the Go package that is its main."""

    name: str
    package: str


TOOLS: tuple[Tool, ...] = (
    Tool("helm", "helm.sh/helm/v3/cmd/helm"),
    Tool("promtool", "github.com/prometheus/prometheus/cmd/promtool"),
)


def required_version(module: str, go_mod: Path | None = None) -> str:
    """The version ``go.mod`` requires of ``module``, e.g. ``v3.22.0``."""
    text = (go_mod or MODULE_DIR / "go.mod").read_text(encoding="utf-8")
    match = re.search(rf"^\s*{re.escape(module)}\s+(v\d+\.\d+\.\d+\S*)", text, re.MULTILINE)
    if match is None:
        raise BuildError(f"tools/go.mod does not require {module}")
    return match.group(1)


def version_ldflags(go_mod: Path | None = None) -> list[str]:
    """``-X`` flags so each binary reports its real version.

    helm: its own version, and the Kubernetes version ``helm template`` and ``helm lint``
    assume without a cluster (default 1.20): the client-go minor it is built with.
    promtool: Prometheus publishes v3.X.Y as Go module version v0.3XX.Y.
    """
    helm = required_version("helm.sh/helm/v3", go_mod)
    client_go = required_version("k8s.io/client-go", go_mod)
    kube_minor = client_go.split(".")[1]
    flags = [f"-X helm.sh/helm/v3/internal/version.version={helm}"]
    for package in ("helm.sh/helm/v3/pkg/chartutil", "helm.sh/helm/v3/pkg/lint/rules"):
        flags += [f"-X {package}.k8sVersionMajor=1", f"-X {package}.k8sVersionMinor={kube_minor}"]
    prometheus = required_version("github.com/prometheus/prometheus", go_mod)
    match = re.fullmatch(r"v0\.(\d)(\d\d)\.(\d+)", prometheus)
    if match:
        major, minor, patch = (int(part) for part in match.groups())
        flags.append(f"-X github.com/prometheus/common/version.Version={major}.{minor}.{patch}")
    return flags


def build_key(go_ver: str) -> str:
    """Hash of everything that decides what gets built."""
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        digest.update(name.encode())
        digest.update((MODULE_DIR / name).read_bytes())
    digest.update(f"script={BUILD_SCRIPT_VERSION}\ngo={go_ver}\ntags={BUILD_TAGS}\n".encode())
    for tool in TOOLS:
        digest.update(f"{tool.name}={tool.package}\n".encode())
    return digest.hexdigest()[:16]


def _log(out: TextIO, start: float, message: str) -> None:
    print(f"[tools build {time.monotonic() - start:6.1f}s] {message}", file=out, flush=True)


def run_go_build(go: str, out_dir: Path, out: TextIO) -> None:
    """Build every binary in :data:`TOOLS` into ``out_dir`` with one ``go build``."""
    start = time.monotonic()
    ldflags = " ".join(["-s", "-w", *version_ldflags()])
    command = [go, "build", "-v", "-trimpath", "-buildvcs=false", "-tags", BUILD_TAGS,
               "-ldflags", ldflags, "-o", str(out_dir) + os.sep,
               *[tool.package for tool in TOOLS]]  # fmt: skip
    _log(out, start, f"go build {', '.join(t.name for t in TOOLS)} into {out_dir}")
    process = subprocess.Popen(
        command, cwd=MODULE_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None  # stdout=PIPE
    counted = {"packages": 0}
    tail: list[str] = []
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(15.0):
            _log(out, start, f"{counted['packages']} packages compiled")

    threading.Thread(target=heartbeat, daemon=True).start()
    try:
        for line in process.stdout:
            if re.fullmatch(r"[\w.\-/~+]+", line.strip()):
                counted["packages"] += 1
            else:
                tail = [*tail[-39:], line.rstrip("\n")]
        code = process.wait()
    finally:
        done.set()
        if process.poll() is None:
            process.kill()
            process.wait()
    if code != 0:
        print("\n".join(tail), file=out)
        raise BuildError(f"go build failed with exit code {code} (output above)")
    _log(out, start, f"done: {counted['packages']} packages compiled")


def ensure_tools(out: TextIO | None = None, force: bool = False) -> Path:
    """The directory holding ``helm`` and ``promtool``, building them first if needed."""
    stream = out if out is not None else sys.stderr
    prebuilt = os.environ.get(BIN_ENV)
    if prebuilt:
        bin_dir = Path(prebuilt).expanduser().resolve()
        missing = [t.name for t in TOOLS if not (bin_dir / t.name).is_file()]
        if missing:
            raise BuildError(f"${BIN_ENV}={bin_dir} lacks {', '.join(missing)}")
        return bin_dir
    go = go_command()
    key_dir = cache_root() / "tools" / build_key(go_version(go, MODULE_DIR))
    bin_dir = key_dir / "bin"
    if not force and (key_dir / "complete").is_file():
        return bin_dir
    with build_lock(key_dir.parent / f"{key_dir.name}.lock"):
        if not force and (key_dir / "complete").is_file():
            return bin_dir  # another process built it while we waited
        staging = key_dir / f"bin.tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            run_go_build(go, staging, stream)
            (key_dir / "complete").unlink(missing_ok=True)
            shutil.rmtree(bin_dir, ignore_errors=True)
            staging.rename(bin_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        (key_dir / "complete").write_text("\n".join(version_ldflags()) + "\n", encoding="utf-8")
    return bin_dir


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.build",
        description="Build helm and promtool from the Go modules pinned in tools/go.mod "
        "(cached); print the bin directory.",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    try:
        bin_dir = ensure_tools(force=args.force)
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(bin_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
