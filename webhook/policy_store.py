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
    """A consistent snapshot: the policy in force (None until one loads) and its status.

    ``registration`` is what the live webhook registration fails to send that the policy
    in force needs (empty: it covers the policy; None: not checked, e.g. no cluster
    access). A policy that is not covered still serves: a webhook that stopped serving
    would be skipped for every review instead of some.
    """

    policy: Policy | None
    source: str
    text: str = ""
    error: LoadError | None = None
    registration: tuple[str, ...] | None = None

    @property
    def stale(self) -> bool:
        return self.error is not None


class PolicyView(Protocol):
    """What the web app needs: a snapshot per request."""

    def snapshot(self) -> PolicyState: ...


Listener = Callable[[PolicyState, bool], None]
#: What stops a parsed policy from going into force (empty: nothing; None: cannot tell
#: yet): the coverage check of the live webhook registration.
Gate = Callable[[Policy], list[str] | None]


class PolicyStore:
    """Validates revisions and holds the current state; the one writer of policy state."""

    def __init__(self, state: PolicyState) -> None:
        self._state = state
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self._gate: Gate | None = None
        self._judging = threading.RLock()  # one revision or registration change at a time
        #: A revision the gate refused, (text, source): tried again when the gate changes.
        self._pending: tuple[str, str] | None = None

    def snapshot(self) -> PolicyState:
        return self._state

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(state, loaded)`` after every revision, loaded or refused."""
        self._listeners.append(listener)

    def set_gate(self, gate: Gate | None) -> None:
        """Check every revision with ``gate`` before it goes into force (see load_text)."""
        self._gate = gate

    def gate_changed(self) -> None:
        """The gate's answer may have changed (a new registration): judge the policy in
        force again, then retry a revision it refused."""
        with self._judging:
            with self._lock:
                previous = self._state
                self._state = dataclasses.replace(
                    previous, registration=self._check(previous.policy)
                )
            if self._state.registration != previous.registration:
                self._report_registration(previous)
                self._notify(True)
            pending, self._pending = self._pending, None
            if pending is not None:
                self._load(*pending)

    def _check(self, policy: Policy | None) -> tuple[str, ...] | None:
        if self._gate is None or policy is None:
            return None
        problems = self._gate(policy)
        return None if problems is None else tuple(problems)

    def load_text(self, text: str, source: str) -> bool:
        """Try a new revision; on success swap it in, else keep the old one. Returns success.

        A revision the gate objects to is refused like an invalid one, but only while the
        policy in force passes the gate: refusing it then keeps a policy the registration
        covers. Without such a policy, the new revision goes into force anyway (its
        problems reported), since serving it beats serving nothing or a policy no more
        covered than it.
        """
        with self._judging:
            return self._load(text, source)

    def _load(self, text: str, source: str) -> bool:
        try:
            policy = parse_policy_text(text)
        except PolicyError as error:
            self.refuse(error.problems, source)
            return False
        registration = self._check(policy)
        if registration:
            current = self._state.policy
            if (
                current is not None
                and current.revision != policy.revision
                and not self._check(current)
            ):
                self._pending = (text, source)
                fix = "apply its registration: spotguard policy webhooks --policy FILE"
                self.refuse([f"webhook registration: {p}" for p in registration] + [fix], source)
                return False
        self._pending = None
        with self._lock:
            before = self._state
            self._state = PolicyState(policy, source, text, registration=registration)
        previous = before.policy
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
        self._report_registration(before)
        self._notify(True)
        return True

    def _report_registration(self, before: PolicyState) -> None:
        """Log the registration's coverage of the policy in force when it changed."""
        problems = self._state.registration
        same_policy = (before.policy and before.policy.revision) == (
            self._state.policy and self._state.policy.revision
        )
        if same_policy and problems == before.registration:
            return
        if problems is not None and not problems:
            log.info(
                "the webhook registration covers policy %s",
                self._state.policy.revision if self._state.policy else "none",
                extra={"fields": {"event": "registration_covers"}},
            )
        if problems:
            log.error(
                "the webhook registration does not send every review policy %s needs "
                "(it still serves what it is sent): %s",
                self._state.policy.revision if self._state.policy else "none",
                "; ".join(problems),
                extra={"fields": {"event": "registration_uncovered", "problems": list(problems)}},
            )

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
