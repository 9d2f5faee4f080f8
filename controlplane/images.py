"""The container images of the harness's real nodes, built from files the project controls.

There is no image registry here, so each image is built from Debian packages and this
repository's files into an OCI archive (controlplane/oci.py), imported into each node's
containerd and used with ``imagePullPolicy: Never``:

- :data:`PAUSE_IMAGE`: the pod sandbox, one static binary compiled from ``pause.c`` with
  the machine's gcc (containerd's ``sandbox_image`` names it);
- :data:`TRAINER_IMAGE`: Python 3.11 (Debian's python3.11-minimal, libpython3.11-stdlib
  and the libraries they load), ``/bin/sh`` = dash as on Debian-based training images,
  busybox-static at ``/bin/busybox`` (also providing ``date``, ``sleep`` and ``env``),
  and ``/opt/train/`` = ``examples/train_tiny.py`` + ``trainer/spotguard_checkpoint.py``.

Archives are cached as ``<cache>/images/<name>-<key>.tar``; the key hashes every input
(the packages' SHA256 as apt lists them, the repository files, the compiler's version,
:data:`RECIPE_VERSION`), so a second run finds them, and a changed input rebuilds.
``python -m controlplane.images`` builds both and prints their paths.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from controlplane import debs
from controlplane.build import build_lock, cache_root
from controlplane.oci import Layer, image_config, write_archive

#: Bump when a recipe changes in a way its inputs do not show.
RECIPE_VERSION = "1"

REPO = Path(__file__).resolve().parent.parent
PAUSE_SOURCE = Path(__file__).resolve().parent / "pause.c"
TRAINER_FILES = {
    "opt/train/train_tiny.py": REPO / "examples" / "train_tiny.py",
    "opt/train/spotguard_checkpoint.py": REPO / "trainer" / "spotguard_checkpoint.py",
}
PAUSE_IMAGE = "localhost/spotguard/pause:1"
TRAINER_IMAGE = "localhost/spotguard/trainer:1"

#: Debian packages of the trainer image: the interpreter, the standard library, the
#: libraries the interpreter and the modules the trainer imports load, and two shells.
TRAINER_PACKAGES = (
    "libc6",
    "libgcc-s1",
    "zlib1g",
    "libexpat1",
    "libpython3.11-minimal",
    "python3.11-minimal",
    "libpython3.11-stdlib",
    "dash",
    "busybox-static",
)
#: Parts of those packages a trainer never reads (documentation, translations, tools).
_SKIPPED_PREFIXES = (
    "usr/share/doc/",
    "usr/share/man/",
    "usr/share/info/",
    "usr/share/lintian/",
    "usr/share/locale/",
    "usr/share/bug/",
    "usr/lib/python3.11/pydoc_data/",
    "usr/lib/python3.11/ensurepip/",
    "usr/lib/python3.11/lib2to3/",
    "usr/lib/python3.11/idlelib/",
)
_BUSYBOX_APPLETS = ("date", "sleep", "env", "cat", "ls")


class ImageError(RuntimeError):
    """An image could not be built; the message says why."""


@dataclass(frozen=True)
class ImageArchive:
    name: str  # the reference it is imported as
    path: Path  # the OCI archive


def images_cache() -> Path:
    return cache_root() / "images"


def _hash(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def _gcc() -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise ImageError("gcc is not installed (make host-packages installs it)")
    return gcc


def _tool_version(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    return (result.stdout or result.stderr).splitlines()[0] if result.returncode == 0 else ""


def _libc_dev_version() -> str:
    return _tool_version("dpkg-query", "-W", "-f=${Version}", "libc6-dev")


def pause_key() -> str:
    gcc = _gcc()
    return _hash(
        RECIPE_VERSION, PAUSE_IMAGE, PAUSE_SOURCE.read_bytes(),
        _tool_version(gcc, "--version"), _libc_dev_version(),
    )  # fmt: skip


def build_pause(archive: Path) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        binary = Path(scratch) / "pause"
        result = subprocess.run(
            [_gcc(), "-static", "-Os", "-s", "-o", str(binary), str(PAUSE_SOURCE)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise ImageError(f"gcc could not build pause.c: {result.stderr.strip()}")
        layer = Layer()
        layer.add_file("pause", binary.read_bytes(), 0o755)
    tar = layer.tar()
    write_archive(archive, PAUSE_IMAGE, [tar], image_config([tar], entrypoint=["/pause"]))


def trainer_key(packages: Sequence[debs.Deb]) -> str:
    files = [f"{dest}={src.read_bytes().hex()}" for dest, src in sorted(TRAINER_FILES.items())]
    return _hash(
        RECIPE_VERSION, TRAINER_IMAGE, *(f"{d.file_name}={d.sha256}" for d in packages), *files
    )


def build_trainer(archive: Path, packages: Sequence[debs.Deb]) -> None:
    layer = Layer()
    for path in debs.fetch(packages):
        for member, data in debs.members(path):
            name = member.name.lstrip("./")
            if name and not name.startswith(_SKIPPED_PREFIXES):
                layer.add_member(member, data)
    layer.add_symlink("bin/sh", "dash")  # as Debian's dash package makes it
    for applet in _BUSYBOX_APPLETS:
        layer.add_symlink(f"bin/{applet}", "busybox")
    layer.add_symlink("usr/bin/python3", "python3.11")
    layer.add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    layer.add_file("etc/group", b"root:x:0:\n")
    layer.add_dir("root", 0o700)
    layer.add_dir("tmp", 0o1777)
    for dest, source in TRAINER_FILES.items():
        layer.add_file(dest, source.read_bytes())
    tar = layer.tar()
    config = image_config(
        [tar],
        cmd=["python3", "/opt/train/train_tiny.py"],
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHONUNBUFFERED": "1"},
        working_dir="/opt/train",
    )
    write_archive(archive, TRAINER_IMAGE, [tar], config)


def _ensure(name: str, key: str, build: Callable[[Path], None], out: TextIO) -> ImageArchive:
    stem = name.rpartition("/")[2].replace(":", "-")
    archive = images_cache() / f"{stem}-{key}.tar"
    if archive.is_file():
        return ImageArchive(name, archive)
    with build_lock(images_cache() / f"{stem}-{key}.lock"):
        if not archive.is_file():
            started = time.monotonic()
            build(archive)
            took = time.monotonic() - started
            size = archive.stat().st_size / 1e6
            print(f"[images] built {name} in {took:.1f} s: {archive} ({size:.1f} MB)", file=out)
    return ImageArchive(name, archive)


def ensure_images(out: TextIO | None = None) -> tuple[ImageArchive, ImageArchive]:
    """The pause and trainer image archives, built first if their inputs changed."""
    stream = out if out is not None else sys.stderr
    pause = _ensure(PAUSE_IMAGE, pause_key(), build_pause, stream)
    packages = debs.resolve(TRAINER_PACKAGES)
    trainer = _ensure(
        TRAINER_IMAGE,
        trainer_key(packages),
        lambda archive: build_trainer(archive, packages),
        stream,
    )
    return pause, trainer


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m controlplane.images",
        description="Build the pause and trainer images (OCI archives) from Debian packages "
        "and this repository's files; print their paths.",
    )
    parser.parse_args(argv)
    try:
        for image in ensure_images():
            print(f"{image.name} {image.path}")
    except (ImageError, debs.DebError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
