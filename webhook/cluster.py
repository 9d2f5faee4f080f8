"""What the rules may know of the cluster, served from watch caches (never an API call
per ordinary review).

- Node labels: a watch of all Nodes, so a pod's ``spec.nodeName`` and a Binding's target
  can be judged spot or not. A node missing from the cache is "unknown"; the policy says
  what that means (``nodeBinding.unknownNodes``).
- The pod named by a Binding: a Binding carries only the pod's name, and the scheduler
  binds each pod once, so this one review kind does a GET of the pod.
- Whether a claim is bound to a ``local`` PersistentVolume: looked up once per bound claim
  (claim to volume bindings do not change) and remembered.

Without cluster access (local runs, the CLI, unit tests) :data:`NO_CLUSTER` knows nothing.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from typing import Any, Protocol

from policies.decisions import NO_CLUSTER_FACTS, ClusterFacts
from webhook.kube_watch import run_watch

log = logging.getLogger("spotguard.cluster")


class ClusterAccess(Protocol):
    @property
    def facts(self) -> ClusterFacts: ...

    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None: ...


class NoCluster:
    facts = NO_CLUSTER_FACTS

    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return None


NO_CLUSTER = NoCluster()


class KubeCluster:
    """Cluster facts through the kubernetes client; call :meth:`start` once per process."""

    def __init__(self, core_api: Any) -> None:
        self._core = core_api
        self._nodes: dict[str, Mapping[str, str]] = {}
        self._claims: dict[tuple[str, str], bool] = {}
        self._stop = threading.Event()
        self.facts = ClusterFacts(node_labels=self._nodes.get, local_claims=self._is_local)

    def start(self) -> None:
        threading.Thread(target=self._watch_nodes, name="node-cache", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _watch_nodes(self) -> None:
        def on_event(kind: str, node: Any) -> None:
            if kind == "DELETED":
                self._nodes.pop(node.metadata.name, None)
            else:
                self._nodes[node.metadata.name] = dict(node.metadata.labels or {})

        run_watch("nodes", self._core.list_node, on_event, self._stop, on_relist=self._nodes.clear)

    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        try:
            response = self._core.read_namespaced_pod(
                name, namespace, _preload_content=False, _request_timeout=2
            )
        except ApiException as error:
            if error.status != 404:
                log.warning("cannot read pod %s/%s: %s", namespace, name, error.status)
            return None
        pod: dict[str, Any] = json.loads(response.data)
        return pod

    def _is_local(self, namespace: str, claim: str) -> bool:
        key = (namespace, claim)
        if key in self._claims:
            return self._claims[key]
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        try:
            pvc = self._core.read_namespaced_persistent_volume_claim(
                claim, namespace, _request_timeout=2
            )
            volume = pvc.spec.volume_name
            if not volume:
                return False  # not bound yet: ask again next time
            local = self._core.read_persistent_volume(volume, _request_timeout=2).spec.local
        except ApiException:
            return False
        self._claims[key] = local is not None
        return self._claims[key]
