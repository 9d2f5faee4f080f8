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

from devtools.server import REPO
from policies.decisions import ClusterFacts, PodContext
from policies.loader import default_policy
from policies.model import Policy
from policies.validate import validate_pod
from tests.golden import all_cases, load_case
from webhook.api_defaults import with_api_defaults
from webhook.app import WebhookSettings, create_app
from webhook.judge import BINDING, POD, judge_new, reviewed_as, shape_problems_of
from webhook.policy_store import PolicyState, PolicyStore

MANIFESTS = [
    *sorted((REPO / "examples").glob("*.yaml")),
    *sorted((REPO / "tests" / "e2e" / "manifests").glob("*.yaml")),
]


class FactsOnly:
    """ClusterAccess for the app: the case's facts, and the pod a Binding names."""

    def __init__(self, facts: ClusterFacts, pod: dict[str, Any] | None) -> None:
        self.facts = facts
        self._pod = pod

    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._pod


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
    as_what = reviewed_as(obj, policy)
    obj = with_api_defaults(obj, policy)  # what kube-apiserver sends (the e2e test checks it)
    warnings: list[str] = []
    if as_what == POD or (as_what != BINDING and policy.mutate_templates):
        reply = client.post("/mutate", json=_request(obj, namespace, False)).get_json()
        response = reply["response"]
        warnings += response.get("warnings", [])
        if "patch" in response:
            patch = json.loads(base64.b64decode(response["patch"]))
            obj = jsonpatch.apply_patch(obj, patch)
    reply = client.post("/validate", json=_request(obj, namespace, as_what == BINDING)).get_json()
    response = reply["response"]
    warnings += response.get("warnings", [])
    return response["allowed"], response.get("status", {}).get("message", ""), warnings


def _check(obj: dict[str, Any], namespace: str, policy: Policy, cluster: FactsOnly) -> None:
    if reviewed_as(obj, policy) is None:  # not registered: the CLI reports it skipped
        client = create_app(WebhookSettings(policies=PolicyStore(PolicyState(policy, "t"))))
        reply = client.test_client().post("/validate", json=_request(obj, namespace, False))
        assert reply.status_code == 400
        assert "spotguard does not review" in reply.get_json()["error"]
        return
    problems = shape_problems_of(obj, policy)
    if problems:  # the webhook answers 400 with them; the CLI reports the object invalid
        client = create_app(WebhookSettings(policies=PolicyStore(PolicyState(policy, "t"))))
        reply = client.test_client().post("/mutate", json=_request(obj, namespace, False))
        assert reply.status_code == 400
        assert problems[0].removeprefix("object") in reply.get_json()["error"]
        return
    allowed, message, warnings = webhooks_answer(obj, namespace, policy, cluster)
    judgement = judge_new(obj, policy, namespace, cluster.facts)
    assert (not judgement.denied, judgement.message, list(judgement.warnings)) == (
        allowed,
        message,
        warnings,
    )


CREATE_CASES = [path for path in all_cases() if (load_case(path).context.operation == "CREATE")]


@pytest.mark.parametrize("directory", CREATE_CASES, ids=lambda p: p.name)
def test_golden_case_gets_the_webhooks_answer(directory: Path) -> None:
    case = load_case(directory)
    facts = case.context.cluster
    if case.subject == "binding":
        facts = ClusterFacts(
            node_labels=facts.node_labels,
            local_claims=facts.local_claims,
            pod=lambda namespace, name: case.bound_pod,
        )
    _check(case.reviewed, case.context.namespace, case.policy, FactsOnly(facts, case.bound_pod))


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_shipped_manifest_gets_the_webhooks_answer(manifest: Path) -> None:
    policy = default_policy()
    checked = 0
    for obj in yaml.safe_load_all(manifest.read_text()):
        if obj and reviewed_as(obj, policy) is not None:
            _check(obj, "team-a", policy, FactsOnly(ClusterFacts(), None))
            checked += 1
    assert checked, f"{manifest} has nothing spotguard reviews"


def test_the_validating_answer_is_given_to_the_patched_object() -> None:
    """A training pod with the API default grace period (30 s) is not warned about it:
    the mutating webhook sets the notice window first. Judged unpatched, it would be."""
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "t", "labels": {"spotguard.dev/fault-tolerant": "true"}},
        "spec": {"terminationGracePeriodSeconds": 30, "containers": [{"name": "c"}]},
    }
    policy = default_policy()
    judgement = judge_new(pod, policy, "team-a")
    assert judgement.admitted is not None
    assert judgement.admitted["spec"]["terminationGracePeriodSeconds"] == policy.notice_seconds
    assert not any("grace" in w for w in judgement.warnings), judgement.warnings
    unpatched = validate_pod(pod, PodContext("team-a"), policy)
    assert [v.rule.value for v in unpatched.audited] == ["grace-period-fits-notice"]
