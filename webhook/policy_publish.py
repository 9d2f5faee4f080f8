"""Sharing the policy between the gunicorn master and its workers through two files.

The master alone watches the policy source (file or ConfigMap), validates each revision
and counts it, so every revision is checked, logged and measured once per pod however
many workers run. It publishes the outcome in a runtime directory: ``policy.yaml`` (the
accepted document, replaced atomically) and ``status.json`` (source, revision and the
newest refusal). Workers follow those files, checking at most every 250 ms whether
``status.json`` changed (one ``stat``), so a new revision is in force in every worker
within a second, with no API call per review.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from pathlib import Path

from policies.loader import parse_policy_text
from webhook.policy_store import LoadError, PolicyState

POLICY_FILE = "policy.yaml"
STATUS_FILE = "status.json"
CHECK_INTERVAL_SECONDS = 0.25


def _write_atomically(path: Path, data: str) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(data)
    os.replace(temporary, path)


def publish(state: PolicyState, runtime_dir: Path) -> None:
    """Write a state for the workers: the policy first, then the status that points at it."""
    runtime_dir.mkdir(parents=True, exist_ok=True)
    if state.policy is not None:
        _write_atomically(runtime_dir / POLICY_FILE, state.text)
    error = state.error
    status = {
        "source": state.source,
        "revision": state.policy.revision if state.policy else None,
        "error": {"source": error.source, "problems": list(error.problems)} if error else None,
        "registration": list(state.registration) if state.registration is not None else None,
        "published": time.time(),
    }
    _write_atomically(runtime_dir / STATUS_FILE, json.dumps(status))


class PublishedPolicy:
    """A worker's view of the master's policy (implements ``PolicyView``)."""

    def __init__(self, runtime_dir: Path) -> None:
        self._dir = runtime_dir
        self._state = PolicyState(None, f"waiting for the master to publish in {runtime_dir}")
        self._seen: int | None = None
        self._next_check = 0.0
        self._lock = threading.Lock()
        self._refresh()

    def snapshot(self) -> PolicyState:
        if time.monotonic() >= self._next_check:
            self._refresh()
        return self._state

    def _refresh(self) -> None:
        with self._lock:
            self._next_check = time.monotonic() + CHECK_INTERVAL_SECONDS
            try:
                stamp = (self._dir / STATUS_FILE).stat().st_mtime_ns
            except FileNotFoundError:
                return
            if stamp == self._seen:
                return
            self._seen = stamp
            status = json.loads((self._dir / STATUS_FILE).read_text("utf-8"))
            policy, text = self._state.policy, self._state.text
            if status["revision"] and (policy is None or policy.revision != status["revision"]):
                text = (self._dir / POLICY_FILE).read_text("utf-8")
                policy = parse_policy_text(text)  # the master validated it already
            error = status["error"]
            registration = status.get("registration")
            self._state = PolicyState(
                policy,
                status["source"],
                text,
                LoadError(error["source"], tuple(error["problems"])) if error else None,
                tuple(registration) if registration is not None else None,
            )
