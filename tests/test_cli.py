"""The ``spotguard`` CLI, run as a user would (a subprocess of the installed entry point)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from cryptography import x509

from devtools.server import REPO
from policies.loader import parse_policy_text
from tests.golden import without_revision

CASES = REPO / "tests" / "cases"


def spotguard(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webhook", *args],
        input=stdin, capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
    )  # fmt: skip


def test_mutate_prints_the_admitted_object() -> None:
    case = CASES / "ft-minimal-aks"
    result = spotguard(
        "mutate", "-f", str(case / "pod.yaml"), "--policy", str(case / "policy.yaml")
    )
    assert result.returncode == 0, result.stderr
    revision = parse_policy_text((case / "policy.yaml").read_text()).revision
    admitted = without_revision(yaml.safe_load(result.stdout), revision)
    assert admitted == yaml.safe_load((case / "expected.yaml").read_text())


def test_mutate_patch_flag_prints_the_json_patch() -> None:
    case = CASES / "ft-json-pointer-escaping"
    result = spotguard(
        "mutate", "--patch", "-f", str(case / "pod.yaml"), "--policy", str(case / "policy.yaml")
    )
    assert result.returncode == 0, result.stderr
    revision = parse_policy_text((case / "policy.yaml").read_text()).revision
    patch = without_revision(json.loads(result.stdout), revision)
    assert patch == json.loads((case / "expected-patch.json").read_text())


def test_validate_exit_status_follows_the_decision() -> None:
    denied = spotguard("validate", "-f", str(CASES / "deny-non-ft-tolerates-spot" / "pod.yaml"))
    assert denied.returncode == 1
    assert denied.stdout.startswith("DENIED web-0: [spot-requires-fault-tolerance]")
    allowed = spotguard("validate", "-f", str(CASES / "allow-non-ft-on-demand" / "pod.yaml"))
    assert (allowed.returncode, allowed.stdout) == (0, "ALLOWED web-0\n")
    audited = spotguard(
        "validate",
        "-f", str(CASES / "audit-non-ft-tolerates-spot" / "pod.yaml"),
        "--policy", str(CASES / "audit-non-ft-tolerates-spot" / "policy.yaml"),
    )  # fmt: skip
    assert audited.returncode == 0
    assert "(audit mode)" in audited.stderr


def test_policy_check(tmp_path: Path) -> None:
    good = spotguard("policy", "check", str(REPO / "policies" / "default_policy.yaml"))
    assert good.returncode == 0
    assert good.stdout.startswith("policy OK: revision ")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "spotNodes:\n  taints:\n    - {key: a, effect: NoSchedule}\n    - {key: b, effect: Never}\n"
    )
    refused = spotguard("policy", "check", str(bad))
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "spotguard: invalid policy: spotNodes.taints[1].effect: "
        "must be one of NoSchedule, PreferNoSchedule, NoExecute"
    )


def test_errors_are_one_line_not_a_traceback(tmp_path: Path) -> None:
    missing = spotguard("validate", "-f", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "cannot read" in missing.stderr
    deployment = tmp_path / "deploy.yaml"
    deployment.write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n")
    wrong_kind = spotguard("mutate", "-f", str(deployment))
    assert wrong_kind.returncode == 2
    assert "only Pod manifests are supported, got Deployment" in wrong_kind.stderr


def test_certs_generate_writes_a_ca_and_serving_certificate(tmp_path: Path) -> None:
    result = spotguard("certs", "generate", "--out", str(tmp_path), "--ip", "127.0.0.2")
    assert result.returncode == 0, result.stderr
    cert = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "spotguard.spotguard-system.svc" in names.get_values_for_type(x509.DNSName)
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {
        "127.0.0.1",
        "127.0.0.2",
    }
    assert (tmp_path / "tls.key").stat().st_mode & 0o077 == 0


def test_every_command_has_help() -> None:
    for command in (
        ["serve"],
        ["mutate"],
        ["validate"],
        ["policy", "check"],
        ["certs", "generate"],
    ):
        result = spotguard(*command, "--help")
        assert result.returncode == 0
        assert "usage: spotguard" in result.stdout
