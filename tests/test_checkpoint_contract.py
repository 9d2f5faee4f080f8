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
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from policies.loader import default_policy
from tests.hook_behaviour import Behaviour, Tools, check_behaviour
from tests.hook_shells import NAMED_SHELLS, SHELLS, TOOLBOX_TOOLS, Shell, toolbox
from tests.simulated_pod import (
    HOST,
    RESERVE,
    ROOT,
    STEP_SECONDS,
    TIMEOUT,
    TORCH_EXAMPLE,
    TOTAL,
    Pod,
    final_weights,
    hook_argv,
    injected_container,
    injected_hook,
    saves,
    steps,
)

pytestmark = pytest.mark.processes


@pytest.fixture
def pod(tmp_path: Path) -> Iterator[Pod]:
    pod = Pod(tmp_path)
    try:
        yield pod
    finally:
        pod.close()


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
