"""Copy a TLS Secret to a directory, as the kubelet does for a mounted Secret.

The local webhook process in the tests and the demo reads its certificate from files,
like the one in a cluster; this thread plays the kubelet: it polls the Secret and
replaces ``tls.crt`` and ``tls.key`` when they change (key first, each atomically).
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

from controlplane.harness import ControlPlane

#: Secret key -> file name, for a Secret volume without ``items``: the serving pair and the
#: CA bundle (tests trust the bundle).
DEFAULT_FILES = {"tls.key": "tls.key", "tls.crt": "tls.crt", "ca-bundle.crt": "ca-bundle.crt"}


class SecretSync:
    def __init__(
        self,
        cluster: ControlPlane,
        namespace: str,
        name: str,
        directory: Path,
        files: Mapping[str, str] | None = None,
    ) -> None:
        """``files``: Secret key -> file name, as a volume's ``items`` say (default
        :data:`DEFAULT_FILES`); keys the Secret lacks are skipped."""
        self._cluster = cluster
        self._path = f"/api/v1/namespaces/{namespace}/secrets/{name}"
        self._directory = directory
        self._files = dict(files if files is not None else DEFAULT_FILES)
        self._stop = threading.Event()
        self._version: str | None = None
        self._thread = threading.Thread(target=self._run, name="secret-sync", daemon=True)
        directory.mkdir(parents=True, exist_ok=True)

    def sync_once(self) -> bool:
        """Copy the Secret if it changed; True when files were written."""
        status, secret = self._cluster.request("GET", self._path)
        if status != 200 or secret["metadata"]["resourceVersion"] == self._version:
            return False
        data = secret.get("data") or {}
        if "tls.crt" not in data or "tls.key" not in data:
            return False
        for key, name in sorted(self._files.items(), key=lambda item: item[0] != "tls.key"):
            if key in data:  # the key first: a new certificate must never meet an old key
                self._write(name, base64.b64decode(data[key]))
        self._version = secret["metadata"]["resourceVersion"]
        return True

    def _write(self, name: str, content: bytes) -> None:
        descriptor, temporary = tempfile.mkstemp(dir=self._directory, prefix=f".{name}.")
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
        os.replace(temporary, self._directory / name)

    def start(self, interval: float = 0.5) -> None:
        self._interval = interval
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.sync_once()
            except (OSError, ValueError, json.JSONDecodeError):
                continue
