"""Unit tests of trainer/spotguard_checkpoint.py, the trainer's side of the contract."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from trainer.spotguard_checkpoint import (
    ACK_FILE,
    LISTENER_FILE,
    PREEMPTED_EXIT_CODE,
    REQUEST_FILE,
    Checkpointer,
)

HOST = "trainer-0"


@pytest.fixture(autouse=True)
def restore_sigterm() -> Iterator[None]:
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def make(directory: Path, **options: object) -> Checkpointer:
    settings: dict[str, object] = {"host": HOST, "poll_interval": 0.0, **options}
    return Checkpointer(directory, **settings)  # type: ignore[arg-type]


def request(
    directory: Path, rid: str = "trainer-0.42.100", deadline: str = "", host: str = HOST
) -> str:
    """Write the request exactly as the hook does (one printf)."""
    (directory / REQUEST_FILE).write_text(f"id={rid}\ndeadline={deadline}\nhost={host}\n")
    return rid


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_fresh_directory_has_nothing_to_resume(tmp_path: Path) -> None:
    ckpt = make(tmp_path / "ckpt")
    assert ckpt.resume() is None
    assert ckpt.latest() is None
    assert ckpt.checkpoints() == []


def test_save_bytes_or_writer_and_resume_the_newest(tmp_path: Path) -> None:
    ckpt = make(tmp_path)
    ckpt.save(10, b"ten")

    def write(file: BinaryIO) -> None:
        file.write(b"twen")
        file.write(b"ty")

    saved = ckpt.save(20, write)
    assert saved.path.name == "ckpt-000002-step-000000020.ckpt"
    latest = make(tmp_path).resume()
    assert latest is not None
    assert (latest.step, latest.read_bytes()) == (20, b"twenty")
    with latest.open() as file:
        assert file.read() == b"twenty"


def test_keeps_the_last_k(tmp_path: Path) -> None:
    ckpt = make(tmp_path, keep=2)
    for step in range(1, 6):
        ckpt.save(step, str(step).encode())
    assert [c.step for c in ckpt.checkpoints()] == [4, 5]


def test_writes_are_atomic_and_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync-file")
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        assert Path(src).parent == Path(dst).parent == tmp_path  # same directory
        assert Path(src).name.startswith(".tmp-")
        calls.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    make(tmp_path).save(1, b"x")
    assert calls == ["fsync-file", "rename", "fsync-dir"]


def test_a_failed_save_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    ckpt = make(tmp_path)
    ckpt.save(5, b"five")

    def broken(file: BinaryIO) -> None:
        file.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        ckpt.save(10, broken)
    assert names(tmp_path) == ["ckpt-000001-step-000000005.ckpt"]
    assert ckpt.latest_step == 5


def test_temp_files_of_dead_saves_are_ignored_then_removed(tmp_path: Path) -> None:
    ckpt = make(tmp_path)
    ckpt.save(5, b"five")
    dead = tmp_path / f".tmp-ckpt-000002-step-000000010.ckpt.{HOST}.999999999"
    dead.write_bytes(b"half")
    other_fresh = tmp_path / ".tmp-ckpt-000002-step-000000010.ckpt.other-pod.7"
    other_fresh.write_bytes(b"half")
    other_old = tmp_path / ".tmp-ckpt-000002-step-000000011.ckpt.other-pod.8"
    other_old.write_bytes(b"half")
    an_hour_ago = time.time() - 3600
    os.utime(other_old, (an_hour_ago, an_hour_ago))

    latest = make(tmp_path).latest()
    assert latest is not None
    assert latest.step == 5
    assert make(tmp_path).resume() == latest
    assert not dead.exists()  # ours, and its process is gone
    assert other_fresh.exists()  # another pod may still be writing it
    assert not other_old.exists()


def test_periodic_checkpoints_every_n_steps_from_the_resumed_step(tmp_path: Path) -> None:
    make(tmp_path).save(7, b"7")
    ckpt = make(tmp_path, every_steps=5)
    ckpt.resume()
    assert [s for s in range(8, 20) if ckpt.should_checkpoint(s)] == list(range(12, 20))
    ckpt.save(12, b"12")
    assert not ckpt.should_checkpoint(16)
    assert ckpt.should_checkpoint(17)


def test_periodic_checkpoints_every_n_seconds(tmp_path: Path) -> None:
    ckpt = make(tmp_path, every_seconds=0.05)
    assert not ckpt.should_checkpoint(1)
    time.sleep(0.06)
    assert ckpt.should_checkpoint(2)
    ckpt.save(2, b"2")
    assert not ckpt.should_checkpoint(3)


def test_preemption_request_saves_once_and_acknowledges(tmp_path: Path) -> None:
    ckpt = make(tmp_path, every_steps=100)
    ckpt.listen(handle_sigterm=False)
    assert not ckpt.should_checkpoint(3)
    rid = request(tmp_path, deadline=str(int(time.time()) + 30))
    assert ckpt.should_checkpoint(4)
    assert not ckpt.should_stop()  # not before the checkpoint is durable
    assert not (tmp_path / ACK_FILE).exists()
    ckpt.save(4, b"4")
    assert (tmp_path / ACK_FILE).read_text() == f"{rid}\n"
    assert ckpt.should_stop()
    assert not ckpt.should_checkpoint(4)
    assert not ckpt.should_checkpoint(5)  # no second save for the same preemption
    left = ckpt.seconds_left()
    assert left is not None
    assert 25 < left <= 30


def test_a_request_covered_by_the_newest_checkpoint_needs_no_save(tmp_path: Path) -> None:
    ckpt = make(tmp_path, every_steps=10)
    ckpt.listen(handle_sigterm=False)
    ckpt.save(10, b"10")
    rid = request(tmp_path)
    assert not ckpt.should_checkpoint(10)
    assert (tmp_path / ACK_FILE).read_text() == f"{rid}\n"
    assert ckpt.should_stop()
    assert [c.step for c in ckpt.checkpoints()] == [10]


def test_a_request_arriving_during_a_save_is_acknowledged_by_it(tmp_path: Path) -> None:
    ckpt = make(tmp_path)
    ckpt.listen(handle_sigterm=False)
    ckpt.save(3, lambda file: (file.write(b"3"), request(tmp_path, "r-during-save")))
    assert (tmp_path / ACK_FILE).read_text() == "r-during-save\n"
    assert ckpt.should_stop()


def test_a_request_of_another_pod_is_ignored(tmp_path: Path) -> None:
    ckpt = make(tmp_path)
    ckpt.listen(handle_sigterm=False)
    request(tmp_path, host="trainer-1")
    assert not ckpt.poll()
    assert not ckpt.should_checkpoint(1)


def test_an_incomplete_request_is_reread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The trainer may open the file between the hook's create and its write."""
    ckpt = make(tmp_path)
    path = tmp_path / REQUEST_FILE
    path.write_text("")

    def hook_writes_meanwhile(seconds: float) -> None:
        path.write_text("id=late\ndeadline=\nhost=\n")

    monkeypatch.setattr(time, "sleep", hook_writes_meanwhile)
    assert ckpt.poll(force=True)
    assert ckpt.request is not None
    assert ckpt.request.id == "late"


def test_a_request_written_line_by_line_is_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bash's printf writes one line at a time: a first line alone is not the request."""
    ckpt = make(tmp_path)
    path = tmp_path / REQUEST_FILE
    lines = iter(["id=bash.7.100\ndeadline=130\n", "id=bash.7.100\ndeadline=130\nhost=trainer-0\n"])
    path.write_text("id=bash.7.100\n")

    def next_line_meanwhile(seconds: float) -> None:
        path.write_text(next(lines))

    monkeypatch.setattr(time, "sleep", next_line_meanwhile)
    assert ckpt.poll(force=True)
    assert ckpt.request is not None
    assert (ckpt.request.deadline, ckpt.request.host) == (130.0, "trainer-0")


@pytest.mark.parametrize(
    ("case", "stale"),
    [("acknowledged", True), ("expired", True), ("no date, old", True), ("current", False)],
)
def test_requests_of_an_earlier_container_are_forgotten(
    tmp_path: Path, case: str, stale: bool
) -> None:
    now = int(time.time())
    if case == "expired":
        request(tmp_path, "old", deadline=str(now - 60))
    elif case == "no date, old":
        request(tmp_path, "old")
        os.utime(tmp_path / REQUEST_FILE, (now - 60, now - 60))
    else:
        request(tmp_path, "old", deadline=str(now + 30))
    if case == "acknowledged":
        (tmp_path / ACK_FILE).write_text("old\n")
    ckpt = make(tmp_path, prestop_timeout=10, sigterm_reserve=5)
    ckpt.listen(handle_sigterm=False)
    assert ckpt.poll() is not stale
    assert (tmp_path / REQUEST_FILE).exists() is not stale


def test_a_live_request_of_another_pod_is_left_alone(tmp_path: Path) -> None:
    """A replacement pod starting early must not take the old pod's request or ack."""
    now = int(time.time())
    request(tmp_path, "theirs", deadline=str(now + 30), host="trainer-1")
    (tmp_path / ACK_FILE).write_text("theirs\n")
    ckpt = make(tmp_path)
    ckpt.listen(handle_sigterm=False)
    assert not ckpt.poll()
    assert (tmp_path / REQUEST_FILE).exists()
    assert (tmp_path / ACK_FILE).exists()


def test_without_date_the_deadline_is_the_request_mtime_plus_the_timeout(tmp_path: Path) -> None:
    request(tmp_path, "nodate")
    written = (tmp_path / REQUEST_FILE).stat().st_mtime
    ckpt = make(tmp_path, prestop_timeout=20)
    assert ckpt.poll()
    assert ckpt.request is not None
    assert ckpt.request.deadline == written + 20
    left = ckpt.seconds_left()
    assert left is not None
    assert 15 < left <= 20


def test_listener_file_announces_the_trainer_until_finish(tmp_path: Path) -> None:
    ckpt = make(tmp_path)
    ckpt.listen(handle_sigterm=False)
    lines = (tmp_path / LISTENER_FILE).read_text().splitlines()
    assert lines[:2] == [HOST, f"pid={os.getpid()}"]
    assert ckpt.finish() == 0
    assert not (tmp_path / LISTENER_FILE).exists()


def test_sigterm_only_sets_a_flag_then_one_save_and_exit(tmp_path: Path) -> None:
    ckpt = make(tmp_path, every_steps=100)
    ckpt.listen()
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.01)
    assert ckpt.sigterm_received
    assert ckpt.checkpoints() == []  # the handler never saves
    assert ckpt.should_checkpoint(3)
    ckpt.save(3, b"3")
    assert ckpt.should_stop()
    assert not ckpt.should_checkpoint(3)
    assert not (tmp_path / ACK_FILE).exists()  # nothing asked through the hook
    started = time.monotonic()
    assert ckpt.finish() == PREEMPTED_EXIT_CODE
    assert time.monotonic() - started < 0.1  # SIGTERM already here: nothing to wait for


def test_a_trainer_that_does_not_announce_itself_saves_on_sigterm(tmp_path: Path) -> None:
    """announce=False: no listener file (the hook leaves it alone), SIGTERM still saves."""
    ckpt = make(tmp_path, every_steps=100)
    ckpt.listen(announce=False)
    assert not (tmp_path / LISTENER_FILE).exists()
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.01)
    assert ckpt.should_checkpoint(7)
    ckpt.save(7, b"7")
    assert ckpt.should_stop()
    assert ckpt.finish() == PREEMPTED_EXIT_CODE
    assert [c.step for c in ckpt.checkpoints()] == [7]


def test_finish_waits_for_the_sigterm_that_follows_the_hook(tmp_path: Path) -> None:
    ckpt = make(tmp_path, sigterm_reserve=5)
    ckpt.listen()
    request(tmp_path, deadline=str(int(time.time()) + 30))
    assert ckpt.should_checkpoint(1)
    ckpt.save(1, b"1")
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM))
    started = time.monotonic()
    timer.start()
    try:
        assert ckpt.finish() == PREEMPTED_EXIT_CODE
    finally:
        timer.join()
    assert 0.15 < time.monotonic() - started < 2


def test_finish_does_not_wait_beyond_the_grace_budget(tmp_path: Path) -> None:
    ckpt = make(tmp_path, sigterm_reserve=0.3)
    ckpt.listen(handle_sigterm=False)
    request(tmp_path, deadline=str(int(time.time())))
    assert ckpt.should_checkpoint(1)
    ckpt.save(1, b"1")
    started = time.monotonic()
    assert ckpt.finish() == PREEMPTED_EXIT_CODE
    assert time.monotonic() - started < 1.0


def test_resume_none_starts_fresh_and_new_saves_supersede_old_ones(tmp_path: Path) -> None:
    make(tmp_path).save(500, b"old run")
    ckpt = make(tmp_path, resume_mode="none")
    assert ckpt.resume() is None
    ckpt.save(10, b"new run")
    latest = make(tmp_path).resume()
    assert latest is not None
    assert (latest.step, latest.read_bytes()) == (10, b"new run")


def test_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPOTGUARD_CHECKPOINT_DIR", raising=False)
    with pytest.raises(RuntimeError, match="SPOTGUARD_CHECKPOINT_DIR"):
        Checkpointer.from_env(listen=False)
    monkeypatch.setenv("SPOTGUARD_CHECKPOINT_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("SPOTGUARD_RESUME", "latest")
    monkeypatch.setenv("SPOTGUARD_PRESTOP_TIMEOUT_SECONDS", "25")
    monkeypatch.setenv("SPOTGUARD_SIGTERM_RESERVE_SECONDS", "oops")
    ckpt = Checkpointer.from_env(every_steps=50)
    assert ckpt.directory == tmp_path / "c"
    assert (ckpt.prestop_timeout, ckpt.sigterm_reserve, ckpt.every_steps) == (25, 5, 50)
    assert (tmp_path / "c" / LISTENER_FILE).exists()
    assert signal.getsignal(signal.SIGTERM) == ckpt._on_sigterm
    monkeypatch.setenv("SPOTGUARD_RESUME", "sometimes")
    with pytest.raises(ValueError, match="resume mode"):
        Checkpointer.from_env(listen=False)
