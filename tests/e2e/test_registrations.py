"""The rendered registrations on the real API server.

- Every rendered variant is accepted by the API server (its own validation compiles the
  match conditions).
- A sample of pods goes through the real API server: spotguard's review counters move
  for exactly the webhooks webhook-match said the API server would call, so the
  evaluator the property tests rely on decides as the API server does.
- Registration drift: a policy revision the live registration does not cover is refused
  (last good kept, reason in /readyz, an Event, the metric); applying the registration
  rendered for it lets it in; a narrower registration is reported while serving goes on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from controlplane.harness import ControlPlane
from policies.decisions import PodContext
from policies.loader import default_policy, parse_policy_text
from policies.model import Mode
from policies.mutate import mutate_pod
from tests.e2e.conftest import ENFORCE_POLICY, SYSTEM_NAMESPACE, Webhook
from tests.relevance_strategies import pods as pod_strategy
from tests.test_match_conditions import POLICIES, harvest
from testsupport.registration import local_registrations, register
from testsupport.webhook_match import Matcher
from testsupport.webhook_match import request as admission_request
from webhook.registration import MUTATING_WEBHOOK, VALIDATING_WEBHOOK

pytestmark = pytest.mark.e2e

#: A policy whose registration must also send a custom kind the default one does not.
WIDER_POLICY = (
    "workloads: {extraKinds: [{group: example.com, kind: TrainingRun, versions: [v1],"
    " templatePaths: [spec.worker.template]}]}\n"
)


def test_the_api_server_accepts_every_rendered_registration(cluster: ControlPlane) -> None:
    for name, text in POLICIES.items():
        items = local_registrations("https://127.0.0.1:9", None, parse_policy_text(text))
        for item in items:
            item["metadata"]["name"] = "spotguard-accepted"
        manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        result = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=manifest)
        assert result.returncode == 0, (name, result.stderr)


def _reviews(webhook: Webhook) -> dict[str, float]:
    """Reviews answered so far, by webhook (mutate, validate)."""
    counts = {"mutate": 0.0, "validate": 0.0}
    for line in requests.get(webhook.metrics_url, timeout=5).text.splitlines():
        if line.startswith("spotguard_reviews_total{"):
            labels, value = line.rsplit(" ", 1)
            for name in counts:
                if f'webhook="{name}"' in labels:
                    counts[name] += float(value)
    return counts


def _sample_pods() -> list[dict[str, Any]]:
    spot = {"key": "kubernetes.azure.com/scalesetpriority", "operator": "Exists"}

    def pod(labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"generateName": "sample-", "labels": labels or {}},
            "spec": {"containers": [{"name": "c", "image": "registry.example/app:1"}], **spec},
        }

    targeted = [
        pod(),
        pod({"spotguard.dev/fault-tolerant": "true"}),
        pod({"spotguard.dev/fault-tolerant": "true"}, terminationGracePeriodSeconds=300),
        pod(tolerations=[spot]),
        pod(nodeSelector={"eks.amazonaws.com/capacityType": "SPOT"}),
        pod(nodeSelector={"eks.amazonaws.com/capacityType": "ON_DEMAND"}),
        pod(nodeName="on-demand-2"),
    ]
    generated = []
    for drawn in harvest(pod_strategy, 40)[:16]:
        metadata = {k: v for k, v in drawn["metadata"].items() if k in ("labels", "annotations")}
        spec = {k: v for k, v in drawn["spec"].items() if k != "priorityClassName"}
        generated.append(
            {**drawn, "metadata": {**metadata, "generateName": "sample-"}, "spec": spec}
        )
    return targeted + generated


def test_the_api_server_calls_spotguard_as_webhook_match_predicts(
    cluster: ControlPlane, enforce: Webhook, namespace: str
) -> None:
    """The mutating webhook's call is predicted from the pod as sent; the validating
    one's from the pod as spotguard's mutation leaves it (what the API server sends it)."""
    registrations = local_registrations(f"https://127.0.0.1:{enforce.port}", None)
    sample = _sample_pods()
    with Matcher(registrations, echo=True) as matcher:
        first = matcher.decide([admission_request(p, namespace=namespace) for p in sample])
        after_mutation = []
        for decision in first:
            pod = decision.object or {}
            if decision.called(MUTATING_WEBHOOK) and not decision.decode_error:
                result = mutate_pod(pod, PodContext(namespace), default_policy())
                if result.mode is Mode.ENFORCE and result.mutated is not None:
                    pod = result.mutated
            after_mutation.append(admission_request(pod, namespace=namespace))
        second = matcher.decide(after_mutation)
    called = 0
    for pod, prediction, mutated in zip(sample, first, second, strict=True):
        assert not prediction.errors and not mutated.errors
        if prediction.decode_error:
            continue
        before = _reviews(enforce)
        status, body = cluster.request(
            "POST", f"/api/v1/namespaces/{namespace}/pods?dryRun=All", pod
        )
        assert status in (201, 403, 422), body
        after = _reviews(enforce)
        was_mutated = after["mutate"] > before["mutate"]
        was_validated = after["validate"] > before["validate"]
        assert was_mutated == prediction.called(MUTATING_WEBHOOK), pod
        if status != 422:  # 422: invalid, refused by the API server before validating webhooks
            assert was_validated == mutated.called(VALIDATING_WEBHOOK), pod
        called += was_mutated + was_validated
    assert called > 0


def _readyz(webhook: Webhook) -> dict[str, Any]:
    with webhook.running.session() as session:
        body: dict[str, Any] = session.get(webhook.running.url + "/readyz", timeout=5).json()
        return body


def _until(check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"not within {timeout:.0f} s")


def _metric(webhook: Webhook, name: str) -> float | None:
    for line in requests.get(webhook.metrics_url, timeout=5).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.fixture
def registered(cluster: ControlPlane, enforce: Webhook) -> Iterator[str]:
    """The webhook's URL; afterwards the default registration and policy are restored."""
    url = f"https://127.0.0.1:{enforce.port}"
    try:
        yield url
    finally:
        register(cluster, url, None)
        enforce.set_policy(ENFORCE_POLICY)


def test_a_revision_the_registration_does_not_cover_waits_for_its_registration(
    cluster: ControlPlane, enforce: Webhook, registered: str
) -> None:
    ready = _until(lambda: (r := _readyz(enforce)).get("registrationCoversPolicy") and r)
    assert ready["policyRevision"] == default_policy().revision

    # Refused like a bad policy: the last good one stays, /readyz and an Event say why.
    assert enforce.apply_policy(WIDER_POLICY).returncode == 0
    stale = _until(lambda: (r := _readyz(enforce)).get("policyStale") and r)
    assert stale["policyRevision"] == default_policy().revision
    expected = "webhook registration: validating: kind TrainingRun.example.com: not sent"
    assert expected in stale["policyError"]
    assert _metric(enforce, "spotguard_policy_stale") == 1

    def refused_event() -> bool:
        events = cluster.kubectl("get", "events", "-n", SYSTEM_NAMESPACE, "-o", "json", check=True)
        return any(
            e["reason"] == "PolicyRefused" and "TrainingRun" in e["message"]
            for e in json.loads(events.stdout)["items"]
        )

    _until(refused_event)

    # Applying the registration rendered for it lets the waiting revision in.
    register(cluster, registered, None, parse_policy_text(WIDER_POLICY))
    wider = parse_policy_text(WIDER_POLICY).revision
    enforce.running.wait_for_revision(wider, timeout=20)
    _until(lambda: (r := _readyz(enforce)).get("policyStale") is False and r)
    _until(lambda: _readyz(enforce).get("registrationCoversPolicy") is True)

    # A narrower registration is reported, and spotguard keeps serving.
    register(cluster, registered, None)
    narrowed = _until(
        lambda: (r := _readyz(enforce)).get("registrationCoversPolicy") is False and r
    )
    assert narrowed["status"] == "ready" and narrowed["policyRevision"] == wider
    assert "validating: kind TrainingRun.example.com: not sent" in narrowed["registrationProblems"]
    assert _until(lambda: _metric(enforce, "spotguard_registration_covers_policy") == 0)
