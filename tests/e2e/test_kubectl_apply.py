"""What users see on `kubectl apply`, against a real kube-apiserver calling the webhook.

Requires the control plane built from Go modules (make controlplane); .ci/run builds it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from controlplane.harness import ControlPlane
from devtools.registration import INJECTED_ANNOTATION, wait_until_called
from devtools.server import REPO
from tests.e2e.conftest import (
    AUDIT_POLICY,
    Webhook,
    get,
    node_group_of,
    wait_scheduled,
)

pytestmark = pytest.mark.e2e
EXAMPLES = REPO / "examples"
SPOT_GROUPS = {"spot-tainted", "spot-untainted"}


def apply(
    cluster: ControlPlane, namespace: str, manifest: Path, *extra: str
) -> tuple[int, str, str]:
    result = cluster.kubectl("apply", "-n", namespace, "-f", str(manifest), *extra)
    return result.returncode, result.stdout, result.stderr


def test_training_pod_is_mutated_and_reapplying_adds_nothing(
    cluster: ControlPlane, enforce: Webhook, namespace: str
) -> None:
    code, _, stderr = apply(cluster, namespace, EXAMPLES / "training-pod.yaml")
    assert code == 0, stderr
    pod = get(cluster, "pod", "bert-finetune-0", namespace)
    spec = pod["spec"]
    taints = {(t.get("key"), t.get("value"), t.get("effect")) for t in spec["tolerations"]}
    assert ("kubernetes.azure.com/scalesetpriority", "spot", "NoSchedule") in taints
    assert ("spot", "true", "NoExecute") in taints
    affinity = spec["affinity"]["nodeAffinity"]
    preferred = [
        t["preference"]["matchExpressions"][0]["key"]
        for t in affinity["preferredDuringSchedulingIgnoredDuringExecution"]
    ]
    assert "eks.amazonaws.com/capacityType" in preferred
    required = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert {"key": "CriticalAddonsOnly", "operator": "DoesNotExist"} in required[0][
        "matchExpressions"
    ]
    assert spec["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][0] == "/bin/sh"
    assert spec["terminationGracePeriodSeconds"] == 15
    assert INJECTED_ANNOTATION in pod["metadata"]["annotations"]

    code, _, stderr = apply(cluster, namespace, EXAMPLES / "training-pod.yaml")
    assert code == 0, stderr
    again = get(cluster, "pod", "bert-finetune-0", namespace)["spec"]
    assert again["tolerations"] == spec["tolerations"]
    assert again["affinity"] == spec["affinity"]
    assert len(again["containers"][0]["env"]) == len(spec["containers"][0]["env"])


def test_job_pods_are_mutated_and_placed_on_spot(
    cluster: ControlPlane, enforce: Webhook, namespace: str
) -> None:
    code, _, stderr = apply(cluster, namespace, EXAMPLES / "training-job.yaml")
    assert code == 0, stderr
    pods = wait_scheduled(cluster, namespace, "app=resnet-train", count=3)
    for pod in pods:
        assert INJECTED_ANNOTATION in pod["metadata"]["annotations"], pod["metadata"]
        assert node_group_of(pod) in SPOT_GROUPS, pod["spec"]["nodeName"]


def test_non_fault_tolerant_pods_never_land_on_spot(
    cluster: ControlPlane, enforce: Webhook, namespace: str
) -> None:
    code, _, stderr = apply(cluster, namespace, EXAMPLES / "web-deployment.yaml")
    assert code == 0, stderr
    pods = wait_scheduled(cluster, namespace, "app=storefront", count=6)
    groups = {pod["spec"]["nodeName"]: node_group_of(pod) for pod in pods}
    assert set(groups.values()) == {"on-demand"}, groups
    terms = pods[0]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    keys = {
        e["key"]
        for e in terms["nodeSelectorTerms"][0]["matchExpressions"]
        if e["operator"] == "NotIn"
    }
    assert "eks.amazonaws.com/capacityType" in keys
    # AKS spot nodes always carry their taint, which keeps the pod off them: no affinity.
    assert "kubernetes.azure.com/scalesetpriority" not in keys


def test_pod_aimed_at_spot_is_rejected_with_the_webhooks_message(
    cluster: ControlPlane, enforce: Webhook, namespace: str
) -> None:
    code, _, stderr = apply(cluster, namespace, EXAMPLES / "web-on-spot.yaml")
    assert code != 0
    assert 'admission webhook "validate.spotguard.dev" denied the request' in stderr
    assert "[spot-requires-fault-tolerance] spec.tolerations[0]" in stderr
    assert "add label spotguard.dev/fault-tolerant=true" in stderr
    missing = cluster.kubectl("get", "pod", "checkout-api", "-n", namespace)
    assert missing.returncode != 0 and "NotFound" in missing.stderr


def test_audit_mode_admits_and_kubectl_prints_the_warning(
    cluster: ControlPlane, webhook: Webhook, namespace: str
) -> None:
    with webhook.policy(AUDIT_POLICY):
        code, _, stderr = apply(cluster, namespace, EXAMPLES / "web-on-spot.yaml")
        assert code == 0, stderr
        assert "Warning: spotguard audit [spot-requires-fault-tolerance]" in stderr
        code, _, stderr = apply(cluster, namespace, EXAMPLES / "training-pod.yaml")
        assert code == 0, stderr
        assert "Warning: spotguard audit [inject]: would inject tolerations" in stderr
        pod = get(cluster, "pod", "bert-finetune-0", namespace)
        assert INJECTED_ANNOTATION not in (pod["metadata"].get("annotations") or {})


def test_server_side_dry_run_shows_the_mutation_and_stores_nothing(
    cluster: ControlPlane, enforce: Webhook, namespace: str
) -> None:
    code, stdout, stderr = apply(
        cluster, namespace, EXAMPLES / "training-pod.yaml", "--dry-run=server", "-o", "json"
    )
    assert code == 0, stderr
    shown = json.loads(stdout)
    assert INJECTED_ANNOTATION in shown["metadata"]["annotations"]
    assert any(t.get("key") == "spot" for t in shown["spec"]["tolerations"])
    missing = cluster.kubectl("get", "pod", "bert-finetune-0", "-n", namespace)
    assert missing.returncode != 0 and "NotFound" in missing.stderr


def test_label_changes_on_scheduled_pods_are_not_blocked(
    cluster: ControlPlane, webhook: Webhook, namespace: str
) -> None:
    # A pod that enforce mode would reject today, admitted earlier (here: in audit mode).
    with webhook.policy(AUDIT_POLICY):
        code, _, stderr = apply(cluster, namespace, EXAMPLES / "web-on-spot.yaml")
        assert code == 0, stderr
    wait_scheduled(cluster, namespace, "app=checkout-api", count=1)
    labelled = cluster.kubectl("label", "pod", "checkout-api", "-n", namespace, "release=canary")
    assert labelled.returncode == 0, labelled.stderr
    annotated = cluster.kubectl(
        "annotate", "pod", "checkout-api", "-n", namespace, "example.com/note=x"
    )
    assert annotated.returncode == 0, annotated.stderr
    assert (
        get(cluster, "pod", "checkout-api", namespace)["metadata"]["labels"]["release"] == "canary"
    )


def test_excluded_namespace_is_never_reviewed(cluster: ControlPlane, enforce: Webhook) -> None:
    cluster.ensure_namespace("e2e-opted-out")
    cluster.kubectl(
        "label",
        "namespace",
        "e2e-opted-out",
        "spotguard.dev/ignore=true",
        "--overwrite",
        check=True,
    )
    code, _, stderr = apply(cluster, "e2e-opted-out", EXAMPLES / "web-on-spot.yaml")
    assert code == 0, stderr
    code, _, stderr = apply(cluster, "e2e-opted-out", EXAMPLES / "training-pod.yaml")
    assert code == 0, stderr
    pod = get(cluster, "pod", "bert-finetune-0", "e2e-opted-out")
    assert INJECTED_ANNOTATION not in (pod["metadata"].get("annotations") or {})


def test_webhook_outage_follows_the_failure_policy(
    cluster: ControlPlane, webhook: Webhook, namespace: str
) -> None:
    """Both webhooks are failurePolicy: Ignore: while spotguard is down, pods are admitted
    as they would be without it (unmutated), promptly, never blocked."""
    server = webhook.running
    stopping = time.monotonic()
    server.stop()
    print(f"webhook stopped in {time.monotonic() - stopping:.1f} s")
    try:
        started = time.monotonic()
        code, _, stderr = apply(cluster, namespace, EXAMPLES / "training-pod.yaml")
        elapsed = time.monotonic() - started
        assert code == 0, stderr
        pod = get(cluster, "pod", "bert-finetune-0", namespace)
        assert INJECTED_ANNOTATION not in (pod["metadata"].get("annotations") or {})
        code, _, stderr = apply(cluster, namespace, EXAMPLES / "web-on-spot.yaml")
        assert code == 0, stderr  # validation is skipped too: documented trade-off
        assert elapsed < 5, f"pod creation took {elapsed:.1f} s with the webhook down"
        cluster.ensure_namespace("kube-system")
        code, _, stderr = apply(cluster, "kube-system", EXAMPLES / "web-on-spot.yaml")
        assert code == 0, stderr
    finally:
        cluster.kubectl("delete", "pod", "checkout-api", "-n", "kube-system", "--ignore-not-found")
        webhook.start()
        wait_until_called(cluster, "spotguard-canary")
