"""The webhook's watch caches against the real API server: watches that stay up, and
reviews that need cluster facts answered while the API server does not answer at all."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.harness import ControlPlane
from controlplane.nodegroups import node_group
from controlplane.polling import wait_for
from tests.e2e.conftest import Webhook
from webhook.cluster import KubeCluster

pytestmark = pytest.mark.e2e
SPOT_NODE = node_group("spot-untainted").node_names[0]


@pytest.fixture
def caches(cluster: ControlPlane) -> Iterator[KubeCluster]:
    """The webhook's caches, in this process, with watch requests of 4 s."""
    from kubernetes import client, config  # noqa: PLC0415

    api_client = config.new_client_from_config(str(cluster.kubeconfig))
    watched = KubeCluster(
        client.CoreV1Api(api_client), client.AppsV1Api(api_client), watch_timeout_seconds=4
    )
    watched.start()
    yield watched
    watched.stop()


def test_watches_resume_from_bookmarks_and_never_relist(
    cluster: ControlPlane, caches: KubeCluster, namespace: str
) -> None:
    assert caches.wait_synced(30), caches.unsynced()
    for round_ in range(7):  # 14 s: three watch requests per cache, ended by the server
        cluster.kubectl("label", "node", SPOT_NODE, f"e2e-watch={round_}", "--overwrite",
                        check=True)  # fmt: skip
        time.sleep(2)
    wait_for(lambda: (caches.facts.node_labels(SPOT_NODE) or {}).get("e2e-watch") == "6", 5,
             "the last label in the node cache")  # fmt: skip
    for cache in caches.caches:
        print(f"{cache.name}: {cache.stats}")
        assert cache.stats.relists == 1, cache.name  # the first listing only
        assert cache.stats.resumes >= 2, cache.name  # watches ended and were resumed
        assert cache.stats.failures == 0, cache.name
    assert caches.nodes.stats.bookmarks >= 1  # resumed from a bookmark's resourceVersion
    cluster.kubectl("label", "node", SPOT_NODE, "e2e-watch-", check=True)


def apiserver_pid(cluster: ControlPlane) -> int:
    """The control plane's kube-apiserver, found by its --secure-port among processes."""
    wanted = f"--secure-port={cluster.apiserver_port}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                arguments = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if arguments[0].endswith(b"kube-apiserver") and wanted in arguments:
                return int(entry.name)
    raise LookupError("kube-apiserver not found")


def pod(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, **spec.pop("metadata", {})},
        "spec": {"containers": [{"name": "c", "image": "python:3.11-slim"}], **spec},
    }


def admission_review(
    namespace: str, obj: dict[str, Any], kind: str = "Pod", sub_resource: str = ""
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "uid": str(uuid.uuid4()),
        "kind": {"group": "", "version": "v1", "kind": kind},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": namespace,
        "operation": "CREATE",
        "userInfo": {"username": "system:kube-scheduler"},
        "object": obj,
        "oldObject": None,
        "dryRun": False,
    }
    if sub_resource:
        request["subResource"] = sub_resource
        request["name"] = obj["metadata"]["name"]
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def local_volume(cluster: ControlPlane, namespace: str) -> str:
    """A claim pre-bound to a `local` PersistentVolume; returns the claim's name."""
    name = f"local-{namespace}"
    volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "local",
            "local": {"path": "/mnt/disks/1"},
            "claimRef": {"namespace": namespace, "name": "data"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [SPOT_NODE]}]}]}},
        },
    }  # fmt: skip
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "local",
            "volumeName": name,
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    assert cluster.request("POST", "/api/v1/persistentvolumes", volume)[0] == 201
    path = f"/api/v1/namespaces/{namespace}/persistentvolumeclaims"
    assert cluster.request("POST", path, claim)[0] == 201
    return "data"


def test_reviews_needing_cluster_facts_are_answered_while_the_api_server_is_paused(
    cluster: ControlPlane, enforce: Webhook, namespace: str
) -> None:
    # A pod waiting for a scheduler that does not exist, a claim on a local volume.
    pending = pod("waiting", schedulerName="nobody")
    assert cluster.request("POST", f"/api/v1/namespaces/{namespace}/pods", pending)[0] == 201
    claim = local_volume(cluster, namespace)
    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "waiting", "namespace": namespace},
        "target": {"apiVersion": "v1", "kind": "Node", "name": SPOT_NODE},
    }
    checks = {
        "binding of a pending pod to a spot node": (
            "/validate",
            admission_review(namespace, binding, "Binding", "binding"),
            "spot-node-binding",
        ),
        "pod with spec.nodeName of a spot node": (
            "/validate",
            admission_review(namespace, pod("pinned", nodeName=SPOT_NODE)),
            SPOT_NODE,
        ),
        "fault-tolerant pod with a claim on a local volume (kept off spot)": (
            "/mutate",
            admission_review(namespace, pod(
                "keeper",
                metadata={"labels": {"spotguard.dev/fault-tolerant": "true"}},
                volumes=[{"name": "d", "persistentVolumeClaim": {"claimName": claim}}],
            )),
            "local PersistentVolume",
        ),
    }  # fmt: skip
    server = enforce.running
    session = server.session()

    def answer(path: str, review: dict[str, Any]) -> str:
        """The denial, or the warnings: what the cluster facts made the rules say."""
        response = session.post(server.url + path, json=review, timeout=10).json()["response"]
        if not response["allowed"]:
            return str(response["status"]["message"])
        return " ".join(response.get("warnings") or [])

    # Every worker's caches have the objects: each check decided so on new connections.
    for what, (path, review, expected) in checks.items():

        def decided(p: str = path, r: dict[str, Any] = review, e: str = expected) -> bool:
            return all(e in answer(p, r) for _ in range(4))

        wait_for(decided, 20, f"{what}: decided from the caches")

    paused = apiserver_pid(cluster)
    os.kill(paused, signal.SIGSTOP)
    timings: dict[str, list[float]] = {what: [] for what in checks}
    try:
        for _ in range(5):
            for what, (path, review, expected) in checks.items():
                started = time.monotonic()
                assert expected in answer(path, review), what
                timings[what].append(time.monotonic() - started)
        with pytest.raises(TimeoutError):  # the API server is indeed not answering
            probe = socket.create_connection(("127.0.0.1", cluster.apiserver_port), timeout=1)
            with ssl.create_default_context(cafile=str(cluster.ca_file)).wrap_socket(
                probe, server_hostname="127.0.0.1"
            ):
                pass
    finally:
        os.kill(paused, signal.SIGCONT)
        session.close()
    for what, seconds in timings.items():
        print(f"{what}: median {statistics.median(seconds) * 1000:.1f} ms, "
              f"max {max(seconds) * 1000:.1f} ms (API server paused)")  # fmt: skip
        # Every review within 50 ms (here about 2 ms); the old lookups waited up to 2 s
        # per API call.
        assert max(seconds) < 0.05, what
    cluster.request("DELETE", f"/api/v1/persistentvolumes/local-{namespace}")
