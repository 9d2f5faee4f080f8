"""Workloads and bindings through the HTTP layer, with cluster facts from a stand-in."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from devtools.reviews import plain_pod, review
from policies.decisions import ClusterFacts
from webhook.app import WebhookSettings, create_app
from webhook.policy_store import PolicyStore

SPOT_NODE = {"eks.amazonaws.com/capacityType": "SPOT"}


class StandInCluster:
    """Node labels and pods as a watch cache would serve them."""

    def __init__(self, pods: dict[str, dict[str, Any]]) -> None:
        self.facts = ClusterFacts.from_data({"spot-1": SPOT_NODE, "od-1": {}}, pods=pods)
        self._pods = pods

    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._pods.get(f"{namespace}/{name}")


def client_with(pods: dict[str, dict[str, Any]]) -> FlaskClient:
    settings = WebhookSettings(policies=PolicyStore.from_file(None), cluster=StandInCluster(pods))
    return create_app(settings).test_client()


def job_tolerating_spot() -> dict[str, Any]:
    template = plain_pod(tolerate_spot=True)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "etl", "namespace": "ml"},
        "spec": {"template": {"metadata": {}, "spec": template["spec"]}},
    }


def test_a_job_whose_template_would_be_rejected_is_rejected_at_apply_time() -> None:
    body = review(job_tolerating_spot())
    body["request"]["kind"] = {"group": "batch", "version": "v1", "kind": "Job"}
    reply = client_with({}).post("/validate", json=body).get_json()["response"]
    assert reply["allowed"] is False
    assert "spec.template.spec.tolerations[0]" in reply["status"]["message"]
    assert "Job etl" in reply["status"]["message"]


def binding(pod_name: str, node: str) -> dict[str, Any]:
    body = review(
        {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": pod_name, "namespace": "ml"},
         "target": {"apiVersion": "v1", "kind": "Node", "name": node}},
    )  # fmt: skip
    body["request"]["subResource"] = "binding"
    body["request"]["name"] = pod_name
    return body


def test_binding_a_pod_that_must_stay_off_spot_to_a_spot_node_is_denied() -> None:
    client = client_with({"ml/web-0": plain_pod()})
    denied = client.post("/validate", json=binding("web-0", "spot-1")).get_json()["response"]
    assert denied["allowed"] is False
    assert "spot-1" in denied["status"]["message"]
    allowed = client.post("/validate", json=binding("web-0", "od-1")).get_json()["response"]
    assert allowed["allowed"] is True


def test_binding_of_an_unknown_pod_is_allowed_with_a_warning() -> None:
    reply = client_with({}).post("/validate", json=binding("ghost", "spot-1")).get_json()
    assert reply["response"]["allowed"] is True
    assert "not found" in reply["response"]["warnings"][0]
