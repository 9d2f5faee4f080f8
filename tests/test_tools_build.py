"""tools/build.py: what decides the helm and promtool builds (no Go needed here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from controlplane.build import BuildError
from tools.build import MODULE_DIR, build_key, required_version, version_ldflags

GO_MOD = """module spotguard.dev/tools

go 1.26.7

require (
\tgithub.com/prometheus/prometheus v0.316.2 // indirect
\thelm.sh/helm/v3 v3.22.1 // indirect
\tk8s.io/client-go v0.37.1 // indirect
)
"""


def test_versions_come_from_go_mod(tmp_path: Path) -> None:
    go_mod = tmp_path / "go.mod"
    go_mod.write_text(GO_MOD)
    flags = version_ldflags(go_mod)
    assert "-X helm.sh/helm/v3/internal/version.version=v3.22.1" in flags
    # helm template without a cluster assumes the Kubernetes minor it is built against.
    assert "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=37" in flags
    assert "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=37" in flags
    assert "-X github.com/prometheus/common/version.Version=3.16.2" in flags


def test_a_missing_pin_is_a_build_error(tmp_path: Path) -> None:
    go_mod = tmp_path / "go.mod"
    go_mod.write_text("module example\n\ngo 1.26\n")
    with pytest.raises(BuildError, match=re.escape("helm.sh/helm/v3")):
        required_version("helm.sh/helm/v3", go_mod)


def test_the_shipped_go_mod_pins_both_tools() -> None:
    assert required_version("helm.sh/helm/v3").startswith("v3.")
    assert required_version("github.com/prometheus/prometheus").startswith("v0.3")
    tools = (MODULE_DIR / "go.mod").read_text()
    assert "helm.sh/helm/v3/cmd/helm" in tools
    assert "github.com/prometheus/prometheus/cmd/promtool" in tools


def test_the_cache_key_follows_the_go_version() -> None:
    assert build_key("go1.26.8") == build_key("go1.26.8")
    assert build_key("go1.26.8") != build_key("go1.27.0")
