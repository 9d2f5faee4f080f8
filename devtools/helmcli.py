"""Run the helm built from tools/go.mod, isolated from the user's helm setup.

Each call gets fresh HELM_CACHE_HOME, HELM_CONFIG_HOME and HELM_DATA_HOME (no repositories,
no plugins, nothing left behind), values as a values file, and the cluster of the given
kubeconfig.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from devtools.server import REPO

CHART = REPO / "deploy" / "helm" / "spotguard"


def run_helm(
    helm_bin: Path,
    *args: str,
    values: dict[str, Any] | None = None,
    kubeconfig: Path | None = None,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="spotguard-helm-") as home:
        command = [str(helm_bin), *args]
        if values is not None:
            values_file = Path(home) / "values.yaml"
            values_file.write_text(yaml.safe_dump(values))
            command += ["--values", str(values_file)]
        env = {
            **os.environ,
            "HELM_CACHE_HOME": f"{home}/cache",
            "HELM_CONFIG_HOME": f"{home}/config",
            "HELM_DATA_HOME": f"{home}/data",
        }
        if kubeconfig is not None:
            env["KUBECONFIG"] = str(kubeconfig)
        return subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
