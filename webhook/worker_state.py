"""What a worker leaves for the master to read if it dies: its connections and requests.

Each worker keeps three numbers in a small memory-mapped file named after its pid: open
connections, connections with a request under way, and whether it exited cleanly. They
are plain stores into shared memory, so keeping them costs nothing per request. When a
worker is reaped without the clean mark (killed, crashed, timed out), the master reads
what it was doing at the moment it died: those connections were dropped, and the
requests under way on them were lost (the API server does not retry them).
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from pathlib import Path

_FIELDS = 3  # open connections, busy connections, clean exit
_SIZE = 8 * _FIELDS


@dataclass(frozen=True)
class LastState:
    open_connections: int
    busy_connections: int
    clean: bool


class WorkerState:
    """The worker's side: create once after fork, then update on every change."""

    def __init__(self, directory: Path, pid: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / str(pid)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(descriptor, _SIZE)
            self._map = mmap.mmap(descriptor, _SIZE)
        finally:
            os.close(descriptor)
        self._values = memoryview(self._map).cast("q")

    def update(self, open_connections: int, busy_connections: int) -> None:
        self._values[0] = open_connections
        self._values[1] = busy_connections

    def mark_clean(self) -> None:
        self._values[2] = 1
        self._map.flush()


def read_and_forget(directory: Path, pid: int) -> LastState | None:
    """The master's side, once the worker is reaped: its last numbers (None if it never
    wrote any), and the file removed."""
    path = directory / str(pid)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    path.unlink(missing_ok=True)
    if len(data) < _SIZE:
        return None
    values = memoryview(data).cast("q")
    return LastState(values[0], values[1], bool(values[2]))
