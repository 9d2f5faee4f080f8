"""The policy in force, swapped atomically when a new revision loads.

Reviews read ``store.current`` once per request; a reload builds a complete new Policy and
replaces the reference in one assignment, so no review ever sees half a policy. A revision
that fails to load leaves the last good policy in force and is remembered as the error.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from policies.loader import PolicyError, default_policy, parse_policy_text
from policies.model import Policy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadError:
    source: str
    problems: tuple[str, ...]


class PolicyStore:
    """Holds the current policy and the last load error, if the newest revision was bad."""

    def __init__(self, policy: Policy, source: str) -> None:
        self._policy = policy
        self._source = source
        self._error: LoadError | None = None
        self._lock = threading.Lock()

    @property
    def current(self) -> Policy:
        return self._policy

    @property
    def source(self) -> str:
        return self._source

    @property
    def last_error(self) -> LoadError | None:
        """Set while the newest revision seen was refused: the policy in force is stale."""
        return self._error

    def load_text(self, text: str, source: str) -> bool:
        """Try a new revision; on success swap it in, else keep the old one. Returns success."""
        try:
            policy = parse_policy_text(text)
        except PolicyError as error:
            with self._lock:
                self._error = LoadError(source, tuple(error.problems))
            log.error(
                "policy refused, keeping revision %s",
                self._policy.revision,
                extra={
                    "fields": {
                        "event": "policy_refused",
                        "source": source,
                        "problems": error.problems,
                    }
                },
            )
            return False
        with self._lock:
            changed = policy.revision != self._policy.revision
            self._policy, self._source, self._error = policy, source, None
        if changed:
            log.info(
                "policy revision %s loaded",
                policy.revision,
                extra={
                    "fields": {
                        "event": "policy_loaded",
                        "source": source,
                        "revision": policy.revision,
                    }
                },
            )
        return True

    @classmethod
    def from_file(cls, path: Path | None) -> PolicyStore:
        """Start from a file, or the built-in default. A bad file at start-up is fatal."""
        if path is None:
            return cls(default_policy(), "built-in default")
        policy = parse_policy_text(path.read_text("utf-8"))
        return cls(policy, str(path))
