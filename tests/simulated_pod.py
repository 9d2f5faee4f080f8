"""A training pod simulated with real processes, for the checkpoint-contract tests: the
trainer (``examples/train_tiny.py``) with the container's env as the webhook injects it,
the injected preStop hook run as the kubelet runs it, SIGTERM and the grace period; and
readers of the trainer's event log."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from policies.decisions import PodContext
from policies.loader import default_policy
from policies.mutate import mutate_pod
from tests.hook_behaviour import HookResult, HookRunner
from tests.hook_shells import Shell
from testsupport.reviews import training_pod

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "examples" / "train_tiny.py"
TORCH_EXAMPLE = ROOT / "examples" / "train_pytorch.py"
HOST = "trainer-0"
TIMEOUT = 5  # SPOTGUARD_PRESTOP_TIMEOUT_SECONDS in these tests
RESERVE = 2  # SPOTGUARD_SIGTERM_RESERVE_SECONDS: what SIGTERM handling gets afterwards
STEP_SECONDS = "0.02"
#: Too many steps to finish within the budget at STEP_SECONDS a step: a trainer that
#: ignores the request cannot pass by simply finishing its training first.
TOTAL = 1000


def injected_container() -> dict[str, object]:
    """The trainer container as the webhook mutates it under the default policy."""
    decision = mutate_pod(training_pod(HOST), PodContext(namespace="ml"), default_policy())
    assert decision.mutated is not None
    container: dict[str, object] = decision.mutated["spec"]["containers"][0]
    return container


def injected_hook() -> list[str]:
    command = injected_container()["lifecycle"]["preStop"]["exec"]["command"]  # type: ignore[index]
    assert isinstance(command, list)
    return [str(part) for part in command]


def hook_argv(shell: Shell) -> list[str]:
    command = injected_hook()
    assert command[0] == "/bin/sh"
    return [*shell.argv, *command[1:]]


@dataclass
class Pod:
    """One pod's container env and checkpoint volume; runs trainers and the hook in it."""

    root: Path
    trainers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOSTNAME": HOST,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(ROOT / "trainer"), os.environ.get("PYTHONPATH")])
            ),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        for item in injected_container()["env"]:  # type: ignore[attr-defined]
            env[item["name"]] = item["value"]
        env["SPOTGUARD_CHECKPOINT_DIR"] = str(self.checkpoints)
        env["SPOTGUARD_PRESTOP_TIMEOUT_SECONDS"] = str(TIMEOUT)
        env["SPOTGUARD_SIGTERM_RESERVE_SECONDS"] = str(RESERVE)
        env.update(extra)
        return env

    def log(self, run: int) -> Path:
        return self.root / f"run{run}.log"

    def start(self, run: int, *args: str, script: Path = TINY) -> subprocess.Popen[bytes]:
        stderr = (self.root / f"run{run}.stderr").open("wb")
        with stderr:
            process = subprocess.Popen(
                [sys.executable, str(script), "--log", str(self.log(run)), *args],
                env=self.env(),
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        self.trainers.append(process)
        return process

    def events(self, run: int) -> list[str]:
        try:
            return self.log(run).read_text().splitlines()
        except FileNotFoundError:
            return []

    def stderr(self, run: int) -> str:
        return (self.root / f"run{run}.stderr").read_text(errors="replace")[-3000:]

    def wait_for(self, run: int, pattern: str, timeout: float = 15.0) -> str:
        compiled = re.compile(pattern)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in self.events(run):
                if compiled.fullmatch(line):
                    return line
            process = self.trainers[-1]
            if process.poll() is not None:
                break
            time.sleep(0.01)
        raise AssertionError(
            f"no {pattern!r} in run {run}: {self.events(run)[-5:]}\n{self.stderr(run)}"
        )

    def run_hook(self, argv: list[str], **extra_env: str) -> tuple[int, float]:
        """Run the preStop hook like the kubelet: the container's env; its status, duration."""
        started = time.monotonic()
        completed = subprocess.run(
            argv,
            env=self.env(**extra_env),
            cwd="/",
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=TIMEOUT + RESERVE + 5,
            check=False,
        )
        return completed.returncode, time.monotonic() - started

    def hook_runner(self, shell: Shell) -> HookRunner:
        """Runs the injected hook under ``shell`` with the container's env (plus overrides)."""

        def run(extra: Mapping[str, str]) -> HookResult:
            started = time.time()
            completed = subprocess.run(
                hook_argv(shell), env=self.env(**extra), cwd="/", stdin=subprocess.DEVNULL,
                capture_output=True, timeout=TIMEOUT + RESERVE + 5, check=False,
            )  # fmt: skip
            return HookResult(completed.returncode, started, time.time())

        return run

    def terminate(self, process: subprocess.Popen[bytes], budget: float) -> int | None:
        """SIGTERM, then the exit status if the process ends within ``budget`` seconds."""
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            return None

    def finish(self, process: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
        return process.wait(timeout=timeout)

    def close(self) -> None:
        for process in self.trainers:
            if process.poll() is None:
                process.kill()
            process.wait()


def steps(events: list[str]) -> list[int]:
    return [int(line.split()[1]) for line in events if line.startswith("step ")]


def saves(events: list[str]) -> list[tuple[int, str]]:
    """(step, reason) of each "save <step> <reason> ..." line."""
    fields = [line.split()[1:3] for line in events if line.startswith("save ")]
    return [(int(step), reason) for step, reason in fields]


def final_weights(events: list[str]) -> str:
    last = events[-1]
    assert last.startswith("exit "), events[-3:]
    return last.split(" ", 3)[3]
