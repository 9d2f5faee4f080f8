"""The offline answer equals the webhooks' chained answer, for every golden case and example.

The API server applies its defaults, calls the mutating webhook, applies its patch, and
calls the validating webhook with the patched object. Here the webhooks are the real Flask
app (no network): each object, with the server's defaults, goes through ``/mutate``
(where the registration sends its kind), the patch
is applied with ``jsonpatch``, and the result goes through ``/validate``. The CLI's
judgement (:func:`webhook.judge.judge_new`) must give the same decision, the same denial
message and the same warnings, in the same order. (tests/e2e/test_offline_cli.py does the
same through a real kube-apiserver.)
"""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml

from policies.decisions import ClusterFacts
from policies.loader import default_policy
from policies.model import Policy
from policies.review import BINDING_KIND, POD_KIND, GroupVersionKind
from tests.golden import all_cases, load_case
from testsupport.server import REPO
from webhook.api_defaults import with_api_defaults
from webhook.app import WebhookSettings, create_app
from webhook.judge import Malformed, judge_new
from webhook.policy_store import PolicyState, PolicyStore

MANIFESTS = [
    *sorted((REPO / "examples").glob("*.yaml")),
    *sorted((REPO / "tests" / "e2e" / "manifests").glob("*.yaml")),
]


class FactsOnly:
    """ClusterAccess for the app: the case's facts (the pod a Binding names included)."""

    def __init__(self, facts: ClusterFacts) -> None:
        self.facts = facts

    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.facts.pod(namespace, name)

    def unsynced(self) -> tuple[str, ...]:
        return ()

    def wait_synced(self, timeout: float) -> bool:
        return True


def _request(obj: dict[str, Any], namespace: str, binding: bool) -> dict[str, Any]:
    group, _, version = str(obj["apiVersion"]).rpartition("/")
    request: dict[str, Any] = {
        "uid": str(uuid.uuid4()),
        "kind": {"group": group, "version": version, "kind": obj["kind"]},
        "namespace": namespace,
        "operation": "CREATE",
        "object": obj,
    }
    if binding:
        request["subResource"] = "binding"
        request["name"] = obj["metadata"]["name"]
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def webhooks_answer(
    obj: dict[str, Any], namespace: str, policy: Policy, cluster: FactsOnly
) -> tuple[bool, str, list[str]]:
    """(allowed, denial message, warnings) of /mutate then /validate, chained."""
    store = PolicyStore(PolicyState(policy, "test"))
    client = create_app(WebhookSettings(policies=store, cluster=cluster)).test_client()
    kind = GroupVersionKind.of(obj)
    binding = kind == BINDING_KIND
    obj = with_api_defaults(obj, policy)  # what kube-apiserver sends (the e2e test checks it)
    warnings: list[str] = []
    # The registration sends pods to the mutating webhook, workloads only when the policy
    # mutates templates, bindings never.
    if kind == POD_KIND or (not binding and policy.mutate_templates):
        reply = client.post("/mutate", json=_request(obj, namespace, False)).get_json()
        response = reply["response"]
        warnings += response.get("warnings", [])
        if "patch" in response:
            patch = json.loads(base64.b64decode(response["patch"]))
            obj = jsonpatch.apply_patch(obj, patch)
    reply = client.post("/validate", json=_request(obj, namespace, binding)).get_json()
    response = reply["response"]
    warnings += response.get("warnings", [])
    return response["allowed"], response.get("status", {}).get("message", ""), warnings


def _check(obj: dict[str, Any], namespace: str, policy: Policy, cluster: FactsOnly) -> str:
    """Compare; what was compared: reviewed, skipped (not reviewed) or invalid (a 400)."""
    defaulted = with_api_defaults(obj, policy)
    try:
        judgement = judge_new(obj, policy, namespace, cluster.facts)
    except Malformed as error:  # the webhooks answer HTTP 400 with the same problems
        client = create_app(WebhookSettings(policies=PolicyStore(PolicyState(policy, "t"))))
        webhook = "/validate" if GroupVersionKind.of(obj) == BINDING_KIND else "/mutate"
        binding = webhook == "/validate"
        reply = client.test_client().post(webhook, json=_request(defaulted, namespace, binding))
        assert reply.status_code == 400
        assert error.problems[0] in reply.get_json()["error"]
        return "invalid"
    if not judgement.reviewed and judgement.exempt.startswith("spotguard does not review"):
        client = create_app(WebhookSettings(policies=PolicyStore(PolicyState(policy, "t"))))
        reply = client.test_client().post("/validate", json=_request(obj, namespace, False))
        assert reply.status_code == 400
        assert judgement.exempt in reply.get_json()["error"]
        return "skipped"
    allowed, message, warnings = webhooks_answer(obj, namespace, policy, cluster)
    assert (not judgement.denied, judgement.message, list(judgement.warnings)) == (
        allowed,
        message,
        warnings,
    )
    return "reviewed" if judgement.reviewed else "skipped"


#: Cases about new objects with no identity behind them: what the CLI can be asked.
OFFLINE_CASES = [
    path
    for path in all_cases()
    if (case := load_case(path)).request.operation == "CREATE" and case.request.requester is None
]


@pytest.mark.parametrize("directory", OFFLINE_CASES, ids=lambda p: p.name)
def test_golden_case_gets_the_webhooks_answer(directory: Path) -> None:
    case = load_case(directory)
    _check(case.reviewed, case.request.namespace, case.policy, FactsOnly(case.facts))


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_shipped_manifest_gets_the_webhooks_answer(manifest: Path) -> None:
    policy = default_policy()
    outcomes = [
        _check(obj, "team-a", policy, FactsOnly(ClusterFacts()))
        for obj in yaml.safe_load_all(manifest.read_text())
        if obj
    ]
    assert "reviewed" in outcomes, f"{manifest} has nothing spotguard reviews"
