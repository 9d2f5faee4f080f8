"""What happened in one preemption of the drill, read from the logs of the parts that did it.

Sources, all with this machine's clock:

- the kubelet's JSON log (``--v=3``): when it began stopping the pod (the grace period
  starts), ran the preStop hook, saw it return, sent SIGTERM ("Killing container with a
  grace period") and saw the container gone;
- the trainer's container log (CRI timestamps, devtools/podlogs.py): the helper's lines
  (request seen, checkpoint saved, request acknowledged) and train_tiny's events (steps,
  saves, resume, exit);
- the checkpoint volume: the hook's request file (written when the hook starts asking);
- the pods as the API showed them (devtools/drill.py polls them): created, scheduled,
  exit status.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from devtools.podlogs import LogLine

#: kubelet messages (JSON field "msg") that mark the steps of stopping a container.
KUBELET_STOP_STARTS = "Killing container with a grace period override"
KUBELET_HOOK_STARTS = "Running preStop hook"
KUBELET_HOOK_DONE = "PreStop hook completed"
KUBELET_HOOK_CUT = "PreStop hook not completed in grace period"
KUBELET_SIGTERM = "Killing container with a grace period"
KUBELET_EXITED = "Container exited normally"
_KUBELET_MESSAGES = {
    KUBELET_STOP_STARTS,
    KUBELET_HOOK_STARTS,
    KUBELET_HOOK_DONE,
    KUBELET_HOOK_CUT,
    KUBELET_SIGTERM,
    KUBELET_EXITED,
}


def kubelet_events(log: Path, pod: str, since: float) -> dict[str, float]:
    """First time (epoch s) after ``since`` of each stop message about ``pod``."""
    found: dict[str, float] = {}
    for raw in log.read_text(errors="replace").splitlines():
        if not raw.startswith("{") or pod not in raw:
            continue
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        message = entry.get("msg")
        when = float(entry.get("ts", 0)) / 1000.0  # the JSON format logs milliseconds
        if (
            message in _KUBELET_MESSAGES
            and (entry.get("pod") or {}).get("name") == pod
            and when >= since
        ):
            found.setdefault(message, when)
    return found


@dataclass(frozen=True)
class TrainerLog:
    """One pod's trainer output: events on stdout, the helper's messages on stderr."""

    lines: tuple[LogLine, ...]

    @classmethod
    def of(cls, lines: Iterable[LogLine]) -> TrainerLog:
        return cls(tuple(sorted(lines, key=lambda line: line.time)))

    def first(self, pattern: str, since: float = 0.0) -> LogLine | None:
        compiled = re.compile(pattern)
        for line in self.lines:
            if line.time >= since and compiled.search(line.text):
                return line
        return None

    def all(self, pattern: str, since: float = 0.0) -> list[LogLine]:
        compiled = re.compile(pattern)
        return [ln for ln in self.lines if ln.time >= since and compiled.search(ln.text)]

    def steps(self) -> list[int]:
        return [int(m[1]) for ln in self.lines if (m := re.fullmatch(r"step (\d+)", ln.text))]

    def last_step(self) -> int | None:
        done = self.steps()
        return done[-1] if done else None

    def resumed_at(self) -> int | None:
        """The step this run started from: ``resume N``, or 0 for ``fresh 0``."""
        line = self.first(r"^(resume|fresh) \d+$")
        return int(line.text.split()[1]) if line else None

    def saves(self, reason: str, since: float = 0.0) -> list[int]:
        return [int(ln.text.split()[1]) for ln in self.all(rf"^save \d+ {reason}$", since)]

    def exit_line(self) -> LogLine | None:
        return self.first(r"^exit \d+ ")


@dataclass
class Preemption:
    """One notice and what followed, as epoch times (None: it did not happen)."""

    kind: str  # "eviction" or "taint"
    node: str
    pod: str
    notice: float
    grace: int
    budget: int  # the hook's: min(grace, usable notice) - SIGTERM reserve
    events: dict[str, float] = field(default_factory=dict)
    step_saved: int | None = None
    last_step: int | None = None
    exit_code: int | None = None
    new_pod: str = ""
    new_node: str = ""
    resumed_step: int | None = None
    final_saves: list[int] = field(default_factory=list)
    periodic_before: list[int] = field(default_factory=list)

    def at(self, name: str) -> float | None:
        return self.events.get(name)

    def since_notice(self, name: str) -> float | None:
        when = self.events.get(name)
        return None if when is None else when - self.notice

    def between(self, first: str, second: str) -> float | None:
        a, b = self.events.get(first), self.events.get(second)
        return None if a is None or b is None else b - a


#: (event name, how the timeline says it), in the order they should happen.
TIMELINE = (
    ("notice", "notice: {notice_text}"),
    ("stop", "kubelet on {node} starts stopping {pod}: grace period {grace} s begins"),
    ("hook", "preStop hook starts in the container"),
    ("request", "hook's checkpoint request written to the volume"),
    ("seen", "trainer sees the request"),
    ("hang", "trainer starts its final save, which hangs"),
    ("durable", "checkpoint of step {step_saved} durable (fsynced, renamed)"),
    ("ack", "trainer acknowledges the request"),
    ("hook_done", "preStop hook returns"),
    ("hook_cut", "preStop hook still running at the end of the grace period"),
    ("sigterm", "kubelet sends SIGTERM"),
    ("trainer_exit", "trainer exits {exit_code} after step {last_step}"),
    ("exited", "container gone (exit status {exit_code})"),
    ("created", "Job controller creates {new_pod}"),
    ("scheduled", "{new_pod} scheduled on {new_node}"),
    ("resumed", "{new_pod} resumes from the checkpoint of step {resumed_step}"),
)


def format_timeline(preemption: Preemption, notice_text: str) -> list[str]:
    """The events that happened, in time order, as seconds since the notice."""
    values = {**vars(preemption), "notice_text": notice_text}
    rows = []
    for name, text in TIMELINE:
        when = preemption.events.get(name)
        if when is not None:
            rows.append((when, f"  {when - preemption.notice:+8.3f} s  {text.format(**values)}"))
    return [row for _, row in sorted(rows)]
