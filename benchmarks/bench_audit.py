"""Benchmark the cluster audit: the time to judge 5,000 pods on a real kube-apiserver.

Run: ``python -m benchmarks.bench_audit [--pods 5000] [--namespaces 10]``. It starts a
control plane (etcd and kube-apiserver, no controllers: nothing else loads the server),
registers the simulated nodes (spot and on-demand), creates the pods in parallel over
keep-alive connections (bound to nodes by ``spec.nodeName``: one in ten on a spot node,
one in ten tolerating spot, one in five labelled fault-tolerant), then prints:

- the baseline: listing every pod, page by page (500 a page), without judging;
- the audit (``run_audit``, what ``spotguard audit`` and the background audit run): its
  time and pods per second, as a ratio to the baseline, best and median of three runs;
  target under 30 s;
- memory: the audit's peak of Python allocations against holding every pod at once
  (both measured with tracemalloc, in runs of their own, since tracing slows them);
- the load average, since the machine may be shared.

Figures depend on the machine and its load; the ratios travel better.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from controlplane.harness import ControlPlane
from controlplane.nodegroups import NODE_GROUPS, node_manifest
from policies.loader import default_policy
from webhook.audit.inventory import Inventory
from webhook.audit.scan import FAIL, WARN, run_audit
from webhook.kube_json import KubeJSON

TARGET_SECONDS = 30.0
SPOT_NODE = next(g for g in NODE_GROUPS if g.name == "spot-untainted").nodes[0].name
ON_DEMAND_NODES = [n.name for g in NODE_GROUPS if g.name == "on-demand" for n in g.nodes][1:]


def pod(index: int, namespace: str) -> dict[str, Any]:
    """Pod ``index``: one in ten on a spot node, one in ten tolerating spot, one in five
    labelled fault-tolerant, the rest ordinary pods on on-demand nodes."""
    spec: dict[str, Any] = {
        "containers": [{"name": "app", "image": "registry.example/app:1"}],
        "nodeName": ON_DEMAND_NODES[index % len(ON_DEMAND_NODES)],
    }
    labels = {"app": f"app-{index % 50}"}
    if index % 10 == 0:
        spec["nodeName"] = SPOT_NODE
    elif index % 10 == 1:
        spec["tolerations"] = [{"key": "spot", "operator": "Exists"}]
    elif index % 5 == 2:
        labels["spotguard.dev/fault-tolerant"] = "true"
        spec["nodeName"] = SPOT_NODE
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"pod-{index:05}", "namespace": namespace, "labels": labels},
        "spec": spec,
    }


def create_pods(plane: ControlPlane, count: int, namespaces: list[str], workers: int) -> float:
    """Seconds to create ``count`` pods with ``workers`` keep-alive connections."""
    local = threading.local()

    def session() -> requests.Session:
        if not hasattr(local, "session"):
            local.session = requests.Session()
            local.session.trust_env = False
            local.session.verify = str(plane.ca_file)
            local.session.headers["Authorization"] = f"Bearer {plane.token}"
        return local.session  # type: ignore[no-any-return]

    def create(index: int) -> None:
        namespace = namespaces[index % len(namespaces)]
        url = f"{plane.server}/api/v1/namespaces/{namespace}/pods"
        for _ in range(5):
            reply = session().post(url, json=pod(index, namespace), timeout=30)
            if reply.status_code in (201, 409):
                return
            time.sleep(0.5)  # 429 or 5xx from a busy server: retry
        reply.raise_for_status()

    started = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(create, range(count)))
    return time.monotonic() - started


def list_all(kube: KubeJSON, keep: bool = False) -> tuple[int, list[Any]]:
    kept: list[Any] = []
    count = 0
    for page in kube.pages("/api/v1/pods"):
        count += len(page)
        if keep:
            kept.append(page)
    return count, kept


def timed(function: Any) -> float:
    started = time.monotonic()
    function()
    return time.monotonic() - started


def peak_mib(function: Any) -> float:
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_audit")
    parser.add_argument("--pods", type=int, default=5000)
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--workers", type=int, default=8, help="parallel pod creations")
    args = parser.parse_args(argv)
    from kubernetes import config  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="spotguard-bench-audit-") as workdir:
        plane = ControlPlane(Path(workdir), controllers=False, scheduler=False, nodes=False)
        with plane:
            version = plane.request("GET", "/version")[1]["gitVersion"]
            for group in NODE_GROUPS:
                for node in group.nodes:
                    plane.request("POST", "/api/v1/nodes", node_manifest(group, node, version))
            namespaces = [f"team-{i:02}" for i in range(args.namespaces)]
            for namespace in namespaces:
                plane.ensure_namespace(namespace)
            created = create_pods(plane, args.pods, namespaces, args.workers)
            print(f"created {args.pods} pods in {args.namespaces} namespaces in {created:.1f} s "
                  f"({args.pods / created:.0f}/s, {args.workers} connections)")  # fmt: skip

            config.load_kube_config(str(plane.kubeconfig))
            kube = KubeJSON(timeout=120)
            policy = default_policy()
            counted, _ = list_all(kube)
            assert counted == args.pods, counted
            lists, audits = [], []
            result = None
            for _ in range(3):
                lists.append(timed(lambda: list_all(kube)))
                started = time.monotonic()
                result = run_audit(Inventory(kube), policy)
                audits.append(time.monotonic() - started)
            assert result is not None
            baseline = statistics.median(lists)
            print(f"baseline, list {counted} pods in pages of 500: median {baseline:.2f} s "
                  f"(runs: {', '.join(f'{t:.2f}' for t in lists)})")  # fmt: skip
            best, median = min(audits), statistics.median(audits)
            judged = sum(result.judged.values())
            print(f"audit of {judged} pods: best {best:.2f} s, median {median:.2f} s "
                  f"({judged / median:.0f} pods/s) = {median / baseline:.1f}x the listing "
                  f"(runs: {', '.join(f'{t:.2f}' for t in audits)}); target < {TARGET_SECONDS:.0f}"
                  f" s: {'met' if median < TARGET_SECONDS else 'NOT met'}")  # fmt: skip
            passed = sum(result.passed.values())
            print(f"  objects: {result.count(FAIL)} fail, {result.count(WARN)} warn, {passed} "
                  f"pass, in {len(result.judged)} namespaces")  # fmt: skip
            audit_peak = peak_mib(lambda: run_audit(Inventory(kube), policy))
            held_peak = peak_mib(lambda: list_all(kube, keep=True))
            print(f"memory (tracemalloc peak): audit {audit_peak:.1f} MiB, holding every pod "
                  f"at once {held_peak:.1f} MiB ({audit_peak / held_peak:.2f}x)")  # fmt: skip
            load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
            print(f"load average (1, 5, 15 min) at the end: {load} on {os.cpu_count()} cores")
            return 0 if median < TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
