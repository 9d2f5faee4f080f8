"""Build ``webhook-match`` (controlplane/cmd/webhook-match), the API server's own call
decision as a command, once, into the cache beside the control plane's binaries::

    ${SPOTGUARD_CACHE:-${XDG_CACHE_HOME:-~/.cache}/spotguard}/webhook-match/<key>/bin

It is a main package of this module, compiled against the same pinned k8s.io/apiserver
as the kube-apiserver the tests run, so it evaluates match conditions exactly as that
API server does. ``<key>`` hashes ``go.mod``, ``go.sum``, the command's sources, this
script's :data:`BUILD_SCRIPT_VERSION` and the Go version; the control plane's own key is
untouched by it. The build shares Go's module and build caches with the control plane's
(``-trimpath`` both), so the API server packages it imports are usually compiled already.

Set ``SPOTGUARD_WEBHOOK_MATCH_BIN`` to a directory holding a prebuilt ``webhook-match``
to skip building. ``python -m controlplane.webhook_match`` builds it and prints where.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from controlplane.build import (
    MODULE_DIR,
    Binary,
    GoBuild,
    build_cached,
    build_main,
    cache_root,
    go_build,
    go_command,
    go_version,
    prebuilt,
)

#: Bump when this script changes how the command is built.
BUILD_SCRIPT_VERSION = "1"
BIN_ENV = "SPOTGUARD_WEBHOOK_MATCH_BIN"
TOOL = Binary("webhook-match", "./cmd/webhook-match")


def build_key(go_ver: str) -> str:
    """Hash of everything that decides what gets built."""
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        digest.update(name.encode())
        digest.update((MODULE_DIR / name).read_bytes())
    for source in sorted((MODULE_DIR / "cmd" / TOOL.name).rglob("*.go")):
        digest.update(source.relative_to(MODULE_DIR).as_posix().encode())
        digest.update(source.read_bytes())
    digest.update(f"script={BUILD_SCRIPT_VERSION}\ngo={go_ver}\n".encode())
    return digest.hexdigest()[:16]


def ensure_bin_dir(out: TextIO | None = None, force: bool = False) -> Path:
    """The directory holding ``webhook-match``, building it first if needed."""
    stream = out if out is not None else sys.stderr
    given = prebuilt(BIN_ENV, [TOOL.name])
    if given is not None:
        return given
    go = go_command()
    key = build_key(go_version(go))
    build = GoBuild(TOOL.name, MODULE_DIR, (TOOL,), ("-s", "-w"))
    return build_cached(
        cache_root() / TOOL.name / key,
        lambda staging: go_build(build, go, staging, stream),
        f"{key}\n",
        force=force,
    )


def ensure_webhook_match(out: TextIO | None = None) -> Path:
    """The ``webhook-match`` executable."""
    return ensure_bin_dir(out) / TOOL.name


def main(argv: Sequence[str] | None = None) -> int:
    return build_main(
        "python -m controlplane.webhook_match",
        "Build webhook-match (the API server's webhook call decision) from this module's "
        "pins (cached); print the bin directory.",
        ensure_bin_dir,
        argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
