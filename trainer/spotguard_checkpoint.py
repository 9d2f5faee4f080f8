"""The trainer's side of spotguard's checkpoint contract (docs/checkpoint-contract.md).

One stdlib-only file: copy it next to your training script. A training loop uses it so::

    ckpt = Checkpointer.from_env(every_steps=500, every_seconds=600)
    latest = ckpt.resume()                  # newest complete checkpoint, or None
    step = load(latest) if latest else 0    # the number of completed steps
    while step < total and not ckpt.should_stop():
        train_one_step(); step += 1
        if ckpt.should_checkpoint(step):    # periodic, or the preStop hook / SIGTERM asked
            ckpt.save(step, lambda f: torch.save(state, f))
    sys.exit(ckpt.finish())                 # 143 after a preemption, else 0

Checkpoints are files ``ckpt-<generation>-step-<step>.ckpt`` in ``SPOTGUARD_CHECKPOINT_DIR``.
Each is written to a temporary file in the same directory, flushed, fsynced, renamed into
place and the directory fsynced, so a checkpoint file that exists is complete and durable;
a save cut short leaves only a ``.tmp-`` file, which is ignored and removed later. The
newest generation is the latest checkpoint; the last ``keep`` are kept.

The SIGTERM handler only sets a flag; saving happens in the training loop, between steps.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import BinaryIO, Final

__all__ = [
    "ACK_FILE",
    "LISTENER_FILE",
    "PREEMPTED_EXIT_CODE",
    "REQUEST_FILE",
    "Checkpoint",
    "Checkpointer",
    "PreemptionRequest",
]

PROTOCOL_VERSION: Final = 1
#: Written by the preStop hook: ``id=...``, ``deadline=<epoch seconds or empty>``, ``host=...``.
REQUEST_FILE: Final = ".spotguard-preempt"
#: Written by the trainer once the checkpoint for a request is durable: the request's id.
ACK_FILE: Final = ".spotguard-ack"
#: Written by the trainer while it honours the contract: its host name on the first line.
LISTENER_FILE: Final = ".spotguard-trainer"
#: Exit status of a trainer stopped by a preemption (128 + SIGTERM), checkpoint saved.
PREEMPTED_EXIT_CODE: Final = 143

DEFAULT_PRESTOP_TIMEOUT_SECONDS: Final = 10.0
DEFAULT_SIGTERM_RESERVE_SECONDS: Final = 5.0
#: A temporary file of another pod untouched this long belongs to an abandoned save.
STALE_TEMP_SECONDS: Final = 600.0

_CHECKPOINT_NAME = re.compile(r"^ckpt-(\d+)-step-(\d+)\.ckpt$")
_TEMP_PREFIX = ".tmp-"
_LOG = logging.getLogger("spotguard.checkpoint")

Writer = Callable[[BinaryIO], object]


@dataclass(frozen=True)
class Checkpoint:
    """A complete, durable checkpoint: ``step`` completed steps, stored at ``path``."""

    step: int
    generation: int
    path: Path

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()

    def open(self) -> BinaryIO:
        return self.path.open("rb")


@dataclass(frozen=True)
class PreemptionRequest:
    """The preStop hook's request.

    ``deadline``: epoch seconds when the hook stops waiting (and SIGTERM follows). A hook
    without ``date`` writes none; it is then estimated as the file's mtime + the timeout.
    """

    id: str
    deadline: float
    host: str


class Checkpointer:
    """Periodic and preemption checkpoints in one directory, for one writing process."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        every_steps: int | None = None,
        every_seconds: float | None = None,
        keep: int = 3,
        resume_mode: str = "latest",
        prestop_timeout: float = DEFAULT_PRESTOP_TIMEOUT_SECONDS,
        sigterm_reserve: float = DEFAULT_SIGTERM_RESERVE_SECONDS,
        host: str | None = None,
        poll_interval: float = 0.1,
    ) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        if resume_mode not in ("latest", "none"):
            raise ValueError(f"resume mode must be 'latest' or 'none', not {resume_mode!r}")
        self.directory = Path(directory)
        self.every_steps = every_steps or None
        self.every_seconds = every_seconds or None
        self.keep = keep
        self.resume_mode = resume_mode
        self.prestop_timeout = prestop_timeout
        self.sigterm_reserve = sigterm_reserve
        self.host = host if host is not None else _own_host()
        self.poll_interval = poll_interval
        self._pid = os.getpid()
        self._tag = re.sub(r"[^A-Za-z0-9-]", "_", self.host) or "host"
        self._latest_step: int | None = None
        self._base_step = 0
        self._last_save = time.monotonic()
        self._next_poll = 0.0
        self._ignored_ids: set[str] = set()
        self._request: PreemptionRequest | None = None
        self._sigterm_at: float | None = None
        self._preemption_saved = False
        self._acked = False
        self._listening = False

    @classmethod
    def from_env(
        cls,
        *,
        default_directory: str | None = None,
        listen: bool = True,
        every_steps: int | None = None,
        every_seconds: float | None = None,
        keep: int = 3,
    ) -> Checkpointer:
        """Configured by the env spotguard injects; with ``listen``, also :meth:`listen`."""
        directory = os.environ.get("SPOTGUARD_CHECKPOINT_DIR") or default_directory
        if not directory:
            raise RuntimeError(
                "SPOTGUARD_CHECKPOINT_DIR is not set: is the pod labelled "
                'spotguard.dev/fault-tolerant: "true"? (or pass default_directory)'
            )
        checkpointer = cls(
            directory,
            every_steps=every_steps,
            every_seconds=every_seconds,
            keep=keep,
            resume_mode=(os.environ.get("SPOTGUARD_RESUME") or "latest").strip().lower(),
            prestop_timeout=_env_seconds(
                "SPOTGUARD_PRESTOP_TIMEOUT_SECONDS", DEFAULT_PRESTOP_TIMEOUT_SECONDS
            ),
            sigterm_reserve=_env_seconds(
                "SPOTGUARD_SIGTERM_RESERVE_SECONDS", DEFAULT_SIGTERM_RESERVE_SECONDS
            ),
        )
        if listen:
            checkpointer.listen()
        return checkpointer

    # -- startup -------------------------------------------------------------------------

    def listen(self, *, handle_sigterm: bool = True, announce: bool = True) -> None:
        """Start honouring the contract: SIGTERM flag, stale-file cleanup, listener file.

        With ``announce=False`` no listener file is written: the preStop hook then returns
        at once and the trainer saves on SIGTERM alone, with the whole grace period.
        Call it from the main thread (Python delivers signals there only).
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        if handle_sigterm:
            signal.signal(signal.SIGTERM, self._on_sigterm)
        self._forget_stale_request()
        self._remove_abandoned_temp_files()
        if announce:
            content = f"{self.host}\npid={self._pid}\nversion={PROTOCOL_VERSION}\n"
            self._write_atomically(LISTENER_FILE, content.encode())
            self._listening = True

    def resume(self) -> Checkpoint | None:
        """The checkpoint to resume from (``SPOTGUARD_RESUME``: latest or none), or None."""
        self._remove_abandoned_temp_files()
        latest = self.latest() if self.resume_mode == "latest" else None
        if latest is not None:
            self._latest_step = self._base_step = latest.step
            _LOG.info("resuming from step %d (%s)", latest.step, latest.path.name)
        else:
            _LOG.info("no checkpoint to resume from: fresh start")
        self._last_save = time.monotonic()
        return latest

    def checkpoints(self) -> list[Checkpoint]:
        """Every complete checkpoint, oldest generation first."""
        found = []
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        for name in names:
            match = _CHECKPOINT_NAME.match(name)
            if match:
                generation, step = int(match[1]), int(match[2])
                found.append(Checkpoint(step, generation, self.directory / name))
        return sorted(found, key=lambda c: c.generation)

    def latest(self) -> Checkpoint | None:
        found = self.checkpoints()
        return found[-1] if found else None

    # -- the training loop ---------------------------------------------------------------

    @property
    def latest_step(self) -> int | None:
        """The step of the newest checkpoint this process resumed from or saved."""
        return self._latest_step

    @property
    def sigterm_received(self) -> bool:
        return self._sigterm_at is not None

    @property
    def request(self) -> PreemptionRequest | None:
        """The preStop hook's request for this pod, once seen."""
        return self._request

    @property
    def preempted(self) -> bool:
        """The pod is terminating: the hook asked for a checkpoint or SIGTERM arrived."""
        return self._request is not None or self._sigterm_at is not None

    def poll(self, *, force: bool = False) -> bool:
        """Look for the hook's request (at most every ``poll_interval``); is it preempted?"""
        now = time.monotonic()
        if self._request is None and (force or now >= self._next_poll):
            self._next_poll = now + self.poll_interval
            request = self._read_request()
            if request is not None and self._is_ours(request):
                self._request = request
                _LOG.info("preemption requested by the preStop hook (id %s)", request.id)
        return self.preempted

    def should_stop(self) -> bool:
        """Stop training: the pod is being preempted and its checkpoint is durable.

        It does not poll: a request or SIGTERM that arrives after ``should_checkpoint``
        returned False makes the next ``should_checkpoint`` True, never a stop without a save.
        """
        return self.preempted and self._preemption_saved

    def should_checkpoint(self, step: int) -> bool:
        """Save now? ``step`` is the number of completed steps.

        True once for a preemption (unless the newest checkpoint already holds ``step``:
        then that checkpoint is acknowledged and no save is needed), and periodically
        every ``every_steps`` steps or ``every_seconds`` seconds otherwise.
        """
        if self.poll():
            if self._preemption_saved:
                return False
            if self._latest_step == step:
                self._preemption_covered()
                return False
            return True
        if self.every_steps and step - self._base_step >= self.every_steps:
            return True
        return bool(self.every_seconds and time.monotonic() - self._last_save >= self.every_seconds)

    def save(self, step: int, data: bytes | bytearray | memoryview | Writer) -> Checkpoint:
        """Write a checkpoint durably; acknowledge the hook's request if there is one.

        ``data`` is the checkpoint's bytes, or a function writing them to a binary file
        (``lambda f: torch.save(state, f)``). The file is complete once this returns.
        """
        if step < 0:
            raise ValueError("step must be >= 0")
        generation = max((c.generation for c in self.checkpoints()), default=0) + 1
        final = self.directory / f"ckpt-{generation:06d}-step-{step:09d}.ckpt"
        temp = self.directory / f"{_TEMP_PREFIX}{final.name}.{self._tag}.{self._pid}"
        started = time.monotonic()
        try:
            with temp.open("wb") as file:
                if callable(data):
                    data(file)
                else:
                    file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, final)
        except BaseException:
            _unlink(temp)
            raise
        _fsync_directory(self.directory)
        self._latest_step = self._base_step = step
        self._last_save = time.monotonic()
        _LOG.info(
            "checkpoint at step %d saved in %.3f s (%s)", step, self._last_save - started, final
        )
        self._prune()
        if self.poll(force=True):
            self._preemption_covered()
        return Checkpoint(step, generation, final)

    def seconds_left(self) -> float | None:
        """Seconds until the hook stops waiting (or SIGKILL after SIGTERM); None: no preemption."""
        if self._request is not None:
            return self._request.deadline - time.time()
        if self._sigterm_at is not None:
            return self._sigterm_at + self.sigterm_reserve - time.time()
        return None

    def finish(self) -> int:
        """Leave the contract; the process's exit status: 143 after a preemption, else 0.

        After acknowledging the hook's request it waits (bounded by the grace budget) for
        the SIGTERM that follows the hook, so the hook is not cut off by the container
        exiting under it; that SIGTERM then needs no further save.
        """
        try:
            if not self.preempted:
                return 0
            if self._acked and self._sigterm_at is None:
                left = self.seconds_left()
                end = time.monotonic() + max(0.0, left or 0.0) + self.sigterm_reserve
                while self._sigterm_at is None and time.monotonic() < end:
                    time.sleep(0.02)
            return PREEMPTED_EXIT_CODE
        finally:
            if self._listening:
                self._remove_listener()

    # -- internals -----------------------------------------------------------------------

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        # Only a flag: the save runs in the training loop, never inside the handler.
        if self._sigterm_at is None:
            self._sigterm_at = time.time()

    def _preemption_covered(self) -> None:
        """The newest durable checkpoint holds the current step: acknowledge once."""
        self._preemption_saved = True
        self.poll(force=True)
        if self._request is not None and not self._acked:
            self._write_atomically(ACK_FILE, f"{self._request.id}\n".encode())
            self._acked = True
            _LOG.info("acknowledged preemption request %s", self._request.id)

    def _read_request(self) -> PreemptionRequest | None:
        path = self.directory / REQUEST_FILE
        text = ""
        # The shell creates the file, then printf fills it: in one write(2) under dash and
        # busybox, one write per line under bash. Complete once the last line (host=) is in.
        for _ in range(5):
            try:
                text = path.read_text("utf-8", errors="replace")
                written = path.stat().st_mtime
            except OSError:
                return None
            if text.endswith("\n") and "\nhost=" in text:
                break
            time.sleep(0.01)
        fields: dict[str, str] = {}
        for line in text.splitlines():
            key, _, value = line.partition("=")
            fields[key.strip()] = value.strip()
        deadline = fields.get("deadline", "")
        return PreemptionRequest(
            id=fields.get("id", ""),
            deadline=float(deadline) if deadline.isdigit() else written + self.prestop_timeout,
            host=fields.get("host", ""),
        )

    def _is_ours(self, request: PreemptionRequest) -> bool:
        if request.id in self._ignored_ids:
            return False
        return not request.host or request.host == self.host

    def _forget_stale_request(self) -> None:
        """Ignore a request of an earlier container or another pod; drop it if it is done.

        Done: acknowledged (by an earlier container of this pod), or expired (its pod's
        grace period is over). A live request of another pod is only ignored.
        """
        request = self._read_request()
        if request is None:
            return
        ours = self._is_ours(request)
        acked = _first_line(self.directory / ACK_FILE) == request.id
        expired = request.deadline + self.sigterm_reserve <= time.time()
        if acked or expired or not ours:
            self._ignored_ids.add(request.id)
        if (acked and ours) or expired:
            _unlink(self.directory / REQUEST_FILE)
            _unlink(self.directory / ACK_FILE)

    def _remove_abandoned_temp_files(self) -> None:
        """Remove temporary files of saves that died: ours, or stale ones of other pods."""
        try:
            names = [n for n in os.listdir(self.directory) if n.startswith(_TEMP_PREFIX)]
        except FileNotFoundError:
            return
        now = time.time()
        for name in names:
            path = self.directory / name
            tag, _, pid_text = name.rpartition(".")
            tag = tag.rpartition(".")[2]
            pid = int(pid_text) if pid_text.isdigit() else -1
            mine = tag == self._tag and (pid == self._pid or not _alive(pid))
            try:
                old = now - path.stat().st_mtime > STALE_TEMP_SECONDS
            except OSError:
                continue
            if mine or old:
                _LOG.info("removing %s, left by a save that did not finish", name)
                _unlink(path)

    def _prune(self) -> None:
        for old in self.checkpoints()[: -self.keep]:
            _unlink(old.path)

    def _remove_listener(self) -> None:
        path = self.directory / LISTENER_FILE
        try:
            lines = path.read_text("utf-8").splitlines()
        except OSError:
            return
        if lines[1:2] == [f"pid={self._pid}"] and lines[:1] == [self.host]:
            _unlink(path)
        self._listening = False

    def _write_atomically(self, name: str, content: bytes) -> None:
        temp = self.directory / f"{_TEMP_PREFIX}{name.lstrip('.')}.{self._tag}.{self._pid}"
        try:
            with temp.open("wb") as file:
                file.write(content)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, self.directory / name)
        except BaseException:
            _unlink(temp)
            raise
        _fsync_directory(self.directory)


def _own_host() -> str:
    """The name the hook sees as $HOSTNAME (the pod's name in Kubernetes)."""
    return os.environ.get("HOSTNAME") or socket.gethostname()


def _env_seconds(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if value >= 0 else default


def _first_line(path: Path) -> str | None:
    try:
        with path.open("r", encoding="utf-8", errors="replace") as file:
            return file.readline().strip()
    except OSError:
        return None


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (some filesystems cannot fsync a directory)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)
