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
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.harness import ControlPlane
from devtools.server import REPO
from tests.e2e.conftest import AUDIT_POLICY, ENFORCE_POLICY, Webhook

pytestmark = pytest.mark.e2e
HERE = Path(__file__).parent
MANIFESTS = [
    *sorted((REPO / "examples").glob("*.yaml")),
    *sorted((HERE / "manifests").glob("*.yaml")),
]
DENIED = 'admission webhook "validate.spotguard.dev" denied the request: '


def kubectl_apply(
    cluster: ControlPlane, namespace: str, document: dict[str, Any]
) -> dict[str, Any]:
    """What kubectl shows for one object: whether it was created, the denial, the warnings."""
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(document))
    lines = result.stderr.splitlines()
    denials = [line.split(DENIED, 1)[1] for line in lines if DENIED in line]
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
        for manifest in MANIFESTS:
            documents = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
            records = offline(namespace, manifest, policy_file)
            assert len(records) == len(documents), manifest
            for document, record in zip(documents, records, strict=True):
                applied = kubectl_apply(cluster, namespace, document)
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
