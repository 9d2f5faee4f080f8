"""Container logs of the real nodes, copied while they exist, with the runtime's timestamps.

A kubelet keeps each container's output in ``<podLogsDir>/<ns>_<pod>_<uid>/<container>/
<restart>.log`` (CRI format: ``<RFC 3339 time> <stream> <P|F> <text>``) and deletes the
directory with the pod. An evicted pod is deleted as soon as it has stopped, so
:class:`PodLogFollower` reads the files as they grow, every 50 ms, and keeps every line.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path


@dataclass(frozen=True)
class LogLine:
    time: float  # epoch seconds, as containerd stamped the line
    namespace: str
    pod: str
    container: str
    stream: str  # stdout or stderr
    text: str


def parse_cri_time(text: str) -> float:
    """``2026-12-01T15:21:41.619513100Z`` (nanoseconds) to epoch seconds."""
    base, _, fraction = text.rstrip("Z").partition(".")
    seconds = datetime.fromisoformat(base + "+00:00").timestamp()
    return seconds + (float(f"0.{fraction}") if fraction else 0.0)


class PodLogFollower:
    """Follows every container log under some pod-log directories, in a thread."""

    def __init__(self, directories: list[Path], interval: float = 0.05) -> None:
        self.directories = directories
        self.interval = interval
        self._offsets: dict[Path, int] = {}
        self._partial: dict[Path, str] = {}
        self._lines: list[LogLine] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pod-logs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.poll()

    def lines(self, namespace: str | None = None, pod: str | None = None) -> list[LogLine]:
        self.poll()
        with self._lock:
            return [
                line
                for line in self._lines
                if (namespace is None or line.namespace == namespace)
                and (pod is None or line.pod == pod)
            ]

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def poll(self) -> None:
        with self._lock:
            for directory in self.directories:
                for path in sorted(directory.glob("*/*/*.log")):
                    self._read(path)

    def _read(self, path: Path) -> None:
        try:
            with path.open("rb") as file:
                file.seek(self._offsets.get(path, 0))
                data = file.read()
        except OSError:
            return
        self._offsets[path] = self._offsets.get(path, 0) + len(data)
        text = self._partial.pop(path, "") + data.decode(errors="replace")
        *complete, rest = text.split("\n")
        if rest:
            self._partial[path] = rest
        namespace, pod, _uid = path.parent.parent.name.split("_", 2)
        for raw in complete:
            fields = raw.split(" ", 3)
            if len(fields) < 4:
                continue
            stamp, stream, _tag, content = fields
            self._lines.append(
                LogLine(parse_cri_time(stamp), namespace, pod, path.parent.name, stream, content)
            )
