"""The shells the preStop hook is tested under on this machine, and PATHs with some tools.

`make host-packages` installs dash, bash and busybox-static, so in CI no case skips; a
shell that cannot be had here skips with the reason. :meth:`Shell.tools` asks a shell
which of ``date`` and ``sleep`` it can run with a given PATH (tests/hook_behaviour.py
says what the hook then does).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.hook_behaviour import Tools

INSTALL_HINT = "`make host-packages` (devtools/install-host-packages.sh) installs it"

#: Asks a shell which of `date` and `sleep` (fractions, or whole seconds) it can run.
_TOOLS_PROBE = (
    "date +%s >/dev/null 2>&1 && d=1; "
    "if sleep 0.01 2>/dev/null; then s=f; elif sleep 0 2>/dev/null; then s=w; fi; "
    "echo ${d:-0}${s:-0}"
)
_PROBED_TOOLS = {
    "1f": Tools.FULL,
    "1w": Tools.WHOLE_SECONDS,
    "0f": Tools.SLEEP_ONLY,
    "0w": Tools.SLEEP_ONLY,
    "10": Tools.DATE_ONLY,
    "00": Tools.NEITHER,
}


@dataclass(frozen=True)
class Shell:
    """A shell the injected hook may run under: ``argv`` replaces the hook's ``/bin/sh``."""

    name: str
    argv: tuple[str, ...]

    def tools(self, path: str) -> Tools:
        """What this shell can run as ``date`` and ``sleep`` with ``path`` as its PATH.

        Programs on PATH, or the shell's own applets: busybox's shell (built with
        FEATURE_SH_STANDALONE, as Debian's busybox-static is) runs its ``date`` and
        ``sleep`` applets whatever PATH says. Asked of the shell, not assumed.
        """
        result = subprocess.run(
            [*self.argv, "-c", _TOOLS_PROBE], env={"PATH": path}, capture_output=True,
            text=True, timeout=10, check=True,
        )  # fmt: skip
        return _PROBED_TOOLS[result.stdout.strip()]


def shell_param(name: str, program: str, *args: str) -> object:
    found = shutil.which(program)
    reason = f"{program} is not installed here; {INSTALL_HINT}"
    marks = [pytest.mark.skipif(found is None, reason=reason)]
    return pytest.param(Shell(name, (found or program, *args)), id=name, marks=marks)


#: Each shell by name; SHELLS adds the hook exactly as injected (this machine's /bin/sh).
NAMED_SHELLS = [
    shell_param("dash", "dash"),
    shell_param("bash", "bash"),
    shell_param("busybox-sh", "busybox", "sh"),
]
SHELLS = [pytest.param(Shell("injected-bin-sh", ("/bin/sh",)), id="injected-bin-sh"), *NAMED_SHELLS]


def toolbox(root: Path, name: str) -> Path:
    """A PATH directory holding only some of the tools the hook uses."""
    box = root / f"tools-{name}"
    box.mkdir()
    date, sleep = shutil.which("date"), shutil.which("sleep")
    assert date is not None and sleep is not None
    if name in ("date-only", "whole-seconds"):
        (box / "date").symlink_to(date)
    if name == "sleep-only":
        (box / "sleep").symlink_to(sleep)
    if name == "whole-seconds":  # a sleep that takes whole seconds only, as some have
        script = box / "sleep"
        script.write_text(
            "#!/bin/sh\n"
            "case $1 in *[!0-9]*) echo \"sleep: invalid time '$1'\" >&2; exit 1 ;; esac\n"
            f'exec {sleep} "$1"\n'
        )
        script.chmod(0o755)
    return box


#: What a shell without applets can run with each toolbox as its PATH.
TOOLBOX_TOOLS = {
    "empty": Tools.NEITHER,
    "date-only": Tools.DATE_ONLY,
    "sleep-only": Tools.SLEEP_ONLY,
    "whole-seconds": Tools.WHOLE_SECONDS,
}
