"""The watch loop and the caches behind ClusterFacts, with a scripted API (no server):
bookmarks, 410 Gone, broken watches, atomic relists, unsynced caches, the pod wait.
The same against the real API server: tests/e2e/test_caches_live.py."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from devtools.reviews import plain_pod, review
from policies.loader import default_policy
from webhook.app import WebhookSettings, create_app
from webhook.cluster import POD_WAIT_SECONDS, Cache, KubeCluster
from webhook.kube_watch import WatchStats, run_watch
from webhook.policy_store import PolicyState, PolicyStore


def node(name: str, version: int, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": str(version), "labels": labels}}


def event(kind: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


def bookmark(version: int) -> bytes:
    return event(
        "BOOKMARK",
        {"kind": "Node", "apiVersion": "v1", "metadata": {"resourceVersion": str(version)}},
    )


class Stream:
    """A watch response as urllib3 hands it to the kubernetes client."""

    def __init__(self, chunks: list[bytes | Exception], on_end: Any = None) -> None:
        self._chunks = chunks
        self._on_end = on_end
        self.closed = False

    def stream(self, amt: object = None, decode_content: bool = False) -> Iterator[bytes]:
        for chunk in self._chunks:
            if isinstance(chunk, Exception):
                raise chunk
            yield chunk
        if self._on_end is not None:
            self._on_end()

    def close(self) -> None:
        self.closed = True

    def release_conn(self) -> None:
        pass


class Listing:
    def __init__(self, items: list[dict[str, Any]], version: int) -> None:
        self.data = json.dumps(
            {"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": str(version)},
             "items": items}
        ).encode()  # fmt: skip


class ScriptedAPI:
    """Answers list calls and watch calls in turn from scripts; stops the loop after the
    last watch."""

    def __init__(
        self,
        listings: list[Listing],
        watches: list[list[bytes | Exception]],
        stop: threading.Event,
        on_list: Any = None,
    ) -> None:
        self.listings, self.watches, self.stop = listings, watches, stop
        self.watch_versions: list[str] = []
        self.on_list = on_list

    def __call__(self, **arguments: Any) -> Any:
        if arguments.get("watch"):
            self.watch_versions.append(arguments["resource_version"])
            assert arguments["allow_watch_bookmarks"] is True
            last = len(self.watches) == 1
            return Stream(self.watches.pop(0), self.stop.set if last else None)
        if self.on_list is not None:
            self.on_list()
        return self.listings.pop(0)


def run(api: ScriptedAPI, cache: Cache[Any, Any], stop: threading.Event) -> WatchStats:
    stats = WatchStats()
    thread = threading.Thread(target=run_watch, args=("nodes", api, cache, stop),
                              kwargs={"stats": stats})  # fmt: skip
    thread.start()
    thread.join(15)
    assert not thread.is_alive()
    return stats


def node_cache() -> Cache[str, dict[str, str]]:
    return Cache(
        "nodes",
        lambda obj: obj["metadata"]["name"],
        lambda obj: dict(obj["metadata"].get("labels") or {}),
    )


def test_the_clients_watch_hands_bookmarks_over_as_plain_dicts() -> None:
    """Why the old loop relisted at every bookmark: it read ``event["object"].metadata``,
    and the kubernetes client leaves a bookmark's object a dict."""
    from kubernetes import watch  # noqa: PLC0415

    parsed = watch.Watch().unmarshal_event(bookmark(15).decode(), "V1Node")
    assert parsed["type"] == "BOOKMARK" and isinstance(parsed["object"], dict)
    with pytest.raises(AttributeError):
        _ = parsed["object"].metadata  # type: ignore[attr-defined]


def test_a_bookmark_moves_the_resource_version_without_an_event_or_a_relist() -> None:
    stop = threading.Event()
    api = ScriptedAPI(
        [Listing([node("a", 10, spot="no")], 10)],
        [
            [event("ADDED", node("b", 11)), bookmark(15)],  # then the watch times out
            [event("MODIFIED", node("a", 16, spot="yes"))],
        ],
        stop,
    )
    cache = node_cache()
    stats = run(api, cache, stop)
    assert api.watch_versions == ["10", "15"]  # resumed from the bookmark's version
    assert (stats.relists, stats.bookmarks, stats.events) == (1, 1, 2)
    assert cache.get("a") == {"spot": "yes"} and cache.get("b") == {}


def test_gone_relists_and_a_relist_replaces_the_cache_at_once() -> None:
    stop = threading.Event()
    cache = node_cache()
    seen_during_relist: list[int] = []
    api = ScriptedAPI(
        [Listing([node("old", 10)], 10), Listing([node("new", 30)], 30)],
        [
            [event("ERROR", {"kind": "Status", "code": 410, "message": "too old"})],
            [bookmark(31)],
        ],
        stop,
        on_list=lambda: seen_during_relist.append(len(cache)),
    )
    stats = run(api, cache, stop)
    assert stats.relists == 2
    assert seen_during_relist == [0, 1]  # the relist did not empty the cache first
    assert cache.get("old") is None and cache.get("new") == {}
    assert api.watch_versions == ["10", "30"]


def test_a_broken_watch_resumes_from_the_last_version_without_relisting() -> None:
    stop = threading.Event()
    api = ScriptedAPI(
        [Listing([], 10)],
        [
            [event("ADDED", node("a", 12)), ConnectionResetError("connection reset")],
            [event("ERROR", {"kind": "Status", "code": 500, "message": "etcd hiccup"})],
            [event("DELETED", node("a", 14))],
        ],
        stop,
    )
    cache = node_cache()
    stats = run(api, cache, stop)
    assert stats.relists == 1 and stats.failures == 2
    assert api.watch_versions == ["10", "12", "12"]
    assert cache.get("a") is None


class Never:
    """An API that never answers (a paused API server, or one not reachable yet)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def __getattr__(self, name: str) -> Any:
        def call(**arguments: Any) -> Any:
            self.release.wait()
            raise ConnectionError("gone")

        return call


def test_before_its_caches_sync_a_worker_knows_nothing_and_is_not_ready() -> None:
    api = Never()
    cluster = KubeCluster(api, api)
    cluster.start()
    try:
        assert cluster.unsynced() == (
            "nodes", "persistentvolumeclaims", "persistentvolumes", "pods", "daemonsets",
        )  # fmt: skip
        assert cluster.wait_synced(0.2) is False
        facts = cluster.facts
        started = time.monotonic()
        assert facts.node_labels("spot-1") is None
        assert facts.pod("ml", "trainer-0") is None  # no wait before the first sync
        assert facts.is_local_claim("ml", "data") is False
        assert facts.owner_uid("DaemonSet", "kube-system", "agent") is None
        assert time.monotonic() - started < 0.1

        store = PolicyStore(PolicyState(default_policy(), "test"))
        app = create_app(
            WebhookSettings(policies=store, cluster=cluster, unsynced_caches=cluster.unsynced)
        ).test_client()
        ready = app.get("/readyz")
        assert ready.status_code == 503
        assert ready.json is not None
        assert ready.json["status"].startswith("cluster caches not synced yet: nodes, ")
        assert "daemonsets" in ready.json["clusterCachesUnsynced"]
        reviewed = app.post("/validate", json=review(plain_pod()))  # still answered
        assert reviewed.status_code == 200
    finally:
        cluster.stop()
        api.release.set()


def synced_cluster() -> KubeCluster:
    api = Never()
    cluster = KubeCluster(api, api)
    for cache in cluster.caches:
        cache.replace([])
    return cluster


def pending_pod(name: str) -> dict[str, Any]:
    return {"kind": "Pod", "metadata": {"name": name, "namespace": "ml", "managedFields": [{}]}}


def test_a_binding_that_arrives_before_its_pods_event_waits_for_the_cache() -> None:
    cluster = synced_cluster()
    assert cluster.unsynced() == ()
    threading.Timer(0.05, cluster.pending_pods.apply, ("ADDED", pending_pod("late"))).start()
    started = time.monotonic()
    pod = cluster.facts.pod("ml", "late")
    waited = time.monotonic() - started
    assert pod is not None and pod["metadata"]["name"] == "late"
    assert "managedFields" not in pod["metadata"]
    assert waited < POD_WAIT_SECONDS

    started = time.monotonic()
    assert cluster.facts.pod("ml", "never") is None  # bounded: the wait, never the network
    assert POD_WAIT_SECONDS <= time.monotonic() - started < POD_WAIT_SECONDS + 0.2

    cluster.pending_pods.apply("DELETED", pending_pod("late"))  # scheduled: left the cache
    started = time.monotonic()
    assert cluster.facts.pod("ml", "late") is None
    assert time.monotonic() - started < 0.05  # known to have left: no wait
    assert cluster.get_pod("ml", "late") is None  # the deprecated lookup, same cache


def test_local_claims_and_daemonset_owners_come_from_their_caches() -> None:
    cluster = synced_cluster()
    cluster.claims.replace(
        [
            {"metadata": {"namespace": "ml", "name": "local-data"}, "spec": {"volumeName": "pv-1"}},
            {"metadata": {"namespace": "ml", "name": "net-data"}, "spec": {"volumeName": "pv-2"}},
            {"metadata": {"namespace": "ml", "name": "unbound"}, "spec": {}},
        ]
    )
    cluster.volumes.replace(
        [
            {"metadata": {"name": "pv-1"}, "spec": {"local": {"path": "/mnt/disks/1"}}},
            {"metadata": {"name": "pv-2"}, "spec": {"nfs": {"server": "nfs", "path": "/"}}},
        ]
    )
    cluster.daemonsets.apply(
        "ADDED", {"metadata": {"namespace": "kube-system", "name": "agent", "uid": "u-1"}}
    )
    facts = cluster.facts
    assert facts.is_local_claim("ml", "local-data") is True
    assert facts.is_local_claim("ml", "net-data") is False
    assert facts.is_local_claim("ml", "unbound") is False
    assert facts.is_local_claim("other", "local-data") is False
    assert facts.owner_uid("DaemonSet", "kube-system", "agent") == "u-1"
    assert facts.owner_uid("ReplicaSet", "kube-system", "agent") is None
    assert facts.owner_uid("DaemonSet", "kube-system", "other") is None
