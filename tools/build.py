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

import hashlib
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from controlplane.build import (
    Binary,
    BuildError,
    GoBuild,
    build_cached,
    build_main,
    cache_root,
    go_build,
    go_command,
    go_version,
    prebuilt,
)

#: Bump when this script changes how binaries are built (flags, tags, set of binaries).
BUILD_SCRIPT_VERSION = "1"
MODULE_DIR = Path(__file__).resolve().parent
BIN_ENV = "SPOTGUARD_TOOLS_BIN"
#: promtool without service discovery plugins (see the module docstring).
BUILD_TAGS = "remove_all_sd"


TOOLS: tuple[Binary, ...] = (
    Binary("helm", "helm.sh/helm/v3/cmd/helm"),
    Binary("promtool", "github.com/prometheus/prometheus/cmd/promtool"),
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


def ensure_tools(out: TextIO | None = None, force: bool = False) -> Path:
    """The directory holding ``helm`` and ``promtool``, building them first if needed."""
    stream = out if out is not None else sys.stderr
    given = prebuilt(BIN_ENV, [tool.name for tool in TOOLS])
    if given is not None:
        return given
    go = go_command()
    key_dir = cache_root() / "tools" / build_key(go_version(go, MODULE_DIR))
    ldflags = ("-s", "-w", *version_ldflags())
    build = GoBuild("tools", MODULE_DIR, TOOLS, ldflags, BUILD_TAGS)
    stamp = "\n".join(ldflags) + "\n"
    return build_cached(key_dir, lambda staging: go_build(build, go, staging, stream), stamp,
                        force=force)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    return build_main(
        "python -m tools.build",
        "Build helm and promtool from the Go modules pinned in tools/go.mod (cached); print "
        "the bin directory.",
        ensure_tools,
        argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
