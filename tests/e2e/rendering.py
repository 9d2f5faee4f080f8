"""Rendering spotguard's install manifests for tests: kustomize builds (with the
control plane's kubectl), kustomizations composed the way users compose them, and lookups
in the rendered documents."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from controlplane.harness import ControlPlane
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
