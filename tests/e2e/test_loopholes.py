"""Each way a pod that is not fault-tolerant could still reach spot: open without
spotguard (a namespace it ignores), closed with it. Real scheduler, real bindings."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.harness import ControlPlane
from controlplane.nodegroups import node_group
from controlplane.queries import wait_scheduled
from tests.e2e.conftest import Webhook, get, node_group_of

pytestmark = pytest.mark.e2e
HERE = Path(__file__).parent
SPOT_UNTAINTED = node_group("spot-untainted").node_names[0]


@pytest.fixture
def unguarded(cluster: ControlPlane) -> Iterator[str]:
    """A namespace spotguard ignores (spotguard.dev/ignore): the cluster as without it."""
    name = f"e2e-open-{uuid.uuid4().hex[:6]}"
    cluster.ensure_namespace(name)
    cluster.kubectl("label", "namespace", name, "spotguard.dev/ignore=true", check=True)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


def create(cluster: ControlPlane, namespace: str, pod: dict[str, Any]) -> tuple[int, Any]:
    return cluster.request("POST", f"/api/v1/namespaces/{namespace}/pods", pod)


def prefers_spot(name: str) -> dict[str, Any]:
    """Not fault-tolerant, no toleration; a mere preference the scheduler will follow."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "containers": [{"name": "c", "image": "python:3.11-slim"}],
            "affinity": {
                "nodeAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 100,
                            "preference": {
                                "matchExpressions": [
                                    {
                                        "key": "eks.amazonaws.com/capacityType",
                                        "operator": "In",
                                        "values": ["SPOT"],
                                    }
                                ]
                            },
                        }
                    ]
                }
            },
        },
    }


def test_untainted_spot_nodes(
    cluster: ControlPlane, enforce: Webhook, namespace: str, unguarded: str
) -> None:
    assert create(cluster, unguarded, prefers_spot("cheap"))[0] == 201
    assert node_group_of(wait_scheduled(cluster, unguarded, "app=cheap", 1)[0]) == "spot-untainted"
    assert create(cluster, namespace, prefers_spot("cheap"))[0] == 201
    assert node_group_of(wait_scheduled(cluster, namespace, "app=cheap", 1)[0]) == "on-demand"


def pinned(name: str, node: str) -> dict[str, Any]:
    pod = prefers_spot(name)
    del pod["spec"]["affinity"]
    pod["spec"]["nodeName"] = node
    return pod


def test_node_name_set_to_a_spot_node(
    cluster: ControlPlane, enforce: Webhook, namespace: str, unguarded: str
) -> None:
    assert create(cluster, unguarded, pinned("pinned", SPOT_UNTAINTED))[0] == 201
    status, body = create(cluster, namespace, pinned("pinned", SPOT_UNTAINTED))
    assert status == 403
    assert SPOT_UNTAINTED in body["message"] and "spotguard denied pod pinned" in body["message"]


def bind(cluster: ControlPlane, namespace: str, pod: str, node: str) -> tuple[int, Any]:
    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": pod},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    }
    return cluster.request("POST", f"/api/v1/namespaces/{namespace}/pods/{pod}/binding", binding)


def unscheduled(name: str) -> dict[str, Any]:
    pod = pinned(name, "")
    del pod["spec"]["nodeName"]
    pod["spec"]["schedulerName"] = "nobody"  # no scheduler picks it up: we bind it by hand
    return pod


def test_binding_to_a_spot_node(
    cluster: ControlPlane, enforce: Webhook, namespace: str, unguarded: str
) -> None:
    assert create(cluster, unguarded, unscheduled("manual"))[0] == 201
    assert bind(cluster, unguarded, "manual", SPOT_UNTAINTED)[0] == 201
    assert create(cluster, namespace, unscheduled("manual"))[0] == 201
    status, body = bind(cluster, namespace, "manual", SPOT_UNTAINTED)
    assert status == 403, body
    assert "spot-node-binding" in body["message"]
    on_demand = node_group("on-demand").node_names[1]
    assert bind(cluster, namespace, "manual", on_demand)[0] == 201
    assert get(cluster, "pod", "manual", namespace)["spec"]["nodeName"] == on_demand


def test_apply_of_a_job_that_would_make_rejected_pods_fails(
    cluster: ControlPlane, enforce: Webhook, namespace: str
) -> None:
    result = cluster.kubectl(
        "apply", "-n", namespace, "-f", str(HERE / "manifests" / "job-on-spot.yaml")
    )
    assert result.returncode != 0
    assert 'admission webhook "workloads.spotguard.dev" denied the request' in result.stderr
    assert "spotguard denied Job nightly-report" in result.stderr
    assert "spec.template.spec.tolerations[0]" in result.stderr


def test_apply_of_a_pytorchjob_that_would_make_rejected_pods_fails(
    cluster: ControlPlane, enforce: Webhook, namespace: str
) -> None:
    crd = cluster.kubectl("apply", "-f", str(HERE / "crds" / "kubeflow-pytorchjob.yaml"))
    assert crd.returncode == 0, crd.stderr
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "crd/pytorchjobs.kubeflow.org",
        "--timeout=30s",
        check=True,
    )
    result = cluster.kubectl(
        "apply", "-n", namespace, "-f", str(HERE / "manifests" / "pytorchjob-on-spot.yaml")
    )
    assert result.returncode != 0, result.stdout
    assert "spec.pytorchReplicaSpecs.Worker.template.spec.tolerations[0]" in result.stderr
    assert json.dumps("PyTorchJob bert-pretrain")[1:-1] in result.stderr
