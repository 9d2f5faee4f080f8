"""The README's first command runs the demo; this keeps it working."""

from __future__ import annotations

import subprocess
import sys

import pytest

from testsupport.server import REPO

pytestmark = pytest.mark.e2e


def test_demo_shows_mutation_rejection_audit_and_placement(cluster: object) -> None:
    # `cluster` only makes sure the control plane binaries exist (or skips with the reason).
    result = subprocess.run(
        [sys.executable, "-m", "demos.demo"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    assert "injected (policy revision" in output
    assert "(spot-tainted, SPOT)" in output or "(spot-untainted, SPOT)" in output
    assert 'admission webhook "validate.spotguard.dev" denied the request' in output
    assert "=> REJECTED, nothing stored" in output
    assert "Warning: spotguard audit [spot-requires-fault-tolerance]" in output
    assert "=> ADMITTED with the warning above" in output
    storefront = [line for line in output.splitlines() if "pod storefront-" in line]
    assert len(storefront) == 6 and all("(on-demand, on-demand)" in line for line in storefront)
    assert "everything it started is stopped" in output
