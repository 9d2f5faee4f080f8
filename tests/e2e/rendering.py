"""Rendering spotguard's install manifests for tests: kustomize builds (with the
control plane's kubectl), kustomizations composed the way users compose them, and lookups
in the rendered documents."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.harness import ControlPlane
from devtools.helmcli import CHART, run_helm
from devtools.server import REPO

Manifest = dict[str, Any]

DEPLOY = REPO / "deploy"
PROVIDERS = ("eks", "gke", "aks", "generic")
COMPONENTS = ("audit", "cert-manager", "policy-reports", "network-policy", "monitoring")


def kustomize(cluster: ControlPlane, path: Path | str) -> list[Manifest]:
    """``kubectl kustomize`` of ``path`` (relative to the repository, or absolute)."""
    result = cluster.kubectl("kustomize", str(REPO / path), check=True)
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def compose(directory: Path, provider: str, components: tuple[str, ...] = ()) -> Path:
    """A user's own kustomization in ``directory``: a provider overlay plus components,
    referenced by relative paths as a kustomization elsewhere on disk would."""
    directory.mkdir(parents=True, exist_ok=True)
    document = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(DEPLOY / "overlays" / provider, directory)],
        "components": [os.path.relpath(DEPLOY / "components" / c, directory) for c in components],
    }
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(document))
    return directory


def find(documents: list[Manifest], kind: str, name: str) -> Manifest:
    matches = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def keyed(documents: list[Manifest]) -> dict[tuple[str, str], Manifest]:
    return {(d["kind"], d["metadata"]["name"]): d for d in documents}


def policy_of(documents: list[Manifest]) -> str:
    text: str = find(documents, "ConfigMap", "spotguard-policy")["data"]["policy.yaml"]
    return text


# -- the Helm chart ---------------------------------------------------------------------

#: Each kustomize provider overlay's presets, as the chart's `providers` value.
PROVIDER_VALUES = {
    "eks": ["eks", "karpenter"],
    "gke": ["gke"],
    "aks": ["aks"],
    "generic": ["generic"],
}
#: Each kustomize component's equivalent chart values.
COMPONENT_VALUES: dict[str, dict[str, Any]] = {
    "audit": {"mode": "audit"},
    "cert-manager": {"certificates": {"mode": "certManager"}},
    "policy-reports": {"policyReports": {"installCRD": True}},
    "network-policy": {"networkPolicy": {"enabled": True}},
    "monitoring": {
        "metrics": {
            "podMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True},
            "dashboard": {"enabled": True},
        }
    },
}


def helm_binary() -> Path:
    """helm, built from the Go modules of tools/ (cached); skips where Go is missing."""
    if shutil.which("go") is None:
        pytest.skip("helm is built from Go modules (make tools); no go command here")
    from tools.build import ensure_tools  # noqa: PLC0415

    return ensure_tools() / "helm"


def merge_values(*layers: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = merge_values(merged[key], value)
            else:
                merged[key] = value
    return merged


def helm(
    helm_bin: Path,
    *args: str,
    values: dict[str, Any] | None = None,
    kubeconfig: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """helm with ``values``, no repositories or cache, against ``kubeconfig``'s cluster."""
    return run_helm(helm_bin, *args, values=values, kubeconfig=kubeconfig)


def helm_template(
    helm_bin: Path,
    values: dict[str, Any],
    namespace: str = "spotguard-system",
    release: str = "spotguard",
) -> list[Manifest]:
    result = helm(helm_bin, "template", release, str(CHART), "--namespace", namespace,
                  values=values)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]
