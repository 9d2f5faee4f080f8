"""What the rules may know of the cluster, served from watch caches: never an API call
while a review waits.

Each worker process keeps its own caches, each filled by a list-then-watch loop
(webhook.kube_watch) in a background thread:

- Nodes: labels by node name, so a pod's ``spec.nodeName`` or a Binding's target can be
  judged spot or not.
- PersistentVolumeClaims (the volume each is bound to) and PersistentVolumes (whether
  each is ``local``): whether a pod's claim pins it to one node.
- Pods not scheduled yet (field selector ``spec.nodeName=``): the pod a Binding names.
  The scheduler binds pending pods only, so this bounds memory to the pending ones. A
  Binding can reach spotguard before the watch event of its pod (both follow the pod's
  creation); a lookup that misses then waits for the cache, up to
  ``POD_WAIT_SECONDS``, never for the network.
- DaemonSets: uid by namespace and name, to verify a pod's DaemonSet owner reference.

A listing replaces a cache whole, at once: a relist never shows an empty cache.

**Before a cache has synced once**, its lookups answer as if the cluster were empty:
every node and pod is unknown (the policy's ``nodeBinding.unknownNodes`` decides what
an unknown node means; a Binding of an unknown pod is judged without it), no claim is
local, no owner is verified. ``/readyz`` answers 503 naming the unsynced caches, and a
new worker waits for its caches (a few seconds at most) before it accepts connections.

Without cluster access (local runs, the CLI, unit tests) :data:`NO_CLUSTER` knows nothing
and counts as synced.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from policies.decisions import NO_CLUSTER_FACTS, ClusterFacts
from webhook.kube_watch import WATCH_TIMEOUT_SECONDS, WatchStats, run_watch

#: How long a lookup of a pod missing from the pending-pods cache waits for it.
POD_WAIT_SECONDS = 0.25
#: Pods that left the pending cache (scheduled or deleted), remembered so that a Binding
#: of one of them is answered at once instead of waiting.
RECENTLY_LEFT = 4096

JSON = dict[str, Any]
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ClusterAccess(Protocol):
    @property
    def facts(self) -> ClusterFacts: ...

    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None: ...


class WatchedCluster(ClusterAccess, Protocol):
    """Cluster access with caches that sync after start."""

    def unsynced(self) -> tuple[str, ...]:
        """Names of the caches that have not completed their first listing."""

    def wait_synced(self, timeout: float) -> bool:
        """Wait until every cache has synced once; False if ``timeout`` passed first."""


class NoCluster:
    facts = NO_CLUSTER_FACTS

    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return None

    def unsynced(self) -> tuple[str, ...]:
        return ()

    def wait_synced(self, timeout: float) -> bool:
        return True


NO_CLUSTER = NoCluster()


class Cache(Generic[K, V]):
    """One resource's objects, by key, as its watch reports them (a ``WatchTarget``)."""

    def __init__(
        self, name: str, key_of: Callable[[JSON], K | None], value_of: Callable[[JSON], V]
    ) -> None:
        self.name = name
        self._key_of = key_of
        self._value_of = value_of
        self._items: dict[K, V] = {}
        self.synced = threading.Event()
        self.stats = WatchStats()
        self._changed = threading.Condition()
        self._waiting = 0
        self.on_remove: Callable[[K], None] = lambda key: None

    def get(self, key: K) -> V | None:
        return self._items.get(key)

    def __len__(self) -> int:
        return len(self._items)

    def replace(self, items: list[JSON]) -> None:
        fresh: dict[K, V] = {}
        for obj in items:
            key = self._key_of(obj)
            if key is not None:
                fresh[key] = self._value_of(obj)
        self._items = fresh  # one reference swap: readers see the old or the new whole
        self.synced.set()
        self._wake()

    def apply(self, kind: str, obj: JSON) -> None:
        key = self._key_of(obj)
        if key is None:
            return
        if kind == "DELETED":
            self._items.pop(key, None)
            self.on_remove(key)
        else:
            self._items[key] = self._value_of(obj)
            self._wake()

    def wait_for(self, key: K, timeout: float) -> V | None:
        """The value of ``key`` once it is there, or None after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            self._waiting += 1
            try:
                while key not in self._items:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    self._changed.wait(left)
            finally:
                self._waiting -= 1
        return self._items.get(key)

    def _wake(self) -> None:
        if self._waiting:
            with self._changed:
                self._changed.notify_all()


def _name(obj: JSON) -> str | None:
    name = (obj.get("metadata") or {}).get("name")
    return str(name) if name else None


def _namespaced(obj: JSON) -> tuple[str, str] | None:
    metadata = obj.get("metadata") or {}
    if not metadata.get("name"):
        return None
    return (str(metadata.get("namespace") or ""), str(metadata["name"]))


def _labels(node: JSON) -> Mapping[str, str]:
    return dict((node.get("metadata") or {}).get("labels") or {})


def _volume_name(claim: JSON) -> str:
    return str((claim.get("spec") or {}).get("volumeName") or "")


def _is_local_volume(volume: JSON) -> bool:
    return (volume.get("spec") or {}).get("local") is not None


def _uid(obj: JSON) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


def _lean_pod(pod: JSON) -> JSON:
    """The pod without its managedFields (often most of its size, never read by a rule)."""
    metadata = pod.get("metadata")
    if isinstance(metadata, dict) and "managedFields" in metadata:
        pod = {**pod, "metadata": {k: v for k, v in metadata.items() if k != "managedFields"}}
    return pod


class KubeCluster:
    """Cluster facts from watch caches; call :meth:`start` once per process."""

    def __init__(
        self,
        core_api: Any,
        apps_api: Any,
        *,
        pod_wait_seconds: float = POD_WAIT_SECONDS,
        watch_timeout_seconds: int = WATCH_TIMEOUT_SECONDS,
        on_relist: Callable[[str], None] = lambda name: None,
    ) -> None:
        self._core = core_api
        self._apps = apps_api
        self._pod_wait = pod_wait_seconds
        self._on_relist = on_relist
        self._watch_timeout = watch_timeout_seconds
        self._stop = threading.Event()
        self.nodes: Cache[str, Mapping[str, str]] = Cache("nodes", _name, _labels)
        self.claims: Cache[tuple[str, str], str] = Cache(
            "persistentvolumeclaims", _namespaced, _volume_name
        )
        self.volumes: Cache[str, bool] = Cache("persistentvolumes", _name, _is_local_volume)
        self.pending_pods: Cache[tuple[str, str], JSON] = Cache("pods", _namespaced, _lean_pod)
        self.daemonsets: Cache[tuple[str, str], str] = Cache("daemonsets", _namespaced, _uid)
        self._left: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.pending_pods.on_remove = self._remember_left
        self.facts = ClusterFacts(
            node_labels=self.nodes.get,
            local_claims=self._is_local_claim,
            pod=self._pod,
            owner_uid=self._owner_uid,
        )

    @property
    def caches(self) -> tuple[Cache[Any, Any], ...]:
        return (self.nodes, self.claims, self.volumes, self.pending_pods, self.daemonsets)

    def start(self) -> None:
        core, apps = self._core, self._apps
        watches: list[tuple[Cache[Any, Any], Callable[..., Any], dict[str, str]]] = [
            (self.nodes, core.list_node, {}),
            (self.claims, core.list_persistent_volume_claim_for_all_namespaces, {}),
            (self.volumes, core.list_persistent_volume, {}),
            (
                self.pending_pods,
                core.list_pod_for_all_namespaces,
                {"field_selector": "spec.nodeName="},
            ),
            (self.daemonsets, apps.list_daemon_set_for_all_namespaces, {}),
        ]
        for cache, list_function, arguments in watches:
            threading.Thread(
                target=run_watch,
                args=(cache.name, list_function, cache, self._stop),
                kwargs={
                    "stats": cache.stats,
                    "timeout_seconds": self._watch_timeout,
                    "on_relist": lambda name=cache.name: self._on_relist(name),
                    **arguments,
                },
                name=f"cache-{cache.name}",
                daemon=True,
            ).start()

    def stop(self) -> None:
        self._stop.set()

    def unsynced(self) -> tuple[str, ...]:
        return tuple(cache.name for cache in self.caches if not cache.synced.is_set())

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(cache.synced.wait(max(deadline - time.monotonic(), 0)) for cache in self.caches)

    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """Deprecated: use ``facts.pod``. Served from the pending-pods cache, like it."""
        return self._pod(namespace, name)

    def _pod(self, namespace: str, name: str) -> JSON | None:
        key = (namespace, name)
        pod = self.pending_pods.get(key)
        if pod is not None or not self.pending_pods.synced.is_set() or key in self._left:
            return pod
        return self.pending_pods.wait_for(key, self._pod_wait)

    def _remember_left(self, key: tuple[str, str]) -> None:
        self._left[key] = None
        self._left.move_to_end(key)
        while len(self._left) > RECENTLY_LEFT:
            self._left.popitem(last=False)

    def _is_local_claim(self, namespace: str, claim: str) -> bool:
        volume = self.claims.get((namespace, claim))
        return volume is not None and self.volumes.get(volume) is True

    def _owner_uid(self, kind: str, namespace: str, name: str) -> str | None:
        if kind != "DaemonSet":
            return None
        return self.daemonsets.get((namespace, name)) or None
