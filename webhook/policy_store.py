"""The policy in force, swapped atomically when a new revision loads.

The whole state (policy, where it came from, the newest refusal) is one immutable
:class:`PolicyState`; a reload builds a new one and replaces the reference in a single
assignment, so a review that took a snapshot never sees half a policy. A revision that
fails to load leaves the last good policy in force and is remembered as the error, which
readiness details and metrics report as "stale".
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from policies.loader import PolicyError, default_policy, parse_policy_text
from policies.model import Policy

log = logging.getLogger("spotguard.policy")


@dataclass(frozen=True)
class LoadError:
    source: str
    problems: tuple[str, ...]


@dataclass(frozen=True)
class PolicyState:
    """A consistent snapshot: the policy in force (None until one loads) and its status."""

    policy: Policy | None
    source: str
    text: str = ""
    error: LoadError | None = None

    @property
    def stale(self) -> bool:
        return self.error is not None


class PolicyView(Protocol):
    """What the web app needs: a snapshot per request."""

    def snapshot(self) -> PolicyState: ...


Listener = Callable[[PolicyState, bool], None]


class PolicyStore:
    """Validates revisions and holds the current state; the one writer of policy state."""

    def __init__(self, state: PolicyState) -> None:
        self._state = state
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []

    def snapshot(self) -> PolicyState:
        return self._state

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(state, loaded)`` after every revision, loaded or refused."""
        self._listeners.append(listener)

    def load_text(self, text: str, source: str) -> bool:
        """Try a new revision; on success swap it in, else keep the old one. Returns success."""
        try:
            policy = parse_policy_text(text)
        except PolicyError as error:
            self.refuse(error.problems, source)
            return False
        with self._lock:
            previous = self._state.policy
            self._state = PolicyState(policy, source, text)
        if previous is None or previous.revision != policy.revision:
            log.info(
                "policy revision %s loaded from %s",
                policy.revision,
                source,
                extra={
                    "fields": {
                        "event": "policy_loaded",
                        "source": source,
                        "revision": policy.revision,
                    }
                },
            )
        self._notify(True)
        return True

    def refuse(self, problems: list[str], source: str) -> None:
        """Record a refused revision; the policy in force (if any) stays."""
        with self._lock:
            self._state = dataclasses.replace(self._state, error=LoadError(source, tuple(problems)))
        kept = self._state.policy.revision if self._state.policy else "none"
        log.error(
            "policy from %s refused, keeping revision %s: %s",
            source,
            kept,
            "; ".join(problems),
            extra={"fields": {"event": "policy_refused", "source": source, "problems": problems}},
        )
        self._notify(False)

    def _notify(self, loaded: bool) -> None:
        for listener in self._listeners:
            listener(self._state, loaded)

    @classmethod
    def from_file(cls, path: Path | None) -> PolicyStore:
        """Start from a file, or the built-in default. A bad file at start-up is fatal."""
        if path is None:
            return cls(PolicyState(default_policy(), "built-in default"))
        text = path.read_text("utf-8")
        return cls(PolicyState(parse_policy_text(text), str(path), text))
