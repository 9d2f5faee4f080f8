"""Debian packages as files: fetched with ``apt-get download``, read with ``dpkg-deb``.

The images of the harness's real nodes (controlplane/images.py) are built from Debian
packages, never from an image registry. This module asks apt which file each package's
candidate version is (name, version, SHA256: known before anything is downloaded, so an
image's cache key needs no download), keeps each downloaded ``.deb`` under
``<cache>/debs/<sha256>.deb``, checks its digest, and reads its files as a tar stream.
Nothing is installed on this machine.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from controlplane.build import cache_root


class DebError(RuntimeError):
    """A package could not be resolved, downloaded or read; the message says which."""


@dataclass(frozen=True)
class Deb:
    """One package's candidate version, as apt would download it."""

    package: str
    file_name: str  # e.g. python3.11-minimal_3.11.2-6+deb12u9_amd64.deb
    size: int
    sha256: str

    @property
    def version(self) -> str:
        return unquote(self.file_name.split("_")[1])  # an epoch's ':' is written %3a


# 'URI' file-name size SHA256:hex, one line per package.
_PRINT_URIS = re.compile(r"^'[^']+' (\S+) (\d+) SHA256:([0-9a-f]{64})$")


def _apt(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["apt-get", "-q", *args], cwd=cwd, capture_output=True, text=True, check=False
    )


def resolve(packages: Sequence[str]) -> list[Deb]:
    """The candidate ``.deb`` of each package, from apt's lists (``apt-get update`` first
    if the lists do not know a package)."""
    result = _apt("download", "--print-uris", *packages)
    if result.returncode != 0:
        updated = _apt("update")
        if updated.returncode != 0:
            raise DebError(f"apt-get update failed: {updated.stderr.strip()[-500:]}")
        result = _apt("download", "--print-uris", *packages)
        if result.returncode != 0:
            raise DebError(f"apt cannot resolve {' '.join(packages)}: {result.stderr.strip()}")
    debs = []
    for line in result.stdout.splitlines():
        match = _PRINT_URIS.match(line.strip())
        if match:
            file_name, size, digest = match.groups()
            debs.append(Deb(file_name.split("_")[0], file_name, int(size), digest))
    by_name = {deb.package: deb for deb in debs}
    missing = [p for p in packages if p not in by_name]
    if missing:
        raise DebError(f"apt gave no download for {', '.join(missing)}")
    return [by_name[p] for p in packages]


def deb_cache() -> Path:
    return cache_root() / "debs"


def fetch(packages: Sequence[Deb]) -> list[Path]:
    """The ``.deb`` files of ``packages``: those not cached yet downloaded in one
    ``apt-get download``, digest-checked, then kept in the cache."""
    cache = deb_cache()
    paths = [cache / f"{deb.sha256}.deb" for deb in packages]
    missing = [deb for deb, path in zip(packages, paths, strict=True) if not path.is_file()]
    if not missing:
        return paths
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        # As root apt drops to its _apt user, who cannot write here: download as root.
        wanted = [f"{deb.package}={deb.version}" for deb in missing]
        result = _apt(
            "-o", "APT::Sandbox::User=root", "download", *wanted, cwd=Path(scratch)
        )  # fmt: skip
        for deb in missing:
            downloaded = Path(scratch) / deb.file_name
            if result.returncode != 0 or not downloaded.is_file():
                raise DebError(f"apt-get download {deb.package} failed: {result.stderr.strip()}")
            digest = hashlib.sha256(downloaded.read_bytes()).hexdigest()
            if digest != deb.sha256:
                raise DebError(f"{deb.file_name}: SHA256 {digest}, apt said {deb.sha256}")
            downloaded.rename(cache / f"{deb.sha256}.deb")
    return paths


def members(path: Path) -> Iterator[tuple[tarfile.TarInfo, bytes | None]]:
    """The data archive of a ``.deb``: each member, with the bytes of regular files."""
    dpkg_deb = shutil.which("dpkg-deb")
    if dpkg_deb is None:
        raise DebError("dpkg-deb is not installed")
    with subprocess.Popen(
        [dpkg_deb, "--fsys-tarfile", str(path)], stdout=subprocess.PIPE
    ) as process:
        assert process.stdout is not None
        with tarfile.open(fileobj=process.stdout, mode="r|") as archive:
            for member in archive:
                data = None
                if member.isreg():
                    extracted = archive.extractfile(member)
                    data = extracted.read() if extracted is not None else b""
                yield member, data
    if process.returncode != 0:
        raise DebError(f"dpkg-deb --fsys-tarfile {path.name} failed ({process.returncode})")
