"""Settings shared by several parts, each defined once: the policy ConfigMap key (the
server's --policy-key reaches /validate-policy)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from devtools.server import start_server
from webhook.app import WebhookSettings, create_app
from webhook.policy_sources import DEFAULT_CONFIGMAP_KEY
from webhook.policy_store import PolicyStore

KEY = "spotguard.yaml"


def configmap_review(data: dict[str, str]) -> dict[str, Any]:
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "spotguard-policy", "namespace": "spotguard-system"},
        "data": data,
    }
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "namespace": "spotguard-system",
            "operation": "UPDATE",
            "object": configmap,
            "oldObject": configmap,
        },
    }


def answer(settings: WebhookSettings, data: dict[str, str]) -> dict[str, Any]:
    reply = create_app(settings).test_client().post("/validate-policy", json=configmap_review(data))
    assert reply.status_code == 200, reply.get_data(as_text=True)
    response: dict[str, Any] = reply.get_json()["response"]
    return response


def test_validate_policy_reads_the_key_the_server_reads() -> None:
    settings = WebhookSettings(policies=PolicyStore.from_file(None), policy_key=KEY)
    assert answer(settings, {KEY: "mode: audit\n"})["allowed"] is True
    refused = answer(settings, {DEFAULT_CONFIGMAP_KEY: "mode: audit\n"})
    assert (
        refused["status"]["message"]
        == f"spotguard policy ConfigMap spotguard-policy has no key {KEY}"
    )
    bad = answer(settings, {KEY: "mode: sometimes\n"})
    assert "mode: must be one of" in bad["status"]["message"]
    default = WebhookSettings(policies=PolicyStore.from_file(None))
    assert answer(default, {DEFAULT_CONFIGMAP_KEY: "mode: audit\n"})["allowed"] is True


def test_serve_policy_key_reaches_the_workers(tmp_path: Path) -> None:
    """Before, --policy-key other than policy.yaml made /validate-policy refuse every
    revision of the policy the server itself reads."""
    server = start_server(tmp_path, "--policy-key", KEY)
    try:
        with server.session() as session:
            for data, allowed in (({KEY: "mode: audit\n"}, True),
                                  ({DEFAULT_CONFIGMAP_KEY: "mode: audit\n"}, False)):  # fmt: skip
                reply = session.post(
                    server.url + "/validate-policy", json=configmap_review(data), timeout=10
                )
                assert reply.json()["response"]["allowed"] is allowed, reply.text
    finally:
        server.stop()
