"""Each way around the verdict that issue 9 lists, tried with `kubectl apply` against the
real control plane: it ends with the pod denied or kept off every spot node (the tainted
and the untainted group), and the fault-tolerant variants are mutated as documented.

Forgeries are sent as a regular user (``kubectl --as alice``), as an attacker would; the
real DaemonSet's pods come from the real controller-manager and are bound by the real
scheduler; the mirror pod is created as its node's kubelet (``--as system:node:<node>
--as-group system:nodes``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from controlplane.harness import ADMIN_USER, ControlPlane, node_group
from tests.e2e.conftest import ENFORCE_POLICY, Webhook, get, node_group_of

pytestmark = pytest.mark.e2e

SPOT_GROUPS = ("spot-tainted", "spot-untainted")
SPOT_UNTAINTED = node_group("spot-untainted").node_names[0]
EKS_CAPACITY = "eks.amazonaws.com/capacityType"
AKS_PRIORITY = "kubernetes.azure.com/scalesetpriority"
AKS_TOLERATION = {"key": AKS_PRIORITY, "operator": "Equal", "value": "spot", "effect": "NoSchedule"}
USER = "alice"
#: The default trusted DaemonSet-pod creators, and the identity this harness's
#: controller-manager authenticates with (its kubeconfig is the admin's; in a cluster it
#: is system:kube-controller-manager or the DaemonSet controller's service account).
HARNESS_POLICY = (
    "mode: enforce\nexemptions:\n  daemonSetPodCreators:\n"
    "    - system:serviceaccount:kube-system:daemon-set-controller\n"
    f"    - system:kube-controller-manager\n    - {ADMIN_USER}\n"
)


def as_user(namespace: str, user: str = USER) -> tuple[str, ...]:
    return ("-n", namespace, "--as", user)


def as_kubelet(namespace: str, node: str) -> tuple[str, ...]:
    return ("-n", namespace, "--as", f"system:node:{node}", "--as-group", "system:nodes")


@pytest.fixture
def user_namespace(cluster: ControlPlane, namespace: str) -> str:
    """The test namespace, where ``alice`` may create and read workloads and pods."""
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "alice-edits", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER}],
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(binding), check=True)
    return namespace


def apply(cluster: ControlPlane, manifest: dict[str, Any], *args: str) -> tuple[int, str]:
    result = cluster.kubectl("apply", "-f", "-", *args, input=json.dumps(manifest))
    return result.returncode, result.stdout + result.stderr


def pod(name: str, **spec: Any) -> dict[str, Any]:
    """Not fault-tolerant, preferring spot: the scheduler takes spot whenever it may."""
    preference = {"matchExpressions": [{"key": EKS_CAPACITY, "operator": "In", "values": ["SPOT"]}]}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "containers": [{"name": "c", "image": "registry.example/app:1"}],
            "affinity": {
                "nodeAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 100, "preference": preference}
                    ]
                }
            },
            **spec,
        },
    }


def with_metadata(manifest: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    manifest["metadata"].update(metadata)
    return manifest


def settled(
    cluster: ControlPlane, namespace: str, name: str, timeout: float = 90
) -> dict[str, Any]:
    """The pod once the scheduler decided: bound to a node, or found to fit nowhere."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = get(cluster, "pod", name, namespace)
        conditions = found.get("status", {}).get("conditions", [])
        if found["spec"].get("nodeName") or any(
            c.get("reason") == "Unschedulable" for c in conditions
        ):
            return found
        time.sleep(0.3)
    # A pod that may only reach spot nodes, and whose bindings to them spotguard refuses,
    # ends here: kept off spot by the binding check alone, which admission should have
    # decided (denied, or affinity that reaches no spot node).
    conditions = get(cluster, "pod", name, namespace).get("status", {}).get("conditions")
    raise TimeoutError(f"the scheduler did not place pod {name} in {timeout:.0f} s: {conditions}")


def assert_denied_or_kept_off_spot(
    cluster: ControlPlane, namespace: str, manifest: dict[str, Any], *args: str
) -> None:
    """Applying ``manifest`` is refused by spotguard, or its pod never reaches a spot node."""
    code, output = apply(cluster, manifest, "-n", namespace, *args)
    if code != 0:
        assert "denied the request: spotguard denied" in output, output
        return
    name = manifest["metadata"]["name"]
    found = settled(cluster, namespace, name)
    node = found["spec"].get("nodeName")
    assert node is None or node_group_of(found) not in SPOT_GROUPS, f"{name} landed on {node}"


# --- forged exemptions ---------------------------------------------------------------------


def daemon_set(name: str, tolerations: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "tolerations": tolerations,
                    "containers": [{"name": "agent", "image": "registry.example/agent:1"}],
                    **spec,
                },
            },
        },
    }


def test_forged_daemon_set_owner_references_exempt_nothing(
    cluster: ControlPlane, enforce: Webhook, user_namespace: str
) -> None:
    namespace = user_namespace
    # A real DaemonSet that runs nowhere, so the forged reference names an owner that
    # exists (its uid is readable by anyone who can get it) and the pod is not collected.
    idle = daemon_set("idle", [], nodeSelector={"example.com/no-such-node": "x"})
    assert apply(cluster, idle, "-n", namespace)[0] == 0
    uid = get(cluster, "daemonset", "idle", namespace)["metadata"]["uid"]
    owner = {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "idle", "uid": uid,
             "controller": True, "blockOwnerDeletion": True}  # fmt: skip
    forged = with_metadata(pod("forged-owner"), ownerReferences=[owner])
    assert_denied_or_kept_off_spot(cluster, namespace, forged, "--as", USER)
    stored = get(cluster, "pod", "forged-owner", namespace)
    required = stored["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert {"key": EKS_CAPACITY, "operator": "NotIn", "values": ["SPOT"]} in (
        required["nodeSelectorTerms"][0]["matchExpressions"]
    )
    tolerating = with_metadata(pod("forged-owner-tolerating", tolerations=[AKS_TOLERATION]),
                               ownerReferences=[owner])  # fmt: skip
    code, output = apply(cluster, tolerating, *as_user(namespace))
    assert code != 0 and "spot-requires-fault-tolerance" in output, output


def test_a_forged_mirror_annotation_exempts_nothing(
    cluster: ControlPlane, enforce: Webhook, user_namespace: str
) -> None:
    namespace = user_namespace
    mirror = {"kubernetes.io/config.mirror": "forged"}
    # The API server accepts the annotation only with spec.nodeName: pin to each spot group.
    for group in SPOT_GROUPS:
        node = node_group(group).node_names[0]
        pinned = with_metadata(pod(f"forged-mirror-{group}", nodeName=node), annotations=mirror)
        code, output = apply(cluster, pinned, *as_user(namespace))
        assert code != 0 and f"spot node {node}" in output, output
    # A template with the annotation (and so, for the API server, a nodeName): its pods
    # would be mirror pods by their fields alone. Templates are never exempt by fields.
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "forged-template"},
        "spec": {
            "selector": {"matchLabels": {"app": "forged-template"}},
            "template": {
                "metadata": {"labels": {"app": "forged-template"}, "annotations": mirror},
                "spec": {
                    "nodeName": SPOT_UNTAINTED,
                    "containers": [{"name": "c", "image": "registry.example/app:1"}],
                },
            },
        },
    }
    code, output = apply(cluster, deployment, *as_user(namespace))
    assert code != 0 and "spotguard denied Deployment forged-template" in output, output


def test_a_real_daemon_sets_pods_stay_exempt_on_spot_nodes(
    cluster: ControlPlane, webhook: Webhook, namespace: str
) -> None:
    """Created by the real controller-manager, bound by the real scheduler to spot nodes
    of both groups, although not fault-tolerant and tolerating every taint."""
    with webhook.policy(HARNESS_POLICY):
        agent = daemon_set("node-agent", [{"operator": "Exists"}])
        code, output = apply(cluster, agent, "-n", namespace)
        assert code == 0, output
        expected = sum(
            len(group.node_names) for group in map(node_group, ("on-demand", *SPOT_GROUPS))
        )
        deadline, bound = time.monotonic() + 90, []
        while time.monotonic() < deadline:
            listed = cluster.kubectl("get", "pods", "-n", namespace, "-l", "app=node-agent",
                                     "-o", "json", check=True)  # fmt: skip
            bound = [p for p in json.loads(listed.stdout)["items"] if p["spec"].get("nodeName")]
            if len(bound) >= expected:
                break
            time.sleep(0.5)
        groups = {node_group_of(p) for p in bound}
        assert set(SPOT_GROUPS) <= groups, f"DaemonSet pods bound to {groups}"
        annotations = bound[0]["metadata"].get("annotations") or {}
        assert "spotguard.dev/injected" not in annotations  # exempt: untouched


def test_a_mirror_pod_sent_by_its_nodes_kubelet_is_exempt(
    cluster: ControlPlane, enforce: Webhook, user_namespace: str
) -> None:
    namespace = user_namespace
    other = node_group("on-demand").node_names[1]
    for node in (SPOT_UNTAINTED, other):
        role = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": f"kubelet-{node}", "namespace": namespace},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "edit",
            },
            "subjects": [
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "User",
                    "name": f"system:node:{node}",
                }
            ],
        }
        cluster.kubectl("apply", "-f", "-", input=json.dumps(role), check=True)
    mirror = with_metadata(
        pod("static-agent", nodeName=SPOT_UNTAINTED),
        annotations={"kubernetes.io/config.mirror": "0f1e2d3c"},
    )
    code, output = apply(cluster, mirror, *as_kubelet(namespace, SPOT_UNTAINTED))
    assert code == 0, output
    assert get(cluster, "pod", "static-agent", namespace)["spec"]["nodeName"] == SPOT_UNTAINTED
    for name, who in (
        ("static-agent-by-user", as_user(namespace)),
        ("static-agent-by-another-node", as_kubelet(namespace, other)),
    ):
        forged = with_metadata(json.loads(json.dumps(mirror)), name=name)
        code, output = apply(cluster, forged, *who)
        assert code != 0 and f"spot node {SPOT_UNTAINTED}" in output, output


# --- inputs that used to crash the webhook (and so admit the pod unchanged) ---------------


def training(name: str, **annotations: str) -> dict[str, Any]:
    manifest = pod(name)
    manifest["metadata"]["labels"]["spotguard.dev/fault-tolerant"] = "true"
    manifest["metadata"]["annotations"] = annotations
    return manifest


def test_crash_inputs_are_judged(cluster: ControlPlane, enforce: Webhook, namespace: str) -> None:
    huge = training("huge-checkpoint", **{"spotguard.dev/checkpoint-size": "9" * 400})
    code, output = apply(cluster, huge, "-n", namespace)
    assert code == 0 and "checkpoint size" in output and "internal error" not in output, output
    mutated = get(cluster, "pod", "huge-checkpoint", namespace)
    assert any(t.get("key") == AKS_PRIORITY for t in mutated["spec"]["tolerations"])
    assert "lifecycle" in mutated["spec"]["containers"][0]

    garbage = with_metadata(pod("garbage-record"), annotations={"spotguard.dev/injected": "5"})
    assert_denied_or_kept_off_spot(cluster, namespace, garbage)
    record = get(cluster, "pod", "garbage-record", namespace)["metadata"]["annotations"]
    assert json.loads(record["spotguard.dev/injected"])["injected"] == ["nodeAffinity"]

    deep = training("deep-hook", **{"spotguard.dev/prestop-command": "[" * 3000 + "]" * 3000})
    code, output = apply(cluster, deep, "-n", namespace)
    assert code != 0 and "spotguard.dev/prestop-command" in output, output
    assert "internal error" not in output


def test_the_api_default_grace_period_of_a_job_is_not_a_choice(
    cluster: ControlPlane, webhook: Webhook, namespace: str
) -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "honest-training"},
        "spec": {"template": {
            "metadata": {"labels": {"spotguard.dev/fault-tolerant": "true"}},
            "spec": {"restartPolicy": "Never",
                     "containers": [{"name": "trainer", "image": "registry.example/trainer:1"}]},
        }},
    }  # fmt: skip
    with webhook.policy(ENFORCE_POLICY + "rules: {gracePeriodFitsNotice: {mode: enforce}}\n"):
        code, output = apply(cluster, job, "-n", namespace)
    assert code == 0, output
    assert "grace" not in output
    stored = get(cluster, "job", "honest-training", namespace)
    assert stored["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 30  # API default


def test_an_opted_out_label_of_false_does_not_opt_out(
    cluster: ControlPlane, enforce: Webhook, namespace: str
) -> None:
    cluster.kubectl("label", "namespace", namespace, "spotguard.dev/ignore=false", check=True)
    tolerating = pod("in-a-reviewed-namespace", tolerations=[AKS_TOLERATION])
    code, output = apply(cluster, tolerating, "-n", namespace)
    assert code != 0 and "spot-requires-fault-tolerance" in output, output


# --- placement dialects the scheduler understands (issue 9, item 2) ---------------------------


def required(*terms: dict[str, Any]) -> dict[str, Any]:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": list(terms)}}}  # fmt: skip


def with_affinity(manifest: dict[str, Any], affinity: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` with the required terms of ``affinity`` beside its spot preference."""
    node_affinity = manifest["spec"]["affinity"]["nodeAffinity"]
    node_affinity.update(affinity["nodeAffinity"])
    return manifest


def expressions(*found: dict[str, Any]) -> dict[str, Any]:
    return {"matchExpressions": list(found)}


@pytest.mark.parametrize(
    ("name", "term"),
    [
        ("not-in-on-demand", expressions(
            {"key": EKS_CAPACITY, "operator": "NotIn", "values": ["ON_DEMAND"]})),
        ("exists", expressions({"key": EKS_CAPACITY, "operator": "Exists"})),
    ],
)  # fmt: skip
def test_affinity_dialects_reach_no_spot_node(
    cluster: ControlPlane, enforce: Webhook, namespace: str, name: str, term: dict[str, Any]
) -> None:
    """Terms that name the spot label with another operator than In still reach spot."""
    manifest = with_affinity(pod(name), required(term))
    assert_denied_or_kept_off_spot(cluster, namespace, manifest)


@pytest.fixture
def tiered_node(cluster: ControlPlane) -> Iterator[str]:
    """A tainted spot node that also carries an integer label (a preemption tier)."""
    node = node_group("spot-tainted").node_names[1]
    cluster.kubectl("label", "node", node, f"{TIER}=3", "--overwrite", check=True)
    yield node
    cluster.kubectl("label", "node", node, f"{TIER}-")


TIER = "example.com/preemption-tier"


def test_gt_on_a_spot_label_reaches_no_spot_node(
    cluster: ControlPlane, webhook: Webhook, namespace: str, tiered_node: str
) -> None:
    """A policy that knows some spot nodes by an integer label (tier 3): a term asking for
    ``tier Gt 2`` selects exactly those, whatever the other spot labels say."""
    policy = f"spotNodes:\n  presets: [eks]\n  labels: [{{key: {TIER}, values: ['3']}}]\n"
    manifest = with_affinity(
        pod("tier-above-2", tolerations=[AKS_TOLERATION]),
        required(expressions({"key": TIER, "operator": "Gt", "values": ["2"]})),
    )
    with webhook.policy(policy):
        assert_denied_or_kept_off_spot(cluster, namespace, manifest)


def test_an_empty_term_keeps_matching_no_node(
    cluster: ControlPlane, enforce: Webhook, namespace: str
) -> None:
    """An empty nodeSelectorTerm matches no node; requirements ANDed into it would make it
    match some. The pod is denied, or the scheduler still finds no node for it."""
    code, output = apply(cluster, with_affinity(pod("empty-term"), required({})), "-n", namespace)
    if code != 0:
        assert "denied the request: spotguard denied" in output, output
        return
    found = settled(cluster, namespace, "empty-term")
    assert found["spec"].get("nodeName") is None, f"an empty term matched {found['spec']}"


def test_a_value_any_taint_is_tolerated_by_an_equal_toleration(
    cluster: ControlPlane, webhook: Webhook, namespace: str
) -> None:
    """A policy taint without a value stands for any value: an Equal toleration of the
    node's actual value tolerates it, so a pod that is not fault-tolerant is denied. (The
    policy knows the tainted spot nodes by their taint alone, as a self-managed pool may.)"""
    policy = (
        f"spotNodes:\n  presets: [eks]\n  taints: [{{key: {AKS_PRIORITY}, effect: NoSchedule}}]\n"
    )
    tolerating = pod("equal-to-any", tolerations=[AKS_TOLERATION])
    prefer_tainted_spot = expressions({"key": AKS_PRIORITY, "operator": "In", "values": ["spot"]})
    preferred = [{"weight": 100, "preference": prefer_tainted_spot}]
    tolerating["spec"]["affinity"]["nodeAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ] = preferred
    with webhook.policy(policy):
        assert_denied_or_kept_off_spot(cluster, namespace, tolerating)
