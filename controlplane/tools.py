"""Small Go programs of this module that tests and benchmarks run, built once and cached.

``controlplane/cmd/<name>`` is a main package compiled against the same pinned modules as
the control plane (so ``webhook-match`` runs the API server's own admission code at the
version the tests start). Each tool is built on its own, into::

    <cache>/controlplane-tools/<name>-<key>/<name>

where ``<key>`` hashes ``go.mod``, ``go.sum``, the tool's sources, :data:`TOOLS_VERSION`
and the Go version: a second call is a lookup, and the control plane's own build key is
untouched by a tool's change. The build shares Go's module and build caches with the
control-plane build (same ``-trimpath``), so the API server packages a tool imports are
usually compiled already.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from controlplane.build import MODULE_DIR, BuildError, _go, _locked, cache_root, go_version

#: Bump when how tools are built changes.
TOOLS_VERSION = "1"
TOOLS = ("webhook-match",)


def _key(name: str, go_ver: str) -> str:
    digest = hashlib.sha256()
    for path in ("go.mod", "go.sum"):
        digest.update((MODULE_DIR / path).read_bytes())
    for source in sorted((MODULE_DIR / "cmd" / name).rglob("*.go")):
        digest.update(source.relative_to(MODULE_DIR).as_posix().encode())
        digest.update(source.read_bytes())
    digest.update(f"tools={TOOLS_VERSION}\ngo={go_ver}\n".encode())
    return digest.hexdigest()[:16]


def ensure_tool(name: str, out: TextIO | None = None) -> Path:
    """The path of tool ``name``, building it first if needed. Raises BuildError."""
    if name not in TOOLS:
        raise BuildError(f"unknown tool {name!r} (known: {', '.join(TOOLS)})")
    stream = out if out is not None else sys.stderr
    go = _go()
    directory = cache_root() / "controlplane-tools" / f"{name}-{_key(name, go_version(go))}"
    binary = directory / name
    if binary.is_file():
        return binary
    with _locked(directory.parent / f"{directory.name}.lock"):
        if binary.is_file():
            return binary
        directory.mkdir(parents=True, exist_ok=True)
        staging = directory / f".{name}.tmp-{os.getpid()}"
        started = time.monotonic()
        print(f"[controlplane tools] go build {name} into {directory}", file=stream, flush=True)
        result = subprocess.run(
            [
                go,
                "build",
                "-trimpath",
                "-buildvcs=false",
                "-ldflags",
                "-s -w",
                "-o",
                str(staging),
                f"./cmd/{name}",
            ],
            cwd=MODULE_DIR,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            staging.unlink(missing_ok=True)
            raise BuildError(f"go build {name} failed:\n{result.stderr.strip()}")
        staging.rename(binary)
        elapsed = time.monotonic() - started
        (directory / "build-seconds").write_text(f"{elapsed:.1f}\n", encoding="utf-8")
        print(f"[controlplane tools] {name} built in {elapsed:.1f}s", file=stream, flush=True)
    return binary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m controlplane.tools",
        description="Build (once) and print the path of this module's Go tools.",
    )
    parser.add_argument("names", nargs="*", default=list(TOOLS), help=f"default: {' '.join(TOOLS)}")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    try:
        for name in args.names:
            if args.force and name in TOOLS:
                go = _go()
                cached = (
                    cache_root() / "controlplane-tools" / f"{name}-{_key(name, go_version(go))}"
                )
                shutil.rmtree(cached, ignore_errors=True)
            print(ensure_tool(name))
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
