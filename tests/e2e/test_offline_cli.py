"""`spotguard validate` offline gives what `kubectl apply` gets from the installed webhooks.

Every manifest under examples/ and tests/e2e/manifests/ (one of them mixes a Deployment, a
Service, a PyTorchJob and a ConfigMap) is applied document by document through the real
kube-apiserver with both webhooks registered (the API server runs the mutating webhook,
applies its patch, then calls the validating webhook) and checked offline with
`spotguard validate -o json`. For each object: the same decision, the same denial
message, the same spotguard warnings; objects spotguard does not review are applied
without a word from it and reported as skipped. Under the enforce and the audit policy.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.harness import ControlPlane
from policies.presets import PRESETS
from tests.e2e.conftest import AUDIT_POLICY, ENFORCE_POLICY, Webhook
from tests.e2e.rendering import (
    COMPONENT_VALUES,
    DEPLOY,
    PROVIDER_VALUES,
    PROVIDERS,
    compose,
    helm_binary,
    helm_template,
)
from testsupport.server import REPO

pytestmark = pytest.mark.e2e
HERE = Path(__file__).parent
MANIFESTS = [
    *sorted((REPO / "examples").glob("*.yaml")),
    *sorted((HERE / "manifests").glob("*.yaml")),
]
#: How kubectl shows a denial by either validating webhook (pods, or workload templates).
DENIED = re.compile(
    r'admission webhook "(?:validate|workloads)\.spotguard\.dev" denied the request: '
)


def kubectl_apply(
    cluster: ControlPlane, namespace: str, document: dict[str, Any]
) -> dict[str, Any]:
    """What kubectl shows for one object: whether it was created, the denial, the warnings."""
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(document))
    lines = result.stderr.splitlines()
    denials = [DENIED.split(line, 1)[1] for line in lines if DENIED.search(line)]
    assert result.returncode == 0 or denials, result.stderr  # failed for another reason
    return {
        "allowed": result.returncode == 0,
        "message": denials[0] if denials else "",
        "warnings": [
            line.removeprefix("Warning: ")
            for line in lines
            if line.startswith("Warning: spotguard")
        ],
    }


def offline(namespace: str, manifest: Path, policy: Path) -> list[dict[str, Any]]:
    """`spotguard validate -o json` of the manifest, with the policy the webhook serves."""
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "validate", "-f", str(manifest), "-n", namespace,
         "-o", "json", "--policy", str(policy)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def expected_from(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "allowed": record["result"] != "denied",
        "message": record.get("message", "") if record["result"] == "denied" else "",
        "warnings": record.get("warnings", []),
    }


@pytest.fixture(scope="module")
def pytorchjob_crd(cluster: ControlPlane) -> None:
    cluster.kubectl("apply", "-f", str(HERE / "crds" / "kubeflow-pytorchjob.yaml"), check=True)
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/pytorchjobs.kubeflow.org", "--timeout=30s",
        check=True,
    )  # fmt: skip


@pytest.mark.parametrize("mode", ["enforce", "audit"])
def test_offline_validation_matches_kubectl_apply(
    cluster: ControlPlane,
    webhook: Webhook,
    namespace: str,
    pytorchjob_crd: None,
    mode: str,
) -> None:
    policy = AUDIT_POLICY if mode == "audit" else ENFORCE_POLICY
    compared: list[str] = []
    with webhook.policy(policy):
        policy_file = webhook.workdir / f"{mode}-policy.yaml"
        policy_file.write_text(policy)
        for index, manifest in enumerate(MANIFESTS):
            # A namespace per manifest: two examples may name the same object (in audit
            # mode the first is created, and the second would be an update).
            target = f"{namespace}-{index}"
            cluster.ensure_namespace(target)
            documents = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
            records = offline(target, manifest, policy_file)
            assert len(records) == len(documents), manifest
            for document, record in zip(documents, records, strict=True):
                applied = kubectl_apply(cluster, target, document)
                where = f"{manifest.name} {record['resource']}"
                if record["result"] == "skipped":
                    assert applied == {"allowed": True, "message": "", "warnings": []}, where
                else:
                    assert applied == expected_from(record), where
                compared.append(f"{record['resource']}: {record['result']}")
    # Both outcomes were exercised (and, under audit, nothing is denied).
    results = {line.rsplit(": ", 1)[1] for line in compared}
    assert results == ({"allowed", "denied", "skipped"} if mode == "enforce" else
                       {"allowed", "skipped"}), compared  # fmt: skip
    assert "pytorchjob.kubeflow.org/recommender-train: allowed" in compared
    for index in range(len(MANIFESTS)):
        cluster.kubectl("delete", "namespace", f"{namespace}-{index}", "--wait=false")


def spotguard(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webhook", *args], input=stdin, cwd=REPO, capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("provider", PROVIDERS)
def test_policy_check_accepts_every_rendered_install(
    cluster: ControlPlane, provider: str, tmp_path: Path
) -> None:
    """What users apply: each provider overlay, with the audit component, and the chart with
    the same values; `policy check -` takes the rendered stream, `validate --policy` the file."""
    audit = compose(tmp_path / "audit", provider, ("audit",))
    rendered = {
        "kustomize": cluster.kubectl("kustomize", str(DEPLOY / "overlays" / provider),
                                     check=True).stdout,
        "kustomize+audit": cluster.kubectl("kustomize", str(audit), check=True).stdout,
        "helm+audit": yaml.safe_dump_all(helm_template(helm_binary(), {
            "providers": PROVIDER_VALUES[provider], **COMPONENT_VALUES["audit"]})),
    }  # fmt: skip
    for how, stream in rendered.items():
        checked = spotguard("policy", "check", "-", stdin=stream)
        assert checked.returncode == 0, f"{how}: {checked.stderr}"
        assert checked.stdout.startswith("-: configmap/spotguard-policy: policy OK: revision ")
        assert ("mode audit" in checked.stdout) == how.endswith("+audit"), how
        install = tmp_path / f"{how}.yaml"
        install.write_text(stream)
        label = PRESETS[PROVIDER_VALUES[provider][0]].labels[0]
        selector = {label.key: label.values[0]}
        on_spot = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
                   "spec": {"nodeSelector": selector, "containers": []}}  # fmt: skip
        validated = spotguard("validate", "-f", "-", "--policy", str(install),
                              stdin=json.dumps(on_spot))  # fmt: skip
        assert validated.returncode == (0 if how.endswith("+audit") else 1), validated.stdout
