"""The cluster audit's logic against an in-memory API (tests/fake_kube.py): what is listed
and judged, what exemptions hold for stored objects, the reports, Events and gauge it
publishes. tests/e2e/test_audit.py runs it against the real control plane."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from policies.loader import default_policy, parse_policy_text
from tests.fake_kube import FakeKube
from webhook.audit.background import BackgroundAudit
from webhook.audit.events import ViolationEvents
from webhook.audit.inventory import Inventory
from webhook.audit.reports import MAX_RESULTS, ReportPublisher, build_reports
from webhook.audit.scan import FAIL, WARN, AuditResult, Finding, ObjectRef, run_audit
from webhook.metrics import Metrics
from webhook.policy_store import PolicyState, PolicyStore

SPOT = {"eks.amazonaws.com/capacityType": "SPOT"}
ON_DEMAND = {"eks.amazonaws.com/capacityType": "ON_DEMAND"}
TOLERATE_SPOT = [{"key": "spot", "operator": "Exists"}]


def pod(name: str, namespace: str = "shop", **spec: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    for key in ("labels", "annotations", "ownerReferences"):
        if key in spec:
            metadata[key] = spec.pop(key)
    phase = spec.pop("phase", "Running")
    return {
        "metadata": metadata,
        "spec": {"containers": [{"name": "c"}], **spec},
        "status": {"phase": phase},
    }


def owner(kind: str, name: str, uid: str, api_version: str = "apps/v1") -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "name": name, "uid": uid, "controller": True}


@pytest.fixture
def kube() -> FakeKube:
    fake = FakeKube()
    fake.add("v1", "nodes", {"metadata": {"name": "spot-1", "labels": SPOT, "uid": "node-uid"}})
    fake.add("v1", "nodes", {"metadata": {"name": "od-1", "labels": ON_DEMAND}})
    return fake


def audit(kube: FakeKube, policy_text: str = "", **inventory: Any) -> AuditResult:
    policy = parse_policy_text(policy_text) if policy_text else default_policy()
    return run_audit(Inventory(kube, **inventory), policy)


def found(result: AuditResult) -> set[tuple[str, str, str]]:
    return {(f.name, f.rule, f.result) for f in result.findings}


def test_pods_are_judged_where_they_run_now(kube: FakeKube) -> None:
    kube.add_all("v1", "pods", [
        pod("on-spot", nodeName="spot-1"),
        pod("on-demand", nodeName="od-1"),
        pod("tolerates", tolerations=TOLERATE_SPOT, nodeName="od-1"),
        pod("trainer", nodeName="spot-1", labels={"spotguard.dev/fault-tolerant": "true"},
            terminationGracePeriodSeconds=15),
        pod("finished", nodeName="spot-1", phase="Succeeded"),
        pod("pending"),
    ])  # fmt: skip
    result = audit(kube)
    assert found(result) == {
        ("on-spot", "spot-node-binding", FAIL),
        ("tolerates", "spot-requires-fault-tolerance", FAIL),
    }
    assert result.judged == {"shop": 5}  # the Succeeded pod holds no node
    assert result.passed == {"shop": 3}
    (on_spot,) = [f for f in result.findings if f.name == "on-spot"]
    assert "spot node spot-1 (eks.amazonaws.com/capacityType=SPOT)" in on_spot.message


def test_audit_mode_rules_are_warnings(kube: FakeKube) -> None:
    kube.add("v1", "pods", pod("tolerates", tolerations=TOLERATE_SPOT))
    result = audit(kube, "mode: audit\n")
    assert found(result) == {("tolerates", "spot-requires-fault-tolerance", WARN)}
    assert result.count(FAIL) == 0 and result.count(WARN) == 1


def test_exemptions_hold_only_when_the_cluster_confirms_them(kube: FakeKube) -> None:
    kube.add("apps/v1", "daemonsets", {"metadata": {"name": "agent", "namespace": "shop",
                                                    "uid": "ds-uid"}})  # fmt: skip
    kube.add_all("v1", "pods", [
        pod("agent-x", nodeName="spot-1", ownerReferences=[owner("DaemonSet", "agent", "ds-uid")]),
        pod("forged-ds", nodeName="spot-1",
            ownerReferences=[owner("DaemonSet", "agent", "another-uid")]),
        pod("ghost-ds", nodeName="spot-1", ownerReferences=[owner("DaemonSet", "none", "x")]),
        pod("mirror", nodeName="spot-1", annotations={"kubernetes.io/config.mirror": "h"},
            ownerReferences=[owner("Node", "spot-1", "node-uid", "v1")]),
        pod("forged-mirror", nodeName="spot-1", annotations={"kubernetes.io/config.mirror": "h"}),
        pod("wrong-node-mirror", nodeName="spot-1", annotations={"kubernetes.io/config.mirror":
            "h"}, ownerReferences=[owner("Node", "od-1", "node-uid", "v1")]),
    ])  # fmt: skip
    result = audit(kube)
    assert {f.name for f in result.findings} == {
        "forged-ds", "ghost-ds", "forged-mirror", "wrong-node-mirror"
    }  # fmt: skip
    assert result.skipped == {"shop": 2}  # exempt: counted as skip in the report


def test_workloads_are_judged_once_through_their_owner(kube: FakeKube) -> None:
    template = {"spec": {"tolerations": TOLERATE_SPOT, "containers": [{"name": "c"}]}}
    kube.add("apps/v1", "deployments", {
        "metadata": {"name": "web", "namespace": "shop", "uid": "deploy-uid"},
        "spec": {"template": template},
    })  # fmt: skip
    kube.add("apps/v1", "replicasets", {
        "metadata": {"name": "web-1", "namespace": "shop", "uid": "rs-uid",
                     "ownerReferences": [owner("Deployment", "web", "deploy-uid")]},
        "spec": {"replicas": 0, "template": template},
    })  # fmt: skip
    owned = [owner("ReplicaSet", "web-1", "rs-uid")]
    kube.add("v1", "pods", pod("web-1-x", tolerations=TOLERATE_SPOT, ownerReferences=owned))
    result = audit(kube)
    assert found(result) == {
        ("web", "spot-requires-fault-tolerance", FAIL),
        ("web-1-x", "spot-requires-fault-tolerance", FAIL),
    }  # the ReplicaSet is its Deployment's business
    (pod_finding,) = [f for f in result.findings if f.kind == "Pod"]
    assert result.subject_of(pod_finding).name == "web"


def test_ignored_and_excluded_namespaces_and_one_namespace_only(kube: FakeKube) -> None:
    kube.add("v1", "namespaces", {"metadata": {"name": "lab", "labels": {
        "spotguard.dev/ignore": "true"}}})  # fmt: skip
    for namespace in ("lab", "kube-system", "shop", "other"):
        kube.add("v1", "pods", pod("p", namespace, tolerations=TOLERATE_SPOT))
    assert {f.namespace for f in audit(kube).findings} == {"shop", "other"}
    assert {f.namespace for f in audit(kube, namespace="other").findings} == {"other"}
    assert ("GET", "/api/v1/namespaces/other/pods", {"limit": 500}) in kube.calls


@pytest.mark.parametrize("offered", [True, False])
def test_lists_are_paginated_and_an_expired_token_goes_on(kube: FakeKube, offered: bool) -> None:
    kube.add_all("v1", "pods", [pod(f"p{i:02}", tolerations=TOLERATE_SPOT) for i in range(25)])
    kube.expire_continue_once, kube.offer_continue = True, offered
    result = run_audit(Inventory(kube, page_size=10), default_policy())
    pod_calls = [params for _, path, params in kube.calls if path == "/api/v1/pods"]
    assert all(params["limit"] == 10 for params in pod_calls)
    if offered:  # the server's token for the rest of the list: nothing judged twice
        assert [params.get("continue") for params in pod_calls] == [None, "10", "10", "20"]
        assert result.judged["shop"] == 25
    else:  # no token offered: the list starts again
        assert [params.get("continue") for params in pod_calls] == [None, "10", None, "10", "20"]
    assert len({f.name for f in result.findings}) == 25


def test_kinds_the_cluster_does_not_serve_are_noted(kube: FakeKube) -> None:
    result = audit(kube)
    assert "PyTorchJob.kubeflow.org" in result.not_served
    assert "Deployment.apps" not in result.not_served


def finding(name: str, rule: str = "r", result: str = FAIL, **more: Any) -> Finding:
    values: dict[str, Any] = dict(
        namespace="shop", api_version="v1", kind="Pod", name=name, uid=f"{name}-uid", rule=rule,
        result=result, mode="enforce", messages=(f"[{rule}] {name} is bad.",), controller="",
    )  # fmt: skip
    values.update(more)
    return Finding(**values)


def test_reports_one_per_namespace_with_counts_and_a_capped_result_list() -> None:
    result = AuditResult("rev1")
    result.judged.update({"shop": 3 + MAX_RESULTS, "quiet": 2})
    result.passed.update({"shop": 2, "quiet": 2})
    result.findings += [finding(f"p{i}") for i in range(MAX_RESULTS)]
    result.findings += [finding("w", result=WARN, mode="audit")]
    reports = {r["metadata"]["namespace"]: r for r in build_reports(result, now=1000)}
    assert reports["quiet"]["summary"] == {"pass": 2, "fail": 0, "warn": 0, "error": 0, "skip": 0}
    assert reports["quiet"]["results"] == []
    shop = reports["shop"]
    assert shop["summary"]["fail"] == MAX_RESULTS and shop["summary"]["warn"] == 1
    assert len(shop["results"]) == MAX_RESULTS  # failures first; the warning is only counted
    first = shop["results"][0]
    assert first["resources"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": "p0", "namespace": "shop", "uid": "p0-uid"}
    ]
    assert (first["policy"], first["rule"], first["result"]) == ("spotguard", "r", "fail")
    assert first["timestamp"] == {"seconds": 1000, "nanos": 0}


def test_publishing_applies_reports_and_deletes_stale_ones() -> None:
    kube = FakeKube()
    publisher = ReportPublisher(kube)
    for names in (("a", "b"), ("b",)):
        result = AuditResult("rev")
        result.judged.update(dict.fromkeys(names, 1))
        assert publisher.publish(build_reports(result)) == len(names)
    stored = [key for key in kube.objects if key[1] == "policyreports"]
    assert [(key[2], key[3]) for key in stored] == [("b", "spotguard")]


def test_without_the_crd_reports_are_skipped_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kube = FakeKube(policy_reports=False)
    publisher = ReportPublisher(kube)
    result = AuditResult("rev")
    result.judged["a"] = 1
    with caplog.at_level(logging.WARNING, "spotguard.audit"):
        assert publisher.publish(build_reports(result)) == 0
        assert publisher.publish(build_reports(result)) == 0
    assert [r.message for r in caplog.records if "PolicyReports skipped" in r.message] == [
        "PolicyReports skipped: the cluster does not serve wgpolicyk8s.io/v1alpha2 "
        "policyreports (install the CRD to get them)"
    ]


def test_one_event_per_workload_and_rule_never_repeated() -> None:
    kube = FakeKube()
    result = AuditResult("rev")
    result.workloads["rs-uid"] = (
        ObjectRef("apps/v1", "ReplicaSet", "web-1", "shop", "rs-uid"),
        "deploy-uid",
    )
    result.workloads["deploy-uid"] = (
        ObjectRef("apps/v1", "Deployment", "web", "shop", "deploy-uid"),
        "",
    )
    result.findings += [finding(f"web-1-{i}", controller="rs-uid") for i in range(3)]
    result.findings += [finding("bare"), finding("bare", rule="other", result=WARN)]
    events = ViolationEvents(kube)
    assert events.record(result) == 3
    assert ViolationEvents(kube).record(result) == 0  # another replica: 409, nothing new
    assert events.record(result) == 0
    stored = {obj["involvedObject"]["name"]: obj for obj in kube.objects.values()}
    assert set(stored) == {"web", "bare"}
    assert stored["web"]["involvedObject"]["kind"] == "Deployment"
    assert stored["web"]["message"].startswith(
        "spotguard audit: 3 of its pods break an enforced rule (it would be denied today); "
        "pod web-1-0: [r] web-1-0 is bad."
    )
    messages = sorted(o["message"] for o in kube.objects.values() if o["involvedObject"][
        "name"] == "bare")  # fmt: skip
    assert messages == [
        "spotguard audit: this Pod breaks a rule in audit mode: [other] bare is bad.",
        "spotguard audit: this Pod breaks an enforced rule (it would be denied today): "
        "[r] bare is bad.",
    ]


def test_background_run_publishes_and_the_gauge_follows_fixes(kube: FakeKube) -> None:
    kube.add("v1", "pods", pod("tolerates", tolerations=TOLERATE_SPOT))
    kube.add("v1", "pods", pod("on-spot", "ml", nodeName="spot-1"))
    metrics = Metrics.create(CollectorRegistry())
    store = PolicyStore(PolicyState(default_policy(), "test"))
    background = BackgroundAudit(store, kube, "spotguard-system", 60, metrics=lambda: metrics)
    assert background.run_once() is not None

    def gauge(rule: str, namespace: str) -> float | None:
        value: float | None = metrics.registry.get_sample_value(
            "spotguard_audit_violations", {"rule": rule, "namespace": namespace, "mode": "enforce"}
        )
        return value

    assert gauge("spot-requires-fault-tolerance", "shop") == 1
    assert gauge("spot-node-binding", "ml") == 1
    assert kube.stored("wgpolicyk8s.io/v1alpha2", "policyreports", "shop", "spotguard")
    del kube.objects[("/api/v1", "pods", "shop", "tolerates")]  # fixed
    background.run_once()
    assert gauge("spot-requires-fault-tolerance", "shop") == 0
    assert gauge("spot-node-binding", "ml") == 1


def test_claims_bound_to_local_volumes_keep_trainers_off_spot(kube: FakeKube) -> None:
    kube.add("v1", "persistentvolumes", {"metadata": {"name": "nvme-1"},
                                         "spec": {"local": {"path": "/mnt/nvme"}}})  # fmt: skip
    kube.add("v1", "persistentvolumes", {"metadata": {"name": "ebs-1"}, "spec": {}})
    for claim, volume in (("scratch", "nvme-1"), ("data", "ebs-1")):
        metadata = {"name": claim, "namespace": "ml"}
        kube.add("v1", "persistentvolumeclaims", {"metadata": metadata,
                                                  "spec": {"volumeName": volume}})  # fmt: skip
    trainer = {"labels": {"spotguard.dev/fault-tolerant": "true"}, "nodeName": "spot-1",
               "terminationGracePeriodSeconds": 15}  # fmt: skip
    for name, claim in (("local-trainer", "scratch"), ("ebs-trainer", "data")):
        volumes = [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]
        kube.add("v1", "pods", pod(name, "ml", volumes=volumes, **trainer))
    result = audit(kube)
    assert found(result) == {("local-trainer", "spot-node-binding", FAIL)}
    (finding,) = result.findings
    assert "pod uses a local PersistentVolume (PVC scratch)" in finding.message
