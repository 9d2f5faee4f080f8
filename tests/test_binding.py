"""Binding and nodeName checks: no pod that must stay off spot lands on a spot node."""

from __future__ import annotations

from typing import Any

from policies.binding import binding_target, validate_binding
from policies.decisions import ClusterFacts, PodContext
from policies.loader import default_policy, parse_policy_text
from policies.model import Mode, Rule
from policies.validate import validate_pod
from testsupport.reviews import plain_pod, training_pod

NODES = {
    "spot-1": {"karpenter.sh/capacity-type": "spot"},
    "ondemand-1": {"karpenter.sh/capacity-type": "on-demand"},
}


def binding(node: str | None, pod: str = "web-0") -> dict[str, Any]:
    target = {"kind": "Node", "name": node} if node else {}
    return {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": pod}, "target": target}


def context(operation: str = "CREATE", namespace: str = "ml") -> PodContext:
    return PodContext(namespace, operation, ClusterFacts.from_data(NODES))


def test_binding_target() -> None:
    assert binding_target(binding("spot-1")) == "spot-1"
    assert binding_target(binding(None)) is None
    assert binding_target({"target": "spot-1"}) is None


def test_the_node_lookup_is_asked_for_the_bound_node_only() -> None:
    asked: list[str] = []

    def lookup(name: str) -> dict[str, str] | None:
        asked.append(name)
        return NODES.get(name)

    facts = ClusterFacts(node_labels=lookup)
    decision = validate_binding(
        binding("spot-1"), plain_pod(), PodContext("ml", cluster=facts), (default_policy())
    )
    assert asked == ["spot-1"]
    assert [v.rule for v in decision.denials] == [Rule.SPOT_NODE_BINDING]


def test_bindings_are_only_checked_where_pods_are() -> None:
    policy = default_policy()
    assert validate_binding(binding("spot-1"), plain_pod(), context("CREATE"), policy).denials
    assert not validate_binding(
        binding("spot-1"), plain_pod(), context("UPDATE"), policy
    ).violations
    kube_system = context(namespace="kube-system")
    assert not validate_binding(binding("spot-1"), plain_pod(), kube_system, policy).violations
    assert not validate_binding(binding(None), plain_pod(), context(), policy).violations


def test_each_reason_caps_the_binding_rule() -> None:
    # With spot-requires-fault-tolerance off, a pod that is not fault-tolerant may be on spot.
    off = parse_policy_text("rules: {spotRequiresFaultTolerance: {mode: off}}")
    assert not validate_binding(binding("spot-1"), plain_pod(), context(), off).violations
    audit = parse_policy_text("rules: {spotRequiresFaultTolerance: {mode: audit}}")
    decision = validate_binding(binding("spot-1"), plain_pod(), context(), audit)
    assert [v.mode for v in decision.violations] == [Mode.AUDIT]
    rule_off = parse_policy_text("rules: {spotNodeBinding: {mode: off}}")
    assert not validate_binding(binding("spot-1"), plain_pod(), context(), rule_off).violations


def test_the_global_audit_mode_makes_binding_checks_warnings() -> None:
    policy = parse_policy_text("mode: audit")
    decision = validate_binding(binding("spot-1"), plain_pod(), context(), policy)
    assert not decision.denials and decision.audited


def test_fault_tolerant_pods_may_be_bound_to_spot_unless_poor_candidates() -> None:
    policy = default_policy()
    assert not validate_binding(binding("spot-1"), training_pod(), context(), policy).violations
    critical = training_pod()
    critical["spec"]["priorityClassName"] = "system-node-critical"
    decision = validate_binding(binding("spot-1"), critical, context(), policy)
    assert [v.rule for v in decision.denials] == [Rule.SPOT_NODE_BINDING]
    assert (
        "latency-critical (priorityClassName system-node-critical)" in decision.denials[0].problem
    )


def test_node_name_is_checked_at_creation_only() -> None:
    pod = plain_pod()
    pod["spec"]["nodeName"] = "spot-1"
    policy = default_policy()
    assert [v.field for v in validate_pod(pod, context(), policy).denials] == ["spec.nodeName"]
    # The API server never lets an UPDATE change nodeName; a label update must not be denied.
    assert not validate_pod(pod, context("UPDATE"), policy, old_pod=pod).violations


def test_without_node_facts_every_node_is_unknown() -> None:
    pod = plain_pod()
    pod["spec"]["nodeName"] = "spot-1"
    decision = validate_pod(pod, PodContext("ml"), default_policy())
    assert not decision.violations
    assert decision.warnings == ("spotguard: node spot-1 is not known yet; not checked for spot",)
    strict = parse_policy_text("nodeBinding: {unknownNodes: deny}")
    assert validate_pod(pod, PodContext("ml"), strict).denials


def test_local_claims_come_from_the_cluster_facts() -> None:
    pod = training_pod()
    pod["spec"]["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": "data-0"}}]
    pod["spec"]["nodeName"] = "spot-1"
    facts = ClusterFacts.from_data(NODES, local_claims=["ml/data-0"])
    decision = validate_pod(pod, PodContext("ml", cluster=facts), default_policy())
    assert [v.rule for v in decision.denials] == [Rule.SPOT_NODE_BINDING]
    elsewhere = ClusterFacts.from_data(NODES, local_claims=["other/data-0"])
    assert not validate_pod(pod, PodContext("ml", cluster=elsewhere), default_policy()).denials
