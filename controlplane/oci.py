"""Reproducible OCI image archives, written without a registry or a container engine.

A :class:`Layer` collects files, directories and symlinks by path; :meth:`Layer.tar`
writes them sorted, owned by root, all with one fixed mtime, so the same inputs give the
same bytes and the same digests. :func:`write_archive` wraps layers and an image config
into an OCI image layout in one tar file (``oci-layout``, ``index.json``,
``blobs/sha256/...``), which ``ctr images import`` reads; the index names the image
(``io.containerd.image.name``), so it is imported under that name.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Every entry's mtime: 2000-01-01, a fixed point so that layer digests depend on content.
FIXED_MTIME = 946684800

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"


@dataclass(frozen=True)
class _Entry:
    kind: bytes  # a tarfile type
    mode: int
    data: bytes = b""
    target: str = ""


def _clean(path: str) -> str:
    cleaned = posixpath.normpath("/" + path.lstrip("./")).lstrip("/")
    if cleaned in ("", "."):
        raise ValueError(f"not a path in an image: {path!r}")
    return cleaned


class Layer:
    """One filesystem layer; a later entry for a path replaces an earlier one."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def __contains__(self, path: str) -> bool:
        return _clean(path) in self._entries

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        self._parents(_clean(path))
        self._entries[_clean(path)] = _Entry(tarfile.DIRTYPE, mode)

    def add_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._parents(_clean(path))
        self._entries[_clean(path)] = _Entry(tarfile.REGTYPE, mode, data=data)

    def add_symlink(self, path: str, target: str) -> None:
        self._parents(_clean(path))
        self._entries[_clean(path)] = _Entry(tarfile.SYMTYPE, 0o777, target=target)

    def add_member(self, member: tarfile.TarInfo, data: bytes | None) -> None:
        """A member of another archive (a .deb's data); hard links become copies."""
        if member.isdir():
            if member.name.strip("./") and member.name not in self:
                self.add_dir(member.name, member.mode & 0o7777)
        elif member.isreg() and data is not None:
            self.add_file(member.name, data, member.mode & 0o7777)
        elif member.issym():
            self.add_symlink(member.name, member.linkname)
        elif member.islnk():
            source = self._entries.get(_clean(member.linkname))
            if source is None:
                raise ValueError(f"hard link {member.name} to {member.linkname}, not seen yet")
            self._entries[_clean(member.name)] = source

    def _parents(self, path: str) -> None:
        parent = posixpath.dirname(path)
        while parent and parent not in self._entries:
            self._entries[parent] = _Entry(tarfile.DIRTYPE, 0o755)
            parent = posixpath.dirname(parent)

    def tar(self) -> bytes:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for path in sorted(self._entries):
                entry = self._entries[path]
                info = tarfile.TarInfo(path)
                info.type = entry.kind
                info.mode = entry.mode
                info.mtime = FIXED_MTIME
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                if entry.kind == tarfile.SYMTYPE:
                    info.linkname = entry.target
                    archive.addfile(info)
                elif entry.kind == tarfile.REGTYPE:
                    info.size = len(entry.data)
                    archive.addfile(info, io.BytesIO(entry.data))
                else:
                    archive.addfile(info)
        return out.getvalue()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def image_config(
    layers: Sequence[bytes],
    *,
    entrypoint: Sequence[str] = (),
    cmd: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    working_dir: str = "/",
) -> dict[str, Any]:
    """An OCI image config for ``layers`` (linux/amd64), without dates or history."""
    config: dict[str, Any] = {
        "Env": [f"{k}={v}" for k, v in (env or {}).items()],
        "WorkingDir": working_dir,
    }
    if entrypoint:
        config["Entrypoint"] = list(entrypoint)
    if cmd:
        config["Cmd"] = list(cmd)
    return {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [_digest(layer) for layer in layers]},
    }


def write_archive(path: Path, name: str, layers: Sequence[bytes], config: Mapping[str, Any]) -> str:
    """Write the OCI image layout of one image as a tar file; returns the manifest digest.

    ``name`` is the full reference it is imported as (``localhost/spotguard/pause:1``).
    """
    blobs: dict[str, bytes] = {}

    def blob(data: bytes, media_type: str) -> dict[str, Any]:
        digest = _digest(data)
        blobs[digest] = data
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    layer_descriptors = [blob(layer, LAYER_TYPE) for layer in layers]
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": blob(_json(config), CONFIG_TYPE),
        "layers": layer_descriptors,
    }
    descriptor = blob(_json(manifest), MANIFEST_TYPE)
    descriptor["annotations"] = {
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": name.rpartition(":")[2],
    }
    index = {"schemaVersion": 2, "manifests": [descriptor]}
    files = {
        "oci-layout": _json({"imageLayoutVersion": "1.0.0"}),
        "index.json": _json(index),
        **{f"blobs/sha256/{d.removeprefix('sha256:')}": data for d, data in blobs.items()},
    }
    temp = path.with_name(path.name + ".tmp")
    with tarfile.open(temp, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for member in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(member)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, FIXED_MTIME
            archive.addfile(info)
        for member, data in sorted(files.items()):
            info = tarfile.TarInfo(member)
            info.size, info.mode, info.mtime = len(data), 0o644, FIXED_MTIME
            archive.addfile(info, io.BytesIO(data))
    temp.replace(path)
    return str(descriptor["digest"])
