"""Watch caches against a real API server for a long time: do they ever relist?

Run: ``python -m benchmarks.watch_endurance --minutes 30`` (not in CI). It starts the
project's control plane (kube-apiserver, etcd, simulated nodes kept Ready by kwok, so
node objects change on their own), runs the webhook's watch caches (webhook.cluster)
with their production settings, and meanwhile labels a node and creates and deletes an
unscheduled pod every few seconds. At the end it prints, per cache, the full listings
(the first one included), bookmarks, events, resumed watches and failures, and checks
that each cache agrees with the API server.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from controlplane.build import ensure_binaries
from controlplane.harness import ControlPlane, node_group
from webhook import kube_watch
from webhook.cluster import KubeCluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.watch_endurance")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument(
        "--watch-timeout",
        type=int,
        default=kube_watch.WATCH_TIMEOUT_SECONDS,
        help="seconds per watch request (default: the server's, %(default)s)",
    )
    parser.add_argument("--every", type=float, default=5.0, help="seconds between changes")
    args = parser.parse_args(argv)

    from kubernetes import client, config  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="spotguard-watch-") as tmp:
        plane = ControlPlane(
            Path(tmp), bin_dir=ensure_binaries(), controllers=False, scheduler=False, nodes=True
        )
        with plane:
            config.load_kube_config(str(plane.kubeconfig))
            cluster = KubeCluster(
                client.CoreV1Api(), client.AppsV1Api(), watch_timeout_seconds=args.watch_timeout
            )
            cluster.start()
            assert cluster.wait_synced(30), cluster.unsynced()
            plane.ensure_namespace("endurance")
            node = node_group("spot-untainted").node_names[0]
            started, changes = time.monotonic(), 0
            while time.monotonic() - started < args.minutes * 60:
                changes += 1
                plane.kubectl("label", "node", node, f"endurance={changes}", "--overwrite",
                              check=True)  # fmt: skip
                spec = {"schedulerName": "nobody", "containers": [{"name": "c", "image": "x"}]}
                pod = json.dumps(
                    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{changes}"},
                     "spec": spec}
                )  # fmt: skip
                plane.kubectl("create", "-n", "endurance", "-f", "-", input=pod, check=True)
                plane.kubectl("delete", "pod", f"p{changes - 1}", "-n", "endurance",
                              "--wait=false", "--ignore-not-found")  # fmt: skip
                time.sleep(args.every)
            time.sleep(2)
            minutes = (time.monotonic() - started) / 60
            labels = cluster.facts.node_labels(node) or {}
            in_cache = {name for _, name in list(cluster.pending_pods._items)}
            print(f"\n{minutes:.1f} minutes, watch requests of {args.watch_timeout} s, "
                  f"{changes} rounds of changes (a label, a pod created, one deleted)")  # fmt: skip
            print(f"  {'cache':<24}{'listings':>9}{'bookmarks':>10}{'events':>8}"
                  f"{'resumes':>8}{'failures':>9}")  # fmt: skip
            for cache in cluster.caches:
                s = cache.stats
                print(f"  {cache.name:<24}{s.relists:>9}{s.bookmarks:>10}{s.events:>8}"
                      f"{s.resumes:>8}{s.failures:>9}")  # fmt: skip
            agree = labels.get("endurance") == str(changes) and f"p{changes}" in in_cache
            print(f"  node label and newest pending pod in the caches: {'yes' if agree else 'NO'}")
            cluster.stop()
            relisted = any(cache.stats.relists != 1 for cache in cluster.caches)
            return 1 if relisted or not agree else 0


if __name__ == "__main__":
    sys.exit(main())
