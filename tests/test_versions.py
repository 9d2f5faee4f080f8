"""One version everywhere a user can see it.

pyproject.toml's ``version`` is the source. ``spotguard --version`` reads it from the
installed package's metadata; the kustomize base tags the image with it; the Helm chart
carries it as its version and appVersion (the image tag's default); CHANGELOG.md's
newest release is it. Releasing means changing all of them, and this test says which one
was missed.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml

from devtools.server import REPO

DEPLOY = REPO / "deploy"


def project_version() -> str:
    with (REPO / "pyproject.toml").open("rb") as handle:
        version: str = tomllib.load(handle)["project"]["version"]
    return version


def test_installed_metadata_is_the_project_version() -> None:
    # A mismatch means the editable install is stale: `make setup` reinstalls it.
    assert importlib.metadata.version("spotguard") == project_version()


def test_cli_reports_the_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "--version"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"spotguard {project_version()}"


def yaml_documents(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def test_kustomize_base_tags_the_image_with_the_version() -> None:
    kustomization = yaml_documents(DEPLOY / "base" / "kustomization.yaml")[0]
    (image,) = [i for i in kustomization["images"] if i["name"] == "spotguard"]
    assert image["newTag"] == project_version()
    assert "newName" not in image  # users set their registry in their own kustomization


def images_in(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["image"]] if isinstance(node.get("image"), str) else []
        return found + [i for value in node.values() for i in images_in(value)]
    if isinstance(node, list):
        return [i for item in node for i in images_in(item)]
    return []


def test_raw_manifests_leave_the_tag_to_kustomize() -> None:
    """A tag written in a manifest would win over nothing and drift: only `images:` tags."""
    images = [
        image
        for path in sorted((DEPLOY / "base").glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for document in yaml_documents(path)
        for image in images_in(document)
    ]
    assert images and set(images) == {"spotguard"}


def test_helm_chart_carries_the_version() -> None:
    chart = yaml_documents(DEPLOY / "helm" / "spotguard" / "Chart.yaml")[0]
    assert chart["version"] == project_version()
    assert chart["appVersion"] == project_version()
    values = yaml_documents(DEPLOY / "helm" / "spotguard" / "values.yaml")[0]
    assert values["image"]["tag"] == ""  # the image tag defaults to appVersion
    helpers = (DEPLOY / "helm" / "spotguard" / "templates" / "_helpers.tpl").read_text()
    assert ".Values.image.tag | default .Chart.AppVersion" in helpers


def test_changelog_names_the_version_as_the_newest_release() -> None:
    headings = re.findall(r"^## \[([^\]]+)\]", (REPO / "CHANGELOG.md").read_text(), re.M)
    assert headings[0] == "Unreleased"
    assert headings[1] == project_version()


DOCUMENTS = ("Dockerfile", "README.md", "deploy/README.md", "deploy/helm/spotguard/README.md")


def test_documented_image_tags_are_the_version() -> None:
    """Commands in the docs (docker build -t spotguard:X.Y.Z, ...) say the version too."""
    for name in DOCUMENTS:
        tags = re.findall(r"spotguard:(\d+\.\d+\.\d+\S*)", (REPO / name).read_text())
        assert set(tags) <= {project_version()}, f"{name}: {sorted(set(tags))}"
