"""One local process of the harness: started with its log file, checked, stopped.

The real-node parts (containerd, kubelet) run as processes like the control plane's
components; this is the lifecycle they share: output to ``<logs>/<name>.log`` (first line
the command), a session of its own so that a terminal's Ctrl-C reaches the harness first,
SIGTERM then SIGKILL on stop.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


class ProcessError(RuntimeError):
    """A process exited when it should be running; the message has its log's tail."""


@dataclass
class Process:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(
        cls,
        name: str,
        argv: Sequence[str],
        logs_dir: Path,
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Process:
        logs_dir.mkdir(parents=True, exist_ok=True)
        log = logs_dir / f"{name}.log"
        with log.open("ab") as out:
            out.write(f"$ {' '.join(argv)}\n".encode())
            out.flush()
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                start_new_session=True,
            )
        return cls(name, process, log)

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def check(self) -> None:
        """Raise :class:`ProcessError` if the process has exited."""
        code = self.process.poll()
        if code is not None:
            raise ProcessError(
                f"{self.name} exited with code {code}; see {self.log}:\n{self.tail()}"
            )

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def env_without(*names: str) -> dict[str, str]:
    """``os.environ`` less ``names`` (e.g. proxies a local component must not use)."""
    return {k: v for k, v in os.environ.items() if k not in names}
