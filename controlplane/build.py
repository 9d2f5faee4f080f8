"""Build the control plane binaries from the Go modules pinned in ``go.mod``.

Run ``python -m controlplane.build`` from the repository root, or call
:func:`ensure_binaries` from Python. The binaries land in a cache directory
outside the repository::

    ${SPOTGUARD_CACHE:-${XDG_CACHE_HOME:-~/.cache}/spotguard}/controlplane/<key>/bin

where ``<key>`` hashes ``go.mod``, ``go.sum``, this script's
:data:`BUILD_SCRIPT_VERSION` and the Go version, so a second call is a no-op
until a pin changes. All binaries are built by one ``go build`` invocation so
the packages they share compile once; Go's own module and build caches
(``GOMODCACHE``, ``GOCACHE``) are used as configured, so a rebuild after a pin
change is incremental.

Set ``SPOTGUARD_CONTROLPLANE_BIN`` to a directory holding prebuilt binaries to
skip building altogether.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TextIO

#: Bump when this script changes how binaries are built (flags, set of binaries).
BUILD_SCRIPT_VERSION = "1"

MODULE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Binary:
    """One binary to build: its file name and the Go package that is its main."""

    name: str
    package: str


BINARIES: tuple[Binary, ...] = (
    Binary("etcd", "./cmd/etcd"),
    Binary("kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver"),
    Binary("kube-controller-manager", "k8s.io/kubernetes/cmd/kube-controller-manager"),
    Binary("kube-scheduler", "k8s.io/kubernetes/cmd/kube-scheduler"),
    Binary("kubectl", "k8s.io/kubernetes/cmd/kubectl"),
    Binary("kwok", "sigs.k8s.io/kwok/cmd/kwok"),
    # The node agent for the harness's real nodes (controlplane/kubelet.py).
    Binary("kubelet", "k8s.io/kubernetes/cmd/kubelet"),
)

#: kwok stage definitions copied from the kwok module next to the binaries
#: (directory ``kwok-stages`` beside ``bin``); the harness loads them.
KWOK_STAGE_FILES: tuple[str, ...] = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)

BIN_ENV = "SPOTGUARD_CONTROLPLANE_BIN"


class BuildError(RuntimeError):
    """The binaries could not be built; the message is one line for the user."""


def cache_root() -> Path:
    """``$SPOTGUARD_CACHE``, else ``$XDG_CACHE_HOME/spotguard``, else ``~/.cache/...``."""
    explicit = os.environ.get("SPOTGUARD_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "spotguard"


def kubernetes_version(go_mod: Path | None = None) -> str:
    """The ``k8s.io/kubernetes`` version required by ``go.mod``, e.g. ``v1.37.2``."""
    text = (go_mod or MODULE_DIR / "go.mod").read_text(encoding="utf-8")
    match = re.search(r"^\s*k8s\.io/kubernetes\s+(v\d+\.\d+\.\d+\S*)", text, re.MULTILINE)
    if match is None:
        raise BuildError("go.mod does not require k8s.io/kubernetes")
    return match.group(1)


def version_ldflags(version: str) -> list[str]:
    """``-X`` flags so the binaries report ``version`` instead of ``v0.0.0-master``."""
    match = re.match(r"v(\d+)\.(\d+)", version)
    if match is None:
        raise BuildError(f"unexpected Kubernetes version {version!r}")
    major, minor = match.groups()
    flags: list[str] = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    return flags


def go_command() -> str:
    """The ``go`` executable on PATH, or a one-line :class:`BuildError`."""
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "the 'go' command was not found on PATH: install Go 1.26 or newer "
            "(see controlplane/README.md)"
        )
    return go


def go_version(go: str, module_dir: Path = MODULE_DIR) -> str:
    """The version of the Go toolchain that builds ``module_dir`` (honours GOTOOLCHAIN)."""
    result = subprocess.run(
        [go, "env", "GOVERSION"],
        cwd=module_dir,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BuildError(f"'go env GOVERSION' failed: {result.stderr.strip()}")
    return result.stdout.strip()


def build_key(go_ver: str) -> str:
    """Hash of everything that decides what gets built."""
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "cmd/etcd/main.go"):
        digest.update(name.encode())
        digest.update((MODULE_DIR / name).read_bytes())
    digest.update(f"script={BUILD_SCRIPT_VERSION}\ngo={go_ver}\n".encode())
    for binary in BINARIES:
        digest.update(f"{binary.name}={binary.package}\n".encode())
    return digest.hexdigest()[:16]


def _log(out: TextIO, start: float, message: str, label: str = "controlplane") -> None:
    print(
        f"[{label} build {time.monotonic() - start:6.1f}s] {message}",
        file=out,
        flush=True,
    )


@contextmanager
def build_lock(path: Path) -> Iterator[None]:
    """Serialise concurrent builds (two pytest sessions, say) on one lock file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class GoBuild:
    """One ``go build`` of several main packages of a Go module into one directory
    (shared packages compile once). ``label`` names the build in its progress lines."""

    label: str
    module_dir: Path
    binaries: tuple[Binary, ...]
    ldflags: tuple[str, ...] = ()
    tags: str = ""

    def main_packages(self) -> dict[str, str]:
        """Import path of each main package -> its binary's name."""
        text = (self.module_dir / "go.mod").read_text(encoding="utf-8")
        match = re.search(r"^module\s+(\S+)", text, re.MULTILINE)
        module = match.group(1) if match else ""
        return {
            (f"{module}/{b.package[2:]}" if b.package.startswith("./") else b.package): b.name
            for b in self.binaries
        }


def _pump(
    stream: IO[str], out: TextIO, start: float, state: dict[str, object], build: GoBuild
) -> None:
    """Read ``go build -v`` output: count packages, announce the main packages."""
    mains = build.main_packages()
    tail: list[str] = []
    for raw in stream:
        line = raw.rstrip("\n")
        name = line.strip()
        if not name:
            continue
        if re.fullmatch(r"[\w.\-/~+]+", name) and " " not in name:
            state["packages"] = int(str(state.get("packages", 0))) + 1
            state["last"] = name
            if name in mains:
                message = f"compiled the main package of {mains[name]}; linking it"
                _log(out, start, message, build.label)
        else:
            if name.startswith("go: downloading "):
                state["downloads"] = int(str(state.get("downloads", 0))) + 1
            tail.append(line)
            del tail[:-40]
    state["tail"] = tail


def _heartbeat(
    out: TextIO, start: float, state: dict[str, object], done: threading.Event, label: str
) -> None:
    while not done.wait(15.0):
        _log(
            out,
            start,
            f"{state.get('downloads', 0)} modules downloaded, "
            f"{state.get('packages', 0)} packages compiled, last {state.get('last', '-')}",
            label,
        )


def go_build(build: GoBuild, go: str, out_dir: Path, out: TextIO, what: str = "") -> None:
    """Run ``build`` into ``out_dir``, with a progress line every 15 s; the output's tail
    and a :class:`BuildError` when it fails."""
    start = time.monotonic()
    cmd = [go, "build", "-v", "-trimpath", "-buildvcs=false"]
    if build.tags:
        cmd += ["-tags", build.tags]
    cmd += ["-ldflags", " ".join(build.ldflags), "-o", str(out_dir) + os.sep]
    cmd += [b.package for b in build.binaries]
    names = ", ".join(b.name for b in build.binaries)
    _log(out, start, f"go build {names}{what} into {out_dir}", build.label)
    proc = subprocess.Popen(
        cmd,
        cwd=build.module_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if proc.stdout is None:  # pragma: no cover - stdout=PIPE guarantees it
        raise BuildError("go build produced no output stream")
    state: dict[str, object] = {}
    done = threading.Event()
    beat = threading.Thread(
        target=_heartbeat, args=(out, start, state, done, build.label), daemon=True
    )
    beat.start()
    try:
        with proc.stdout:
            _pump(proc.stdout, out, start, state, build)
        code = proc.wait()
    finally:
        done.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if code != 0:
        tail = state.get("tail", [])
        if isinstance(tail, list):
            for line in tail:
                print(line, file=out)
        raise BuildError(f"go build failed with exit code {code} (output above)")
    _log(out, start, f"done: {state.get('packages', 0)} packages compiled", build.label)


def run_go_build(go: str, out_dir: Path, version: str, out: TextIO) -> None:
    """Build every binary in :data:`BINARIES` into ``out_dir`` with one ``go build``."""
    ldflags = ("-s", "-w", *version_ldflags(version))
    build = GoBuild("controlplane", MODULE_DIR, BINARIES, ldflags)
    go_build(build, go, out_dir, out, f" (Kubernetes {version})")


def prebuilt(env: str, names: Sequence[str]) -> Path | None:
    """The directory ``$env`` names, if set, holding every binary in ``names``."""
    value = os.environ.get(env)
    if not value:
        return None
    bin_dir = Path(value).expanduser().resolve()
    missing = [name for name in names if not (bin_dir / name).is_file()]
    if missing:
        raise BuildError(f"${env}={bin_dir} lacks {', '.join(missing)}")
    return bin_dir


def build_cached(
    key_dir: Path, build: Callable[[Path], None], stamp: str, *, force: bool = False
) -> Path:
    """``key_dir/bin``, made by ``build(staging directory)`` unless a complete build is
    there already. Concurrent callers wait on a lock and the first one builds; a failed
    build leaves nothing behind."""
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
            build(staging)
            (key_dir / "complete").unlink(missing_ok=True)
            shutil.rmtree(bin_dir, ignore_errors=True)
            staging.rename(bin_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        (key_dir / "complete").write_text(stamp, encoding="utf-8")
    return bin_dir


def build_main(
    prog: str, description: str, ensure: Callable[..., Path], argv: Sequence[str] | None
) -> int:
    """A build command's main: build (or find) the binaries, print their directory."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    try:
        bin_dir = ensure(force=args.force)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(bin_dir)
    return 0


def copy_kwok_stages(go: str, dest: Path) -> None:
    """Copy kwok's stage definitions from the pinned kwok module into ``dest``."""
    result = subprocess.run(
        [go, "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/kwok"],
        cwd=MODULE_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not result.stdout.strip():
        raise BuildError(f"cannot locate the kwok module: {result.stderr.strip()}")
    root = Path(result.stdout.strip())
    dest.mkdir(parents=True, exist_ok=True)
    for rel in KWOK_STAGE_FILES:
        shutil.copyfile(root / rel, dest / Path(rel).name)


def ensure_binaries(out: TextIO | None = None, force: bool = False) -> Path:
    """Return the directory holding the binaries, building them first if needed.

    Progress goes to ``out`` (default: stderr). Raises :class:`BuildError`.
    """
    stream = out if out is not None else sys.stderr
    given = prebuilt(BIN_ENV, [b.name for b in BINARIES])
    if given is not None:
        return given
    go = go_command()
    version = kubernetes_version()
    key_dir = cache_root() / "controlplane" / build_key(go_version(go))

    def build(staging: Path) -> None:
        start = time.monotonic()
        run_go_build(go, staging, version, stream)
        copy_kwok_stages(go, key_dir / "kwok-stages")
        _log(stream, start, f"binaries ready in {key_dir / 'bin'}")

    return build_cached(key_dir, build, f"{version}\n", force=force)


def kwok_stages_dir(bin_dir: Path) -> Path:
    """Where :func:`ensure_binaries` put kwok's stage files for ``bin_dir``."""
    return bin_dir.parent / "kwok-stages"


def main(argv: Sequence[str] | None = None) -> int:
    return build_main(
        "python -m controlplane.build",
        "Build etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok "
        "and kubelet from the pinned Go modules; print the bin directory.",
        ensure_binaries,
        argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
