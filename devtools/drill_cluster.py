"""The drill's hands on the cluster: spotguard installed, the Job applied, notices delivered.

- :func:`start_spotguard`: the webhook (real gunicorn, TLS) with the drill's policy file
  and cluster access, registered from the shipped configurations as in the demo and the
  other e2e tests, live once a canary comes back mutated;
- :func:`apply_training_job`: ``examples/tiny-training-job.yaml`` through ``kubectl apply``
  (so spotguard mutates its pods), with a volume for its claim; :func:`example_args` and
  :func:`reference_weights`: its trainer's settings and its result without preemptions;
- the notices, delivered as the common handlers do: :func:`cordon` and :func:`evict`
  (the Eviction API, as AWS Node Termination Handler and Karpenter drain a node), and
  :func:`taint_no_execute` (Node Termination Handler's spot-interruption taint with
  ``taintEffect: NoExecute``: the taint-eviction controller deletes the pods);
- :class:`PodWatcher`: each pod of a namespace as the API showed it over time.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from controlplane.harness import ControlPlane
from devtools.registration import register, wait_until_called
from devtools.server import REPO, RunningServer, start_server

JOB_MANIFEST = REPO / "examples" / "tiny-training-job.yaml"
JOB_NAME = "tiny-train"
CLAIM_NAME = "tiny-train-checkpoints"
NTH_SPOT_TAINT_KEY = "aws-node-termination-handler/spot-itn"


def start_spotguard(cluster: ControlPlane, workdir: Path, policy: str) -> RunningServer:
    """spotguard serving ``policy`` with cluster access, registered and called."""
    policy_file = workdir / "policy.yaml"
    policy_file.parent.mkdir(parents=True, exist_ok=True)
    policy_file.write_text(policy)
    server = start_server(
        workdir / "webhook", "--policy", str(policy_file),
        "--kubeconfig", str(cluster.kubeconfig), workers=2,
    )  # fmt: skip
    try:
        register(cluster, server.url, server.ca_file)
        cluster.ensure_namespace("spotguard-canary")
        wait_until_called(cluster, "spotguard-canary")
    except BaseException:
        server.stop()
        raise
    return server


def apply_training_job(
    cluster: ControlPlane, namespace: str, volume_dir: Path, extra_args: list[str]
) -> None:
    """The example's claim and Job in ``namespace``; its claim bound to ``volume_dir``.

    The volume is a hostPath PersistentVolume: both kubelets run on this machine, so the
    directory is reachable from either node, as network storage is from any node in a
    cluster. The trainer's variant flags are added to the example's args.
    """
    cluster.ensure_namespace(namespace)
    volume_dir.mkdir(parents=True, exist_ok=True)
    volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"{namespace}-checkpoints"},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": str(volume_dir), "type": "Directory"},
            "claimRef": {"namespace": namespace, "name": CLAIM_NAME},
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(volume), check=True)
    documents = [d for d in yaml.safe_load_all(JOB_MANIFEST.read_text()) if d]
    for document in documents:
        if document["kind"] == "Job":
            container = document["spec"]["template"]["spec"]["containers"][0]
            container["args"] = [*container.get("args", []), *extra_args]
    manifest = {"apiVersion": "v1", "kind": "List", "items": documents}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest), check=True)


def example_args() -> dict[str, int]:
    """The example Job's trainer flags (--steps, --every-steps) as numbers."""
    for document in yaml.safe_load_all(JOB_MANIFEST.read_text()):
        if document and document["kind"] == "Job":
            args = document["spec"]["template"]["spec"]["containers"][0]["args"]
            pairs = (re.fullmatch(r"--([\w-]+)=(\d+)", arg) for arg in args)
            return {m[1]: int(m[2]) for m in pairs if m}
    raise ValueError(f"no Job in {JOB_MANIFEST}")


def reference_weights(steps: int) -> str:
    """The weights after ``steps`` uninterrupted steps of train_tiny, run here."""
    with tempfile.TemporaryDirectory() as scratch:
        env = {
            **os.environ,
            "SPOTGUARD_CHECKPOINT_DIR": scratch,
            "PYTHONPATH": str(REPO / "trainer"),
        }
        result = subprocess.run(
            [sys.executable, str(REPO / "examples" / "train_tiny.py"), f"--steps={steps}"],
            env=env, capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
    return result.stdout.strip().splitlines()[-1].split(" ", 3)[3]


def _patch_node(cluster: ControlPlane, node: str, spec: dict[str, Any]) -> None:
    status, body = cluster.request("PATCH", f"/api/v1/nodes/{node}", {"spec": spec})
    if status != 200:
        raise RuntimeError(f"patching node {node}: HTTP {status} {body}")


def cordon(cluster: ControlPlane, node: str, unschedulable: bool = True) -> None:
    _patch_node(cluster, node, {"unschedulable": unschedulable})


def evict(cluster: ControlPlane, namespace: str, pod: str) -> None:
    """POST an Eviction (policy/v1), as a drain does; the pod's own grace period applies."""
    eviction = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod, "namespace": namespace},
    }
    path = f"/api/v1/namespaces/{namespace}/pods/{pod}/eviction"
    status, body = cluster.request("POST", path, eviction)
    if status != 201:
        raise RuntimeError(f"eviction of {namespace}/{pod}: HTTP {status} {body}")


def node_taints(cluster: ControlPlane, node: str) -> list[dict[str, str]]:
    status, body = cluster.request("GET", f"/api/v1/nodes/{node}")
    if status != 200:
        raise RuntimeError(f"reading node {node}: HTTP {status}")
    taints: list[dict[str, str]] = body["spec"].get("taints") or []
    return taints


def taint_no_execute(cluster: ControlPlane, node: str, value: str) -> None:
    taint = {"key": NTH_SPOT_TAINT_KEY, "value": value, "effect": "NoExecute"}
    _patch_node(cluster, node, {"taints": [*node_taints(cluster, node), taint]})


def restore_node(cluster: ControlPlane, node: str) -> None:
    """Uncordon ``node`` and remove the notice's taint (the node is back, or replaced)."""
    kept = [t for t in node_taints(cluster, node) if t["key"] != NTH_SPOT_TAINT_KEY]
    _patch_node(cluster, node, {"unschedulable": False, "taints": kept})


@dataclass
class PodRecord:
    """One pod as the API showed it: first seen, scheduled, and how its trainer ended."""

    name: str
    created: float
    obj: dict[str, Any]  # the pod as last seen
    node: str = ""
    scheduled: float | None = None
    running: float | None = None
    exit_code: int | None = None
    finished: float | None = None
    deleted: float | None = None


@dataclass
class PodWatcher:
    """Polls a namespace's pods every 0.1 s in a thread; keeps every pod it saw."""

    cluster: ControlPlane
    namespace: str
    pods: dict[str, PodRecord] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        threading.Thread(target=self._run, name=f"pods-{self.namespace}", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.poll()

    def poll(self) -> None:
        status, body = self.cluster.request("GET", f"/api/v1/namespaces/{self.namespace}/pods")
        if status != 200 or not isinstance(body, dict):
            return
        now = time.time()
        seen = set()
        with self._lock:
            for pod in body["items"]:
                name = pod["metadata"]["name"]
                seen.add(name)
                record = self.pods.setdefault(name, PodRecord(name, now, pod))
                record.obj = pod
                if pod["spec"].get("nodeName") and record.scheduled is None:
                    record.node, record.scheduled = pod["spec"]["nodeName"], now
                if pod["status"].get("phase") == "Running" and record.running is None:
                    record.running = now
                for status_ in pod["status"].get("containerStatuses") or []:
                    terminated = status_.get("state", {}).get("terminated")
                    if terminated and record.exit_code is None:
                        record.exit_code, record.finished = terminated["exitCode"], now
            for name, record in self.pods.items():
                if name not in seen and record.deleted is None:
                    record.deleted = now

    def snapshot(self) -> list[PodRecord]:
        with self._lock:
            return sorted(self.pods.values(), key=lambda r: r.created)

    def wait(
        self,
        what: str,
        check: Callable[[list[PodRecord]], PodRecord | None],
        timeout: float = 90.0,
    ) -> PodRecord:
        """Poll until ``check(self.snapshot())`` returns a pod."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.poll()
            found = check(self.snapshot())
            if found:
                return found
            self.cluster.check_alive()
            time.sleep(0.1)
        raise TimeoutError(f"{self.namespace}: {what} within {timeout:.0f} s")
