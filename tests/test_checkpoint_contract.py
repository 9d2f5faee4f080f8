"""The checkpoint contract end to end: a real trainer process and the injected preStop hook.

The hook is the exact command (and env) the webhook injects into a training pod, run as
the kubelet runs it: a process with the container's env, SIGTERM to the trainer only once
the hook has returned, SIGKILL when the grace period is over. The trainer is
``examples/train_tiny.py`` (plain Python); it logs every completed step, so a lost step
shows as a gap between the first run's log and the resumed run's.

The hook runs under every shell users' images have (dash, busybox, bash, and whatever
``/bin/sh`` is here): `make host-packages` installs them, so in CI no shell case skips.
What the hook does under each shell and each set of tools is stated once, in
tests/hook_behaviour.py.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devtools.reviews import training_pod
from policies.decisions import PodContext
from policies.loader import default_policy
from policies.mutate import mutate_pod
from tests.hook_behaviour import Behaviour, HookResult, HookRunner, Tools, check_behaviour
from tests.hook_shells import NAMED_SHELLS, SHELLS, TOOLBOX_TOOLS, Shell, toolbox

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


@pytest.fixture
def pod(tmp_path: Path) -> Iterator[Pod]:
    pod = Pod(tmp_path)
    try:
        yield pod
    finally:
        pod.close()


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


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The weights after TOTAL uninterrupted steps."""
    root = tmp_path_factory.mktemp("reference")
    pod = Pod(root)
    try:
        process = pod.start(1, "--steps", str(TOTAL))
        assert pod.finish(process) == 0, pod.stderr(1)
    finally:
        pod.close()
    return final_weights(pod.events(1))


def assert_one_save_for_the_preemption(events: list[str], every_steps: int) -> None:
    """The newest checkpoint holds the last completed step, saved at most once for it.

    No save is needed when the request came right after a periodic save of that step.
    """
    done, saved = steps(events), saves(events)
    assert saved, events[-6:]
    assert saved[-1][0] == done[-1], events[-6:]
    preemption_saves = [s for s in saved if s[1] == "preempted"]
    if preemption_saves:
        assert preemption_saves == [saved[-1]], events[-6:]
    else:
        assert saved[-1] == (done[-1], "periodic") and done[-1] % every_steps == 0


def assert_contiguous(numbers: list[int], first: int, last: int) -> None:
    assert numbers == list(range(first, last + 1)), f"expected {first}..{last}: {numbers}"


@pytest.mark.parametrize("shell", SHELLS)
def test_prestop_then_sigterm_loses_no_step(pod: Pod, shell: Shell, reference: str) -> None:
    trainer = pod.start(
        1, "--steps", str(TOTAL), "--step-seconds", STEP_SECONDS, "--every-steps", "10"
    )
    pod.wait_for(1, "step 15")
    asked_at = steps(pod.events(1))[-1]

    status, took = pod.run_hook(hook_argv(shell))
    assert status == 0
    assert took < 1.0, f"the hook waited {took:.2f}s for a trainer that polls every step"
    request = (pod.checkpoints / ".spotguard-preempt").read_text()
    request_id = re.search(r"^id=(.+)$", request, re.M)
    assert request_id is not None, request
    assert (pod.checkpoints / ".spotguard-ack").read_text().strip() == request_id[1]

    status_after_sigterm = pod.terminate(trainer, RESERVE)
    assert status_after_sigterm == 143, pod.stderr(1)

    first = pod.events(1)
    done = steps(first)
    assert first[0] == "fresh 0"
    assert_contiguous(done, 1, done[-1])
    assert_one_save_for_the_preemption(first, every_steps=10)
    assert done[-1] - asked_at < 1.0 / float(STEP_SECONDS), "it trained on after the request"
    assert first[-1].startswith(f"exit 143 step={done[-1]} ")

    second = pod.start(2, "--steps", str(TOTAL), "--every-steps", "10")
    assert pod.finish(second) == 0, pod.stderr(2)
    resumed = pod.events(2)
    assert resumed[0] == f"resume {done[-1]}"
    assert_contiguous(steps(resumed), done[-1] + 1, TOTAL)
    assert final_weights(resumed) == reference


def test_a_trainer_that_ignores_the_hook_saves_on_sigterm(pod: Pod, reference: str) -> None:
    """train_tiny --ignore-hook: no listener, so the hook returns at once; SIGTERM saves."""
    trainer = pod.start(
        1, "--steps", str(TOTAL), "--step-seconds", STEP_SECONDS, "--every-steps", "50",
        "--ignore-hook",
    )  # fmt: skip
    pod.wait_for(1, "step 8")
    assert not (pod.checkpoints / ".spotguard-trainer").exists()
    status, took = pod.run_hook(injected_hook())
    assert (status, took < 0.5) == (0, True)
    assert not (pod.checkpoints / ".spotguard-preempt").exists()
    assert pod.terminate(trainer, RESERVE) == 143, pod.stderr(1)
    first = pod.events(1)
    assert saves(first) == [(steps(first)[-1], "preempted")]
    second = pod.start(2, "--steps", str(TOTAL))
    assert pod.finish(second) == 0, pod.stderr(2)
    assert pod.events(2)[0] == f"resume {steps(first)[-1]}"
    assert final_weights(pod.events(2)) == reference


def test_a_trainer_hung_in_its_final_save_resumes_from_the_periodic_one(pod: Pod) -> None:
    """train_tiny --hang-in-final-save: no ack, SIGTERM does not end it, SIGKILL does."""
    trainer = pod.start(
        1, "--steps", str(TOTAL), "--step-seconds", STEP_SECONDS, "--every-steps", "5",
        "--hang-in-final-save",
    )  # fmt: skip
    pod.wait_for(1, "step 12")
    status, took = pod.run_hook(injected_hook(), SPOTGUARD_PRESTOP_TIMEOUT_SECONDS="2")
    assert status == 0
    assert 1 <= took <= 2.5, f"hook took {took:.2f}s"
    pod.wait_for(1, r"hang-in-save \d+")
    assert not (pod.checkpoints / ".spotguard-ack").exists()
    assert pod.terminate(trainer, RESERVE) is None  # still stuck at the end of the grace
    trainer.kill()
    trainer.wait()
    first = pod.events(1)
    periodic = [step for step, reason in saves(first) if reason == "periodic"]
    second = pod.start(2, "--steps", "30")
    assert pod.finish(second) == 0, pod.stderr(2)
    resumed = int(pod.events(2)[0].split()[1])
    assert resumed == periodic[-1]
    assert 0 <= steps(first)[-1] - resumed <= 5


def test_hung_trainer_does_not_hold_the_hook(pod: Pod) -> None:
    trainer = pod.start(
        1,
        "--steps",
        str(TOTAL),
        "--step-seconds",
        STEP_SECONDS,
        "--every-steps",
        "5",
        "--hang-after",
        "12",
    )
    pod.wait_for(1, "hang 12")

    timeout = 2  # grace period: timeout + RESERVE, counted from the hook's start
    grace_ends = time.monotonic() + timeout + RESERVE
    status, took = pod.run_hook(injected_hook(), SPOTGUARD_PRESTOP_TIMEOUT_SECONDS=str(timeout))
    assert status == 0
    # It gives up when `date +%s` reaches start + timeout: after timeout - 1 to timeout s.
    assert timeout - 1 <= took <= timeout + 0.5, f"hook took {took:.2f}s, timeout {timeout}s"
    assert not (pod.checkpoints / ".spotguard-ack").exists()

    stuck = pod.terminate(trainer, grace_ends - time.monotonic())
    assert stuck is None  # still running at the end of the grace period: SIGKILL
    trainer.kill()
    trainer.wait()

    periodic = saves(pod.events(1))
    assert periodic == [(5, "periodic"), (10, "periodic")]
    second = pod.start(2, "--steps", "20")  # the expired request is ignored, not honoured
    assert pod.finish(second) == 0, pod.stderr(2)
    assert pod.events(2)[0] == "resume 10"
    assert not (pod.checkpoints / ".spotguard-preempt").exists()


def test_save_cut_short_keeps_the_previous_checkpoint(pod: Pod, reference: str) -> None:
    trainer = pod.start(
        1,
        "--steps",
        str(TOTAL),
        "--every-steps",
        "5",
        "--slow-save-at",
        "10",
        "--slow-save-seconds",
        "30",
    )
    pod.wait_for(1, "slow-save 10")
    trainer.kill()  # kill -9 mid-save
    trainer.wait()

    names = sorted(p.name for p in pod.checkpoints.iterdir())
    complete = [n for n in names if n.startswith("ckpt-")]
    temporary = [n for n in names if n.startswith(".tmp-ckpt-")]
    assert complete == ["ckpt-000001-step-000000005.ckpt"], names
    assert len(temporary) == 1, names

    second = pod.start(2, "--steps", str(TOTAL), "--every-steps", "5")
    assert pod.finish(second) == 0, pod.stderr(2)
    resumed = pod.events(2)
    assert resumed[0] == "resume 5"
    assert_contiguous(steps(resumed), 6, TOTAL)
    assert final_weights(resumed) == reference
    assert not [p for p in pod.checkpoints.iterdir() if p.name.startswith(".tmp-ckpt-")]


def test_no_checkpoint_yet_starts_fresh(pod: Pod, reference: str) -> None:
    trainer = pod.start(1, "--steps", str(TOTAL), "--every-steps", "5", "--slow-save-at", "5")
    pod.wait_for(1, "slow-save 5")
    trainer.kill()
    trainer.wait()

    second = pod.start(2, "--steps", str(TOTAL))
    assert pod.finish(second) == 0, pod.stderr(2)
    assert pod.events(2)[0] == "fresh 0"
    assert_contiguous(steps(pod.events(2)), 1, TOTAL)
    assert final_weights(pod.events(2)) == reference


def test_sigterm_without_prestop_saves_once_and_exits(pod: Pod, reference: str) -> None:
    trainer = pod.start(
        1, "--steps", str(TOTAL), "--step-seconds", STEP_SECONDS, "--every-steps", "50"
    )
    pod.wait_for(1, "step 8")
    assert pod.terminate(trainer, RESERVE) == 143, pod.stderr(1)

    first = pod.events(1)
    done = steps(first)
    assert_contiguous(done, 1, done[-1])
    assert saves(first) == [(done[-1], "preempted")]
    assert not (pod.checkpoints / ".spotguard-preempt").exists()

    second = pod.start(2, "--steps", str(TOTAL))
    assert pod.finish(second) == 0, pod.stderr(2)
    assert pod.events(2)[0] == f"resume {done[-1]}"
    assert final_weights(pod.events(2)) == reference


@pytest.mark.parametrize("behaviour", list(Behaviour), ids=lambda b: b.name.lower())
@pytest.mark.parametrize("shell", SHELLS)
def test_hook_behaviour_under_every_shell(pod: Pod, shell: Shell, behaviour: Behaviour) -> None:
    """Request, wait, ack, timeout, no-op, exit 0: the same under every shell."""
    assert shell.tools(os.environ["PATH"]) is Tools.FULL
    check_behaviour(behaviour, pod.hook_runner(shell), pod.checkpoints, HOST, Tools.FULL)


@pytest.mark.parametrize("behaviour", [Behaviour.ACK, Behaviour.TIMEOUT], ids=["ack", "timeout"])
@pytest.mark.parametrize("box", list(TOOLBOX_TOOLS))
@pytest.mark.parametrize("shell", NAMED_SHELLS)
def test_hook_uses_date_and_sleep_when_the_shell_can_run_them(
    pod: Pod, shell: Shell, box: str, behaviour: Behaviour, tmp_path: Path
) -> None:
    """PATH holds only some tools: the hook does what the shell can still run.

    dash and bash with an empty PATH really lack `date` and `sleep` (the request goes
    out without a deadline and the hook returns at once); busybox's shell still runs its
    applets, so under busybox the hook keeps its deadline and its polling.
    """
    path = str(toolbox(tmp_path, box))
    tools = shell.tools(path)
    applets = shell.name == "busybox-sh"
    assert tools is (Tools.FULL if applets else TOOLBOX_TOOLS[box]), tools
    run = pod.hook_runner(shell)
    check_behaviour(behaviour, run, pod.checkpoints, HOST, tools, env={"PATH": path})


@pytest.mark.parametrize("shell", SHELLS)
def test_real_trainer_with_an_empty_path(pod: Pod, shell: Shell, tmp_path: Path) -> None:
    """No PATH at all: the request still reaches the real trainer, which saves once."""
    bare = tmp_path / "empty-path"
    bare.mkdir()
    tools = shell.tools(str(bare))
    trainer = pod.start(1, "--steps", str(TOTAL), "--step-seconds", STEP_SECONDS)
    pod.wait_for(1, "step 5")

    status, took = pod.run_hook(hook_argv(shell), PATH=str(bare))
    assert status == 0
    assert took < 1.0
    request = (pod.checkpoints / ".spotguard-preempt").read_text()
    assert ("\ndeadline=\n" in request) is not tools.has_date, (tools, request)
    pod.wait_for(1, r"save \d+ preempted")  # honoured, with or without a deadline
    assert (pod.checkpoints / ".spotguard-ack").exists() or not tools.waits
    assert pod.terminate(trainer, RESERVE) == 143, pod.stderr(1)
    first = pod.events(1)
    assert saves(first) == [(steps(first)[-1], "preempted")]


def test_hook_survives_a_missing_directory_and_a_bad_timeout(pod: Pod) -> None:
    status, took = pod.run_hook(
        injected_hook(),
        SPOTGUARD_CHECKPOINT_DIR=str(pod.root / "missing"),
        SPOTGUARD_PRESTOP_TIMEOUT_SECONDS="soon",
    )
    assert (status, took < 0.5) == (0, True)


def test_the_injected_command_is_the_hook_script() -> None:
    command = default_policy().inject.pre_stop.command
    script = (ROOT / "policies" / "prestop_hook.sh").read_text()
    assert list(command) == ["/bin/sh", "-c", script.rstrip("\n")]
    assert injected_hook() == list(command)
    names = {item["name"] for item in injected_container()["env"]}  # type: ignore[attr-defined]
    assert {"SPOTGUARD_CHECKPOINT_DIR", "SPOTGUARD_PRESTOP_TIMEOUT_SECONDS"} <= names


def test_pytorch_example_honours_the_contract(pod: Pod) -> None:
    pytest.importorskip("torch", reason="PyTorch is not installed; the tiny trainer covers this")
    trainer = pod.start(1, "--steps", "1000000", "--every-steps", "50", script=TORCH_EXAMPLE)
    pod.wait_for(1, r"step 2\d .*", timeout=120)

    status, took = pod.run_hook(injected_hook())
    assert status == 0
    assert took < TIMEOUT
    assert pod.terminate(trainer, RESERVE) == 143, pod.stderr(1)
    first = pod.events(1)
    done = steps(first)
    assert_contiguous(done, 1, done[-1])
    assert_one_save_for_the_preemption(first, every_steps=50)

    second = pod.start(2, "--steps", str(done[-1] + 5), script=TORCH_EXAMPLE)
    assert pod.finish(second, timeout=120) == 0, pod.stderr(2)
    assert pod.events(2)[0] == f"resume {done[-1]}"
    assert_contiguous(steps(pod.events(2)), done[-1] + 1, done[-1] + 5)
