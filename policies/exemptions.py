"""Exemptions from facts the pod's author cannot write.

DaemonSet pods and mirror pods of static pods run on the node they are made for, spot
included, so no rule touches them. What a pod says about itself proves nothing: anyone
who can create a pod can write ``ownerReferences`` naming a DaemonSet or the
``kubernetes.io/config.mirror`` annotation. So a pod is exempt only on facts the API
server vouches for:

- who creates it (``request.userInfo``, authenticated by the API server): the DaemonSet
  controller's identity for a pod whose controller owner is an apps/v1 DaemonSet, or the
  kubelet of the node a mirror pod names (``system:node:<spec.nodeName>`` in
  ``system:nodes``). The identities are policy data (``exemptions``);
- for requests whose sender is not the creator (a binding, sent by the scheduler; an
  update), cluster state spotguard verified: the owner exists with the uid the pod names.

A workload's pod template is exempt only by the kind of the request (a DaemonSet's
template), never by the fields it carries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from policies.decisions import ClusterFacts
from policies.model import Policy, WorkloadKind
from policies.pods import annotations_of, spec_of

MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"
DAEMON_SET_API_VERSION = "apps/v1"


@dataclass(frozen=True)
class Requester:
    """Who sent the request, as the API server authenticated them (``request.userInfo``)."""

    username: str
    groups: frozenset[str] = frozenset()


def controller_owner(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The owner reference marked ``controller: true`` (at most one is valid), if any."""
    for owner in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if owner.get("controller") is True:
            return owner  # type: ignore[no-any-return]
    return None


def _daemon_set_owner(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    owner = controller_owner(pod)
    if (
        owner is not None
        and owner.get("kind") == "DaemonSet"
        and owner.get("apiVersion") == DAEMON_SET_API_VERSION
        and owner.get("name")
    ):
        return owner
    return None


def _verified(owner: Mapping[str, Any], namespace: str, facts: ClusterFacts) -> bool:
    """The owner the pod names exists in the cluster, with the uid the pod names."""
    uid = owner.get("uid")
    return bool(uid) and facts.owner_uid("DaemonSet", namespace, str(owner["name"])) == uid


def pod_exemption(
    pod: Mapping[str, Any],
    namespace: str,
    requester: Requester | None,
    facts: ClusterFacts,
    policy: Policy,
    *,
    creating: bool,
) -> str:
    """Why no rule applies to this pod request, or "" when the rules apply.

    ``creating``: a CREATE, whose sender is the pod's creator. Other requests (updates)
    are exempt by the sender's identity too, or by a verified owner.
    """
    settings = policy.exemptions
    daemon_set = _daemon_set_owner(pod) if settings.daemon_set_pod_creators else None
    if daemon_set is not None:
        if requester is not None and settings.creates_daemon_set_pods(requester.username):
            verb = "created" if creating else "updated"
            return f"pod of DaemonSet {daemon_set['name']}, {verb} by {requester.username}"
        if not creating and _verified(daemon_set, namespace, facts):
            return f"pod of DaemonSet {daemon_set['name']} (owner verified in the cluster)"
    node_name = spec_of(pod).get("nodeName")
    if (
        requester is not None
        and isinstance(node_name, str)
        and MIRROR_POD_ANNOTATION in annotations_of(pod)
        and settings.is_node_user(requester.username, requester.groups, node_name)
    ):
        return f"mirror pod of a static pod, sent by the kubelet of node {node_name}"
    return ""


def bound_pod_exemption(
    pod: Mapping[str, Any], namespace: str, facts: ClusterFacts, policy: Policy
) -> str:
    """Why a binding of this stored pod is not checked, or "".

    The scheduler sends bindings, so there is no creator to ask: only an owner verified
    in the cluster exempts a DaemonSet pod. (Mirror pods are created on their node and
    never bound.)
    """
    if not policy.exemptions.daemon_set_pod_creators:
        return ""
    owner = _daemon_set_owner(pod)
    if owner is not None and _verified(owner, namespace, facts):
        return f"pod of DaemonSet {owner['name']} (owner verified in the cluster)"
    return ""


def template_exemption(workload: WorkloadKind, policy: Policy) -> str:
    """Why a workload's templates are not judged, or "": only a DaemonSet's are exempt,
    because the trusted DaemonSet controller creates its pods."""
    if (
        workload.group == "apps"
        and workload.kind == "DaemonSet"
        and policy.exemptions.daemon_set_pod_creators
    ):
        return "templates of DaemonSets are exempt: the DaemonSet controller creates their pods"
    return ""
