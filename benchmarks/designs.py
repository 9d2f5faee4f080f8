"""The serving design to compare with: the gthread ``ReviewWorker`` that came before the
event-loop worker, run from its own source tree (``git archive`` of that commit) with
this environment's packages, so both are measured in the same run on the same machine."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from devtools.server import REPO

#: The last commit serving with gunicorn's gthread worker (spotguard's ReviewWorker).
OLD_DESIGN_REF = "644964937a547123108c5e491c2a900f62b0f217"


@contextmanager
def source_tree(ref: str) -> Iterator[Path | None]:
    """The tree of ``ref`` in a temporary directory; None (and why, printed) if this
    checkout cannot produce it (no git history, say)."""
    with tempfile.TemporaryDirectory(prefix="spotguard-design-") as tmp:
        archive = subprocess.run(
            ["git", "archive", ref], cwd=REPO, capture_output=True, check=False
        )
        if archive.returncode != 0:
            print(f"(old design not measured: git archive {ref[:12]} failed: "
                  f"{archive.stderr.decode().strip()})")  # fmt: skip
            yield None
            return
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        yield Path(tmp)
