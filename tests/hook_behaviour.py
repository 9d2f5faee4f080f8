"""The preStop hook's behaviour, stated once and checked under every shell it may run in.

The hook (policies/prestop_hook.sh) runs with whatever ``/bin/sh`` the user's image has:
dash on Debian and Ubuntu images, busybox on Alpine and distroless debug images, bash on
some. It uses ``date`` (for its deadline) and ``sleep`` (to poll) whenever the shell can
run them: programs on ``PATH``, or the shell's own applets (busybox's shell runs its
``date`` and ``sleep`` applets even with an empty ``PATH``). Without them it degrades:

=============  ================  ============================================================
date           sleep             the hook
=============  ================  ============================================================
yes            fractions         deadline written; polls every 0.2 s; gives up at the deadline
yes            whole seconds     deadline written; polls every 1 s; gives up at the deadline
no             yes               no deadline; gives up after T seconds' worth of sleeps
yes or no      no                writes the request and returns at once (SIGTERM follows)
=============  ================  ============================================================

and in every case: no listening trainer of this host, or no writable directory, means it
returns at once, doing nothing; it always exits 0.

:func:`check_behaviour` asserts one behaviour through a :data:`HookRunner`, so the same
assertions run for a shell on this machine (tests/test_checkpoint_contract.py) and inside
a real container on a real node (tests/e2e/test_drill.py). The trainer's side is played
with files only (:class:`ScriptedTrainer`), so the hook's own timing is what is measured.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

REQUEST = ".spotguard-preempt"
ACK = ".spotguard-ack"
LISTENER = ".spotguard-trainer"

#: The hook's poll interval with a sleep that takes fractions.
POLL = 0.2


class Tools(Enum):
    """Which of ``date`` and ``sleep`` the shell can run (see the module's table)."""

    FULL = "date and sleep"
    WHOLE_SECONDS = "date and a sleep of whole seconds only"
    SLEEP_ONLY = "sleep without date"
    DATE_ONLY = "date without sleep"
    NEITHER = "neither date nor sleep"

    @property
    def has_date(self) -> bool:
        return self in (Tools.FULL, Tools.WHOLE_SECONDS, Tools.DATE_ONLY)

    @property
    def waits(self) -> bool:
        return self in (Tools.FULL, Tools.WHOLE_SECONDS, Tools.SLEEP_ONLY)

    @property
    def poll_seconds(self) -> float:
        return 1.0 if self is Tools.WHOLE_SECONDS else POLL


class Behaviour(Enum):
    ACK = "waits for the trainer's ack, then exits 0"
    TIMEOUT = "gives up at its timeout without an ack, exits 0"
    NO_LISTENER = "no trainer listening: returns at once, writes nothing"
    OTHER_HOST = "another pod's trainer: returns at once, writes nothing"
    NO_DIRECTORY = "no checkpoint directory: returns at once"


@dataclass(frozen=True)
class HookResult:
    status: int
    started: float  # time.time() when the hook was started
    ended: float  # time.time() when it had returned

    @property
    def seconds(self) -> float:
        return self.ended - self.started


#: Runs the injected hook with the pod's env plus these overrides; returns its result.
HookRunner = Callable[[Mapping[str, str]], HookResult]


@dataclass(frozen=True)
class Request:
    id: str
    deadline: str
    host: str
    written: float  # the file's mtime

    @classmethod
    def read(cls, path: Path) -> Request:
        text = path.read_text()
        assert text.endswith("\n"), f"a partial request: {text!r}"
        fields = dict(line.partition("=")[::2] for line in text.splitlines())
        assert set(fields) == {"id", "deadline", "host"}, text
        return cls(fields["id"], fields["deadline"], fields["host"], path.stat().st_mtime)


class ScriptedTrainer:
    """The trainer's side of the contract played with files: announce, see, acknowledge."""

    def __init__(self, directory: Path, host: str) -> None:
        self.directory = directory
        self.host = host
        self.request: Request | None = None
        self.acked_at: float | None = None
        self._thread: threading.Thread | None = None

    def announce(self, host: str | None = None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        text = f"{host or self.host}\npid=1\nversion=1\n"
        self._write(LISTENER, text)

    def answer_after(self, delay: float, timeout: float = 30.0) -> None:
        """In the background: wait for the request, then acknowledge it ``delay`` s later."""

        def run() -> None:
            end = time.monotonic() + timeout
            path = self.directory / REQUEST
            while time.monotonic() < end:
                # The shell creates the file, then printf fills it (under bash, one
                # write per line): wait for the last line.
                text = path.read_text() if path.exists() else ""
                if text.endswith("\n") and "\nhost=" in text:
                    self.request = Request.read(path)
                    time.sleep(delay)
                    self._write(ACK, f"{self.request.id}\n")
                    self.acked_at = time.time()
                    return
                time.sleep(0.005)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=35)

    def _write(self, name: str, text: str) -> None:
        temp = self.directory / f".tmp-scripted-{name.lstrip('.')}"
        temp.write_text(text)
        os.replace(temp, self.directory / name)


def check_request(request: Request, host: str, timeout: int, tools: Tools) -> None:
    """The request names this host, a unique id and, when ``date`` ran, the deadline."""
    match = re.fullmatch(rf"{re.escape(host)}\.(\d+)\.(\d+)", request.id)
    assert match is not None, f"request id {request.id!r}"
    assert request.host == host
    epoch = int(match[2])
    if tools.has_date:
        assert abs(epoch - request.written) < 2, (request, "id's epoch is not the time")
        assert request.deadline == str(epoch + timeout), request
    else:
        assert (epoch, request.deadline) == (0, ""), f"no date, yet {request}"


def check_behaviour(
    behaviour: Behaviour,
    run: HookRunner,
    directory: Path,
    host: str,
    tools: Tools,
    *,
    env: Mapping[str, str] | None = None,
    overhead: float = 0.3,
) -> HookResult:
    """Run the hook once for ``behaviour`` and assert what it must do.

    ``directory`` is the checkpoint directory as this process sees it (the hook may see it
    under another path, in a container); ``overhead`` is how long starting and ending the
    hook may take on top of its own work (a container exec costs more than a fork).
    """
    extra = dict(env or {})
    trainer = ScriptedTrainer(directory, host)
    for name in (REQUEST, ACK, LISTENER):
        (directory / name).unlink(missing_ok=True)
    if behaviour is Behaviour.NO_DIRECTORY:
        extra["SPOTGUARD_CHECKPOINT_DIR"] = "/nonexistent/spotguard"
        result = run(extra)
        assert (result.status, result.seconds < 0.5 + overhead) == (0, True), result
        return result
    directory.mkdir(parents=True, exist_ok=True)
    if behaviour is Behaviour.NO_LISTENER:
        result = run(extra)
        assert (result.status, result.seconds < 0.5 + overhead) == (0, True), result
        assert sorted(p.name for p in directory.iterdir()) == [], "it wrote files"
        return result
    if behaviour is Behaviour.OTHER_HOST:
        trainer.announce(host="another-pod-7f9c")
        result = run(extra)
        assert (result.status, result.seconds < 0.5 + overhead) == (0, True), result
        assert not (directory / REQUEST).exists(), "it asked another pod's trainer"
        return result

    trainer.announce()
    timeout = int(extra.setdefault("SPOTGUARD_PRESTOP_TIMEOUT_SECONDS", "2"))
    if behaviour is Behaviour.ACK:
        trainer.answer_after(0.5)
    result = run(extra)
    trainer.join()
    assert result.status == 0, result
    request = Request.read(directory / REQUEST)
    check_request(request, host, timeout, tools)
    if not tools.waits:
        # It cannot wait: the request is written, SIGTERM will tell the trainer the rest.
        assert result.seconds < 0.5 + overhead, f"{tools.value}: it waited {result}"
        return result
    if behaviour is Behaviour.ACK:
        assert trainer.acked_at is not None
        late = result.ended - trainer.acked_at
        assert late >= -0.05, f"it returned {-late:.2f} s before the ack"
        assert late <= tools.poll_seconds + overhead, f"returned {late:.2f} s after the ack"
        return result
    # TIMEOUT: no ack. With date it stops once `date +%s` reaches start + T (so after
    # T - 1 to T s); without date after T seconds of sleeps (plus the loop's own time).
    waited = result.ended - request.written
    low = timeout - 1 if tools.has_date else timeout
    high = timeout + (tools.poll_seconds if tools.has_date else 0.5) + overhead
    assert low - 0.05 <= waited <= high, f"{tools.value}: gave up after {waited:.2f} s"
    return result
