"""The webhook's HTTP behaviour through the Flask test client (no network)."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import jsonpatch
import pytest
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry

from devtools.reviews import plain_pod, review, training_pod
from policies.loader import parse_policy_text
from webhook.app import WebhookSettings, create_app
from webhook.metrics import Metrics
from webhook.policy_store import PolicyStore


def _revision(store: PolicyStore) -> str:
    policy = store.snapshot().policy
    assert policy is not None
    return policy.revision


def post(client: FlaskClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    reply = client.post(path, json=body)
    assert reply.status_code == 200, reply.get_data(as_text=True)
    data = reply.get_json()
    assert data["kind"] == "AdmissionReview"
    assert data["response"]["uid"] == body["request"]["uid"]
    result: dict[str, Any] = data["response"]
    return result


def decode_patch(response: dict[str, Any]) -> list[dict[str, Any]]:
    assert response["patchType"] == "JSONPatch"
    patch: list[dict[str, Any]] = json.loads(base64.b64decode(response["patch"]))
    return patch


def test_mutate_patches_a_training_pod_and_the_patch_applies(client: FlaskClient) -> None:
    pod = training_pod()
    response = post(client, "/mutate", review(pod))
    assert response["allowed"] is True
    mutated = jsonpatch.apply_patch(pod, decode_patch(response))
    assert any(t["key"] == "spot" for t in mutated["spec"]["tolerations"])
    assert (
        mutated["spec"]["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][0] == "/bin/sh"
    )
    assert mutated["spec"]["terminationGracePeriodSeconds"] == 15
    assert "spotguard.dev/injected" in mutated["metadata"]["annotations"]
    # Reinvocation on the mutated pod: allowed, no patch.
    again = post(client, "/mutate", review(mutated))
    assert again == {"uid": again["uid"], "allowed": True}


def test_validate_denies_with_a_message_naming_rule_field_and_fix(client: FlaskClient) -> None:
    response = post(client, "/validate", review(plain_pod(tolerate_spot=True)))
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    message = response["status"]["message"]
    assert "spot-requires-fault-tolerance" in message
    assert "spec.tolerations[0]" in message
    assert "spotguard.dev/fault-tolerant=true" in message


def test_validate_allows_a_pod_that_stays_off_spot(client: FlaskClient) -> None:
    response = post(client, "/validate", review(plain_pod()))
    assert response == {"uid": response["uid"], "allowed": True}


@pytest.mark.parametrize("operation", ["DELETE", "CONNECT"])
def test_delete_and_connect_are_allowed(client: FlaskClient, operation: str) -> None:
    pod = plain_pod(tolerate_spot=True)
    body = review(None if operation == "DELETE" else pod, operation=operation, old=pod)
    assert post(client, "/validate", body)["allowed"] is True


def test_update_of_labels_is_never_rejected(client: FlaskClient) -> None:
    old = plain_pod(tolerate_spot=True)
    new = copy.deepcopy(old)
    new["metadata"]["labels"] = {"release": "canary"}
    new["status"] = {"phase": "Running"}
    assert post(client, "/validate", review(new, operation="UPDATE", old=old))["allowed"] is True


def test_audit_mode_admits_unchanged_with_warnings_and_audit_annotations(
    client: FlaskClient, store: PolicyStore
) -> None:
    assert store.load_text("mode: audit\n", "test")
    mutated = post(client, "/mutate", review(training_pod()))
    assert "patch" not in mutated
    assert mutated["allowed"] is True
    assert any("would inject" in w and "tolerations" in w for w in mutated["warnings"])
    assert "tolerations" in mutated["auditAnnotations"]["would-inject"]

    validated = post(client, "/validate", review(plain_pod(tolerate_spot=True)))
    assert validated["allowed"] is True
    assert validated["warnings"][0].startswith("spotguard audit [spot-requires-fault-tolerance]")
    assert "spec.tolerations[0]" in validated["auditAnnotations"]["would-reject"]
    assert all(len(w) <= 120 for w in validated["warnings"] + mutated["warnings"])


def test_dry_run_requests_get_the_same_answer(client: FlaskClient) -> None:
    for path, pod in (("/mutate", training_pod()), ("/validate", plain_pod(tolerate_spot=True))):
        real = post(client, path, review(pod, uid="same"))
        dry = post(client, path, review(pod, uid="same", dry_run=True))
        assert dry == real


def test_reply_uses_the_review_version_received(client: FlaskClient) -> None:
    body = review(training_pod(), api_version="admission.k8s.io/v1beta1")
    reply = client.post("/mutate", json=body).get_json()
    assert reply["apiVersion"] == "admission.k8s.io/v1beta1"


def test_excluded_namespace_is_left_alone(client: FlaskClient) -> None:
    for path in ("/mutate", "/validate"):
        body = review(plain_pod(tolerate_spot=True), namespace="kube-system")
        assert post(client, path, body) == {"uid": body["request"]["uid"], "allowed": True}


def test_an_internal_error_still_answers_a_well_formed_review(
    store: PolicyStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_: Any) -> Any:
        raise RuntimeError("bug")

    metrics = Metrics.create(CollectorRegistry())
    client = create_app(WebhookSettings(policies=store, metrics=metrics)).test_client()
    monkeypatch.setattr("webhook.admission.review", broken)
    body = review(training_pod(), uid="uid-of-the-failed-review")
    response = post(client, "/mutate", body)
    assert response["allowed"] is True
    assert "internal error" in response["warnings"][0]
    assert (
        metrics.registry.get_sample_value("spotguard_internal_errors_total", {"webhook": "mutate"})
        == 1
    )
    failed = [r for r in caplog.records if r.getMessage().startswith("review failed")]
    assert [r.fields["uid"] for r in failed] == ["uid-of-the-failed-review"]  # type: ignore[attr-defined]


def test_a_bad_policy_revision_keeps_the_last_good_one(
    client: FlaskClient, store: PolicyStore
) -> None:
    good = _revision(store)
    assert not store.load_text("spotNodes:\n  taints: [{key: x, effect: Sometimes}]\n", "test")
    assert _revision(store) == good
    ready = client.get("/readyz").get_json()
    assert ready["policyStale"] is True
    assert ready["policyError"] == [
        "spotNodes.taints[0].effect: must be one of NoSchedule, PreferNoSchedule, NoExecute"
    ]
    assert post(client, "/validate", review(plain_pod(tolerate_spot=True)))["allowed"] is False


def test_health_endpoints(client: FlaskClient) -> None:
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["policyRevision"] == parse_policy_text("").revision
