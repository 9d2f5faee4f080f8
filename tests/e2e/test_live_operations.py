"""Operating spotguard on a live cluster: policy edits, bad revisions, certificate
rotation and metrics, all while reviews keep flowing through the real API server."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import requests
from cryptography import x509

from controlplane.harness import ControlPlane
from controlplane.polling import wait_for
from policies.annotations import INJECTED
from tests.e2e.conftest import (
    ENFORCE_POLICY,
    POLICY_CONFIGMAP,
    SYSTEM_NAMESPACE,
    Webhook,
    spotguard_cli,
)
from webhook.policy_sources import DEFAULT_CONFIGMAP_KEY

pytestmark = pytest.mark.e2e
RULE_IN_AUDIT = "rules:\n  spotRequiresFaultTolerance: {mode: audit}\n"
POLICY_CHANGE_SECONDS = 3.0  # the README's promise: a ConfigMap edit is in force within 3 s


def training_pod() -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "flow-", "labels": {"spotguard.dev/fault-tolerant": "true"}},
        "spec": {"containers": [{"name": "t", "image": "python:3.11-slim"}]},
    }


def pod_on_spot() -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "web-"},
        "spec": {
            "containers": [{"name": "w", "image": "python:3.11-slim"}],
            "tolerations": [
                {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
            ],
        },
    }


def dry_run(cluster: ControlPlane, namespace: str, pod: dict[str, object]) -> tuple[int, object]:
    return cluster.request("POST", f"/api/v1/namespaces/{namespace}/pods?dryRun=All", pod)


@dataclass
class ReviewFlow:
    """Dry-run creations of a training pod in a loop; each must come back mutated.

    With failurePolicy Ignore, a failed webhook call does not fail the request: the pod
    comes back unmutated. So an unmutated answer is counted as a failed admission.
    """

    cluster: ControlPlane
    namespace: str
    sent: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.is_set():
            status, body = dry_run(self.cluster, self.namespace, training_pod())
            self.sent += 1
            annotations = (
                (body.get("metadata") or {}).get("annotations") or {}
                if isinstance(body, dict)
                else {}
            )
            if status != 201 or INJECTED not in annotations:
                self.failures.append(f"HTTP {status}: {str(body)[:200]}")

    def __enter__(self) -> ReviewFlow:
        self._thread = threading.Thread(target=self.run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(15)


@pytest.fixture
def flow(cluster: ControlPlane, enforce: Webhook, namespace: str) -> Iterator[ReviewFlow]:
    with ReviewFlow(cluster, namespace) as running:
        yield running


def test_policy_edits_apply_live_while_reviews_flow(
    cluster: ControlPlane, webhook: Webhook, namespace: str, flow: ReviewFlow
) -> None:
    assert dry_run(cluster, namespace, pod_on_spot())[0] == 403
    # Only the rejecting rule goes to audit: training pods must stay mutated throughout,
    # which is how the flow tells a review that failed from one that succeeded.
    with webhook.policy(RULE_IN_AUDIT) as seconds:
        print(f"ConfigMap edit in force in every worker after {seconds:.2f} s")
        assert seconds < POLICY_CHANGE_SECONDS
        assert dry_run(cluster, namespace, pod_on_spot())[0] == 201  # audit: admitted
    assert dry_run(cluster, namespace, pod_on_spot())[0] == 403
    time.sleep(0.5)
    assert flow.sent > 10
    assert flow.failures == []


def test_bad_revision_is_refused_and_the_last_good_policy_stays(
    cluster: ControlPlane, enforce: Webhook, namespace: str
) -> None:
    good = enforce.running.revisions()
    bad = "mode: enforce\nspotNodes:\n  taints:\n    - {key: spot, effect: Sometimes}\n"
    assert enforce.apply_policy(bad).returncode == 0
    problem = "spotNodes.taints[0].effect: must be one of NoSchedule, PreferNoSchedule, NoExecute"
    try:
        deadline = time.monotonic() + POLICY_CHANGE_SECONDS
        ready: dict[str, object] = {}
        while time.monotonic() < deadline:
            with enforce.running.session() as session:
                ready = session.get(enforce.running.url + "/readyz", timeout=5).json()
            if ready["policyStale"]:
                break
            time.sleep(0.1)
        assert ready["policyStale"] is True
        assert ready["policyError"] == [problem]
        assert {ready["policyRevision"]} == good
        assert dry_run(cluster, namespace, pod_on_spot())[0] == 403  # still enforcing
        events = cluster.kubectl(
            "get", "events", "-n", SYSTEM_NAMESPACE, "-o", "json",
            "--field-selector", f"involvedObject.name={POLICY_CONFIGMAP},reason=PolicyRefused",
        )  # fmt: skip
        messages = [e["message"] for e in json.loads(events.stdout)["items"]]
        assert any(problem in m for m in messages), messages
        assert problem in enforce.running.log_file.read_text()
        scrape = requests.get(enforce.metrics_url, timeout=5).text
        assert "spotguard_policy_stale 1.0" in scrape
    finally:
        enforce.set_policy(ENFORCE_POLICY)
    # The workers never left the good revision, so set_policy returns at once; the master
    # clears the stale flag when it has read the ConfigMap's new version.
    wait_for(
        lambda: "spotguard_policy_stale 0.0" in requests.get(enforce.metrics_url, timeout=5).text,
        POLICY_CHANGE_SECONDS,
        "spotguard_policy_stale back to 0",
    )


def served_serial(webhook: Webhook, ca_file: str | None = None) -> int:
    context = ssl.create_default_context(cafile=ca_file or str(webhook.running.ca_file))
    with (
        socket.create_connection(("127.0.0.1", webhook.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


def secret_serial(cluster: ControlPlane) -> int:
    jsonpath = "jsonpath={.data.tls\\.crt}"
    result = cluster.kubectl(
        "get", "secret", "spotguard-tls", "-n", SYSTEM_NAMESPACE, "-o", jsonpath, check=True
    )
    return int(x509.load_pem_x509_certificate(base64.b64decode(result.stdout)).serial_number)


def wait_until_served(webhook: Webhook, serial: int, timeout: float = 10) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        webhook.sync.sync_once()
        try:
            if served_serial(webhook) == serial:
                return time.monotonic() - started
        except (ssl.SSLError, OSError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"serving certificate {serial} not served after {timeout} s")


def test_certificate_rotation_with_zero_failed_admissions(
    cluster: ControlPlane, webhook: Webhook, flow: ReviewFlow
) -> None:
    for kind in ("serving", "ca"):
        before = served_serial(webhook)
        result = spotguard_cli(
            cluster, "certs", "ensure", "--ip", "127.0.0.1", "--dns", "localhost", "--rotate", kind
        )
        assert result.returncode == 0, result.stderr
        assert "issued a new serving certificate" in result.stdout
        if kind == "ca":
            assert "rotated the CA" in result.stdout
            assert "patched caBundle" in result.stdout
        new = secret_serial(cluster)
        assert new != before
        seconds = wait_until_served(webhook, new)
        print(f"{kind} rotation: new certificate served {seconds:.2f} s after the Secret changed")
        time.sleep(1.0)  # keep reviews flowing on the new certificate
    assert flow.sent > 20
    assert flow.failures == []
    again = spotguard_cli(cluster, "certs", "ensure", "--ip", "127.0.0.1", "--dns", "localhost")
    assert again.stdout.strip() == "spotguard certs: certificates are current; nothing to do"


def test_metrics_show_the_counters_moving(
    cluster: ControlPlane, enforce: Webhook, namespace: str
) -> None:
    def samples() -> dict[str, float]:
        values: dict[str, float] = {}
        for line in requests.get(enforce.metrics_url, timeout=5).text.splitlines():
            if line.startswith("spotguard_") and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = values.get(name, 0.0) + float(value)
        return values

    before = samples()
    for _ in range(3):
        assert dry_run(cluster, namespace, training_pod())[0] == 201
        assert dry_run(cluster, namespace, pod_on_spot())[0] == 403
    after = samples()

    def moved(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert (
        moved(
            'spotguard_reviews_total{mode="enforce",operation="CREATE",result="patched",webhook="mutate"}'
        )
        >= 3
    )
    assert (
        moved(
            'spotguard_reviews_total{mode="enforce",operation="CREATE",result="denied",webhook="validate"}'
        )
        == 3
    )
    assert (
        moved('spotguard_violations_total{mode="enforce",rule="spot-requires-fault-tolerance"}')
        == 3
    )
    assert moved('spotguard_injections_total{kind="preStop",mode="enforce"}') >= 3
    # The training pod needs no validation: the registration's match conditions skip it.
    assert moved('spotguard_review_duration_seconds_count{webhook="validate"}') >= 3
    assert after['spotguard_policy_reloads_total{result="loaded"}'] >= 1
    assert after["spotguard_certificate_expiry_timestamp_seconds"] > time.time() + 300 * 86400


def test_kubectl_apply_of_a_bad_policy_configmap_fails_before_it_is_stored(
    cluster: ControlPlane, enforce: Webhook
) -> None:
    """The shipped ConfigMap carries spotguard.dev/policy=true: policy.spotguard.dev checks it."""
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "spotguard-policy-draft",
            "namespace": SYSTEM_NAMESPACE,
            "labels": {"spotguard.dev/policy": "true"},
        },
        "data": {DEFAULT_CONFIGMAP_KEY: "spotNodes:\n  presets: [azure]\n"},
    }
    refused = cluster.kubectl("apply", "-f", "-", input=json.dumps(configmap))
    assert refused.returncode != 0
    assert 'admission webhook "policy.spotguard.dev" denied the request' in refused.stderr
    assert "spotNodes.presets[0]: must be one of" in refused.stderr
    configmap["data"] = {DEFAULT_CONFIGMAP_KEY: "mode: audit\n"}
    accepted = cluster.kubectl("apply", "-f", "-", input=json.dumps(configmap))
    assert accepted.returncode == 0, accepted.stderr
    cluster.kubectl("delete", "configmap", "spotguard-policy-draft", "-n", SYSTEM_NAMESPACE)
