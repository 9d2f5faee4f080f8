"""Waiting for something to become true, for the harness, the demos and the tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """What was waited for did not happen in time; the message says what it was."""


def wait_for(
    check: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.1,
    alive: Callable[[], None] | None = None,
) -> T:
    """Call ``check`` every ``interval`` s until it returns something truthy, and return it.

    ``alive`` is called before each try, so a process that died raises its own error at
    once instead of the wait running out; :class:`WaitTimeout` after ``timeout`` s.
    """
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None:
            alive()
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
