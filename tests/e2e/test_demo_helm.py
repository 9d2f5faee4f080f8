"""`make demo-helm` shows the Helm install path end to end; this keeps it working."""

from __future__ import annotations

import subprocess
import sys

import pytest

from devtools.server import REPO
from tests.e2e.rendering import helm_binary

pytestmark = pytest.mark.e2e


def test_demo_installs_audits_enforces_and_uninstalls(cluster: object) -> None:
    # `cluster` and helm_binary() make sure the binaries exist (or skip with the reason).
    helm_binary()
    result = subprocess.run(
        [sys.executable, "-m", "devtools.demo_helm"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    assert "STATUS: deployed" in output and "in audit mode" in output
    assert "Warning: spotguard audit [spot-requires-fault-tolerance]" in output
    assert "=> ADMITTED, with the warning above" in output
    assert "REVISION: 2" in output
    assert 'admission webhook "validate.spotguard.dev" denied the request' in output
    assert "=> REJECTED, nothing stored" in output
    assert "terminationGracePeriodSeconds: 110" in output
    assert "=> CLEAN: no object of spotguard left" in output
    assert "everything it started is stopped" in output
