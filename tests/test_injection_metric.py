"""``spotguard_injections_total`` counts objects mutated per kind of injection, not items."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from testsupport.reviews import plain_pod, review, training_pod
from webhook.app import WebhookSettings, create_app
from webhook.metrics import Metrics
from webhook.policy_store import PolicyStore


def test_three_mutated_pods_count_three_per_kind() -> None:
    registry = CollectorRegistry()
    metrics = Metrics.create(registry)
    client = create_app(
        WebhookSettings(policies=PolicyStore.from_file(None), metrics=metrics)
    ).test_client()
    for name in ("a", "b"):  # each gets several tolerations and affinity terms
        assert client.post("/mutate", json=review(training_pod(name))).status_code == 200
    assert client.post("/mutate", json=review(plain_pod("c"))).status_code == 200

    def count(kind: str) -> float:
        value = registry.get_sample_value(
            "spotguard_injections_total", {"kind": kind, "mode": "enforce"}
        )
        return value or 0.0

    assert count("tolerations") == 2
    assert count("preStop") == 2
    assert count("terminationGracePeriodSeconds") == 2
    # Both training pods (preferred spot terms, CriticalAddonsOnly) and the plain pod
    # (keep-off-spot NotIn requirements) got node affinity: three pods, not 22 terms.
    assert count("nodeAffinity") == 3
