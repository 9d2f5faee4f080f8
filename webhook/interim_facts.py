"""Interim lookups for the two cluster facts the serving layer has no watch cache for yet.

Bindings are judged on the stored pod (``ClusterFacts.pod``), and a DaemonSet pod is
exempt at binding time only if its owner exists with the uid it names
(``ClusterFacts.owner_uid``). Until ``webhook/cluster.py`` backs both with watch caches,
this module answers them the way the transport did before: a GET of the pod on a miss,
and a GET of the DaemonSet. Only bindings ask, so no ordinary review pays for a call.
When the caches land, the cache answers first and these run only on a miss.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from policies.decisions import ClusterFacts
from policies.pods import JSONObject
from webhook.cluster import ClusterAccess

log = logging.getLogger("spotguard.cluster")


def with_interim_lookups(cluster: ClusterAccess) -> ClusterFacts:
    """``cluster.facts`` whose pod and owner lookups fall back to a GET on a miss."""
    facts = cluster.facts

    def pod(namespace: str, name: str) -> JSONObject | None:
        return facts.pod(namespace, name) or cluster.get_pod(namespace, name)

    def owner_uid(kind: str, namespace: str, name: str) -> str | None:
        cached = facts.owner_uid(kind, namespace, name)
        if cached is not None or kind != "DaemonSet":
            return cached
        return _daemon_set_uid(cluster, namespace, name)

    return replace(facts, pod=pod, owner_uid=owner_uid)


def _daemon_set_uid(cluster: ClusterAccess, namespace: str, name: str) -> str | None:
    core: Any = getattr(cluster, "_core", None)  # KubeCluster's client; None offline
    if core is None:
        return None
    from kubernetes import client  # noqa: PLC0415 - only with cluster access
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    try:
        daemon_set = client.AppsV1Api(core.api_client).read_namespaced_daemon_set(
            name, namespace, _request_timeout=2
        )
    except ApiException as error:
        if error.status != 404:
            log.warning("cannot read daemonset %s/%s: %s", namespace, name, error.status)
        return None
    uid = daemon_set.metadata.uid if daemon_set.metadata is not None else None
    return uid if isinstance(uid, str) else None
