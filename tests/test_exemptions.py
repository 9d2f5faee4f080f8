"""Exemptions only from facts the pod's author cannot write: who sends the request, and
owners verified in the cluster. Forged ownerReferences and annotations exempt nothing."""

from __future__ import annotations

from typing import Any

import pytest

from devtools.reviews import plain_pod
from policies.decisions import ClusterFacts
from policies.exemptions import Requester
from policies.loader import default_policy, parse_policy_text
from policies.review import (
    BINDING_KIND,
    POD_KIND,
    GroupVersionKind,
    Operation,
    Phase,
    Request,
    Verdict,
    review,
)

DS_CONTROLLER = Requester(
    "system:serviceaccount:kube-system:daemon-set-controller",
    frozenset({"system:serviceaccounts", "system:authenticated"}),
)
CONTROLLER_MANAGER = Requester(
    "system:kube-controller-manager", frozenset({"system:authenticated"})
)
ALICE = Requester("alice", frozenset({"system:authenticated"}))
UID = "8a7d1a7e-5c36-4f0e-9a55-0d2d6a1b2c3d"
SPOT = {"eks.amazonaws.com/capacityType": "SPOT"}


def node(name: str) -> Requester:
    return Requester(f"system:node:{name}", frozenset({"system:nodes", "system:authenticated"}))


def daemon_set_pod(
    api_version: str = "apps/v1", kind: str = "DaemonSet", controller: bool = True
) -> dict[str, Any]:
    pod = plain_pod("exporter-x2k9d", tolerate_spot=True)
    owner = {"apiVersion": api_version, "kind": kind, "name": "exporter", "uid": UID}
    pod["metadata"]["ownerReferences"] = [{**owner, "controller": controller}]
    return pod


def mirror_pod(node_name: str = "spot-1") -> dict[str, Any]:
    pod = plain_pod("etcd-spot-1", tolerate_spot=True)
    pod["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "5f0e1d"}
    pod["spec"]["nodeName"] = node_name
    return pod


def create(
    pod: dict[str, Any], requester: Requester | None, facts: ClusterFacts | None = None
) -> Verdict:
    request = Request(POD_KIND, Operation.CREATE, "ml", pod, requester=requester)
    return review(request, default_policy(), facts or ClusterFacts.from_data({"spot-1": SPOT}))


@pytest.mark.parametrize("requester", [DS_CONTROLLER, CONTROLLER_MANAGER])
def test_daemon_set_pods_created_by_the_daemon_set_controller_are_exempt(
    requester: Requester,
) -> None:
    verdict = create(daemon_set_pod(), requester)
    assert verdict.exemption == f"pod of DaemonSet exporter, created by {requester.username}"
    assert verdict.mutation is None and verdict.validation is None


@pytest.mark.parametrize(
    ("pod", "requester"),
    [
        (daemon_set_pod(), ALICE),  # a forged owner reference, sent by a user
        (daemon_set_pod(), None),  # offline: nobody vouches for it
        (daemon_set_pod(api_version="example.com/v1"), DS_CONTROLLER),  # not apps/v1
        (daemon_set_pod(kind="ReplicaSet"), DS_CONTROLLER),
        (daemon_set_pod(controller=False), DS_CONTROLLER),  # not its controller
    ],
)
def test_forged_or_foreign_daemon_set_owners_exempt_nothing(
    pod: dict[str, Any], requester: Requester | None
) -> None:
    verdict = create(pod, requester)
    assert verdict.exemption == ""
    assert not verdict.allowed  # it tolerates the spot taint and is not fault-tolerant
    assert verdict.mutation is not None and verdict.mutation.rules[0].value == "keep-off-spot"


def test_a_verified_owner_does_not_exempt_a_pod_a_user_creates() -> None:
    """At creation the creator is known: a user naming a real DaemonSet with its real uid
    (which anyone who can read it knows) is still a user."""
    facts = ClusterFacts.from_data({"spot-1": SPOT}, owners={"DaemonSet/ml/exporter": UID})
    assert create(daemon_set_pod(), ALICE, facts).exemption == ""


def test_mirror_pods_are_exempt_when_their_own_node_sends_them() -> None:
    verdict = create(mirror_pod("spot-1"), node("spot-1"))
    assert verdict.exemption == "mirror pod of a static pod, sent by the kubelet of node spot-1"


@pytest.mark.parametrize(
    ("pod", "requester"),
    [
        (mirror_pod("spot-1"), ALICE),  # the forged annotation
        (mirror_pod("spot-1"), None),
        (mirror_pod("spot-1"), node("spot-2")),  # another node
        (mirror_pod("spot-1"), Requester("system:node:spot-1")),  # not in system:nodes
    ],
)
def test_the_mirror_annotation_alone_exempts_nothing(
    pod: dict[str, Any], requester: Requester | None
) -> None:
    verdict = create(pod, requester)
    assert verdict.exemption == ""
    assert not verdict.allowed  # nodeName names a spot node and it is not fault-tolerant


def test_a_node_creating_a_pod_without_the_mirror_annotation_is_reviewed() -> None:
    pod = mirror_pod()
    del pod["metadata"]["annotations"]
    assert create(pod, node("spot-1")).exemption == ""


def binding_request(pod_name: str = "exporter-x2k9d") -> Request:
    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": pod_name},
        "target": {"kind": "Node", "name": "spot-1"},
    }
    scheduler = Requester("system:kube-scheduler")
    return Request(
        BINDING_KIND, Operation.CREATE, "ml", binding, None, "binding", pod_name, scheduler
    )


def test_bindings_exempt_daemon_set_pods_only_when_the_owner_is_verified() -> None:
    stored = daemon_set_pod()
    verified = ClusterFacts.from_data(
        {"spot-1": SPOT}, pods={"ml/exporter-x2k9d": stored}, owners={"DaemonSet/ml/exporter": UID}
    )
    verdict = review(binding_request(), default_policy(), verified, Phase.VALIDATE)
    assert verdict.exemption == "pod of DaemonSet exporter (owner verified in the cluster)"
    for owners in ({}, {"DaemonSet/ml/exporter": "another-uid"}, {"DaemonSet/ml/other": UID}):
        facts = ClusterFacts.from_data(
            {"spot-1": SPOT}, pods={"ml/exporter-x2k9d": stored}, owners=owners
        )
        verdict = review(binding_request(), default_policy(), facts, Phase.VALIDATE)
        assert verdict.exemption == "" and not verdict.allowed, owners


def test_updates_exempt_by_identity_or_a_verified_owner() -> None:
    old = daemon_set_pod()
    new = daemon_set_pod()
    new["spec"]["tolerations"].append({"key": "spot", "operator": "Exists"})

    def update(requester: Requester, owners: dict[str, str]) -> str:
        request = Request(POD_KIND, Operation.UPDATE, "ml", new, old, requester=requester)
        facts = ClusterFacts.from_data(owners=owners)
        return review(request, default_policy(), facts, Phase.VALIDATE).exemption

    assert (
        update(DS_CONTROLLER, {})
        == f"pod of DaemonSet exporter, updated by {DS_CONTROLLER.username}"
    )
    assert update(ALICE, {"DaemonSet/ml/exporter": UID}).endswith("(owner verified in the cluster)")
    assert update(ALICE, {}) == ""


def test_templates_are_exempt_by_the_request_kind_never_by_their_fields() -> None:
    policy = parse_policy_text(
        "workloads: {extraKinds: [{group: apps, kind: DaemonSet, templatePaths: [spec.template]}]}"
    )
    template = {
        "metadata": {"annotations": {"kubernetes.io/config.mirror": "x"}},
        "spec": {
            "tolerations": [{"key": "spot", "operator": "Exists"}],
            "containers": [{"name": "c"}],
        },
    }
    daemon_set = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
                  "spec": {"template": template}}  # fmt: skip
    deployment = {**daemon_set, "kind": "Deployment"}
    for obj, exempt in ((daemon_set, True), (deployment, False)):
        request = Request(GroupVersionKind.of(obj), Operation.CREATE, "ml", obj, requester=ALICE)
        verdict = review(request, policy, phases=Phase.VALIDATE)
        assert bool(verdict.exemption) is exempt and verdict.allowed is exempt, obj["kind"]


def test_trusted_identities_are_policy_data() -> None:
    nobody = parse_policy_text(
        "exemptions: {daemonSetPodCreators: [], mirrorPodCreators: {nodeUserPrefix: ''}}"
    )
    for pod, requester in ((daemon_set_pod(), DS_CONTROLLER), (mirror_pod(), node("spot-1"))):
        request = Request(POD_KIND, Operation.CREATE, "ml", pod, requester=requester)
        facts = ClusterFacts.from_data({"spot-1": SPOT})
        assert review(request, nobody, facts).exemption == ""
    custom = parse_policy_text("exemptions: {daemonSetPodCreators: [ops-daemonsets]}")
    request = Request(POD_KIND, Operation.CREATE, "ml", daemon_set_pod(),
                      requester=Requester("ops-daemonsets"))  # fmt: skip
    assert review(request, custom).exemption.startswith("pod of DaemonSet exporter")
