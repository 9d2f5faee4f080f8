"""The local demo (``make demo``): a real control plane, the webhook, the examples.

It starts etcd, kube-apiserver, controller-manager, scheduler and simulated spot and
on-demand node groups on 127.0.0.1, starts spotguard with its built-in policy, registers
the shipped webhook configurations and applies the manifests in ``examples/`` with
kubectl, printing what was injected, rejected and warned, and where each pod ran. Then it
stops everything it started.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controlplane.build import ensure_binaries
from controlplane.harness import NODE_GROUPS, ControlPlane, group_of_node
from devtools.registration import INJECTED_ANNOTATION, register, wait_until_called
from devtools.server import REPO, RunningServer, start_server
from policies.loader import parse_policy_text

EXAMPLES = REPO / "examples"
NAMESPACE = "ml-team"


def say(text: str = "") -> None:
    print(text, flush=True)


def heading(text: str) -> None:
    say(f"\n=== {text} " + "=" * max(0, 70 - len(text)))


def kubectl_apply(cluster: ControlPlane, manifest: Path) -> tuple[bool, str, str]:
    say(f"$ kubectl apply -n {NAMESPACE} -f examples/{manifest.name}")
    result = cluster.kubectl("apply", "-n", NAMESPACE, "-f", str(manifest))
    for line in (result.stdout + result.stderr).strip().splitlines():
        say(f"  {line}")
    return result.returncode == 0, result.stdout, result.stderr


def pods(cluster: ControlPlane, selector: str) -> list[dict[str, Any]]:
    result = cluster.kubectl(
        "get", "pods", "-n", NAMESPACE, "-l", selector, "-o", "json", check=True
    )
    items: list[dict[str, Any]] = json.loads(result.stdout)["items"]
    return items


def wait_for_placement(cluster: ControlPlane, selector: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = pods(cluster, selector)
        if len([p for p in found if p["spec"].get("nodeName")]) >= count:
            return found
        time.sleep(0.3)
    raise TimeoutError(f"pods {selector} were not scheduled within 60 s")


def describe_injection(pod: dict[str, Any]) -> list[str]:
    """What spotguard put into a pod, in a few readable lines."""
    spec = pod["spec"]
    record = json.loads(pod["metadata"].get("annotations", {}).get(INJECTED_ANNOTATION, "{}"))
    affinity = spec.get("affinity", {}).get("nodeAffinity", {})
    preferred = affinity.get("preferredDuringSchedulingIgnoredDuringExecution", [])
    terms = affinity.get("requiredDuringSchedulingIgnoredDuringExecution", {}).get(
        "nodeSelectorTerms", [{}]
    )
    required = ", ".join(
        f"{e['key']} {e['operator']}" for e in terms[0].get("matchExpressions", [])
    )
    spot_tolerations = ", ".join(
        f"{t['key']}={t.get('value', '*')}:{t.get('effect', '*')}"
        for t in spec.get("tolerations", [])
        if "spot" in t.get("key", "") or t.get("value") == "spot"
    )
    command = spec["containers"][0].get("lifecycle", {}).get("preStop", {}).get("exec", {})
    script = command.get("command", ["", "", ""])[-1]
    injected = ", ".join(record.get("injected", []))
    return [
        f"injected (policy revision {record.get('revision', '-')}): {injected}",
        f"tolerations: {spot_tolerations}",
        f"prefers {len(preferred)} spot node labels; requires: {required}",
        f"preStop: /bin/sh -c <checkpoint hook, {len(script.splitlines())} lines>",
        f"terminationGracePeriodSeconds: {spec.get('terminationGracePeriodSeconds')}",
    ]


def placement(pod: dict[str, Any]) -> str:
    node = pod["spec"].get("nodeName")
    if not node:
        return "not scheduled"
    group = group_of_node(node)
    kind = "SPOT" if group.spot else "on-demand"
    return f"{node} ({group.name}, {kind})"


def run(workdir: Path) -> None:
    heading("1. Control plane (built from Go modules, cached)")
    bin_dir = ensure_binaries()
    cluster = ControlPlane(workdir / "cluster", bin_dir=bin_dir)
    started = time.monotonic()
    cluster.start()
    try:
        elapsed = time.monotonic() - started
        say(f"etcd, kube-apiserver, controller-manager, scheduler, kwok: up in {elapsed:.1f} s")
        for group in NODE_GROUPS:
            taints = {f"{t.key}={t.value}:{t.effect}" for n in group.nodes for t in n.taints}
            say(
                f"  node group {group.name} ({len(group.nodes)} nodes): labels {dict(group.labels)}"
            )
            say(f"    taints: {', '.join(sorted(taints)) or 'none'}")

        heading("2. spotguard webhook (gunicorn over TLS, built-in default policy)")
        policy_file = workdir / "policy.yaml"
        policy_file.write_text("# empty: the built-in default policy\n")
        server = start_server(workdir / "webhook", "--policy", str(policy_file), workers=2)
        try:
            register(cluster, server.url, server.ca_file)
            cluster.ensure_namespace(NAMESPACE)
            waited = wait_until_called(cluster, NAMESPACE)
            say(f"webhook at {server.url}, registered (failurePolicy Ignore)")
            say(f"  the API server calls it {waited:.1f} s after registration")
            demo_steps(cluster, policy_file, server)
        finally:
            server.stop()
            say(f"\nwebhook log: {server.log_file}")
    finally:
        cluster.stop()
        say(f"control plane logs: {cluster.logs_dir}")


def demo_steps(cluster: ControlPlane, policy_file: Path, server: RunningServer) -> None:
    heading("3. A fault-tolerant training Job is mutated and placed on spot")
    ok, _, _ = kubectl_apply(cluster, EXAMPLES / "training-job.yaml")
    assert ok
    job_pods = wait_for_placement(cluster, "app=resnet-train", 3)
    for line in describe_injection(job_pods[0]):
        say(f"  {line}")
    for pod in job_pods:
        say(f"  pod {pod['metadata']['name']:<22} -> {placement(pod)}")

    heading("4. A pod that is not fault-tolerant but tolerates spot is rejected")
    ok, _, _ = kubectl_apply(cluster, EXAMPLES / "web-on-spot.yaml")
    say(f"  => {'ADMITTED (unexpected)' if ok else 'REJECTED, nothing stored'}")

    heading("5. Ordinary pods stay off spot, even off untainted spot nodes")
    kubectl_apply(cluster, EXAMPLES / "web-deployment.yaml")
    for pod in wait_for_placement(cluster, "app=storefront", 6):
        say(f"  pod {pod['metadata']['name']:<30} -> {placement(pod)}")

    heading("6. The same rejected pod in audit (dry-run) mode: admitted, with a warning")
    policy_file.write_text("mode: audit\n")
    waited = server.wait_for_revision(parse_policy_text("mode: audit\n").revision)
    say(f"  (policy file edited to 'mode: audit'; in force {waited:.1f} s later, no restart)")
    ok, _, _ = kubectl_apply(cluster, EXAMPLES / "web-on-spot.yaml")
    say(f"  => {'ADMITTED with the warning above' if ok else 'REJECTED (unexpected)'}")
    for pod in wait_for_placement(cluster, "app=checkout-api", 1):
        say(f"  pod {pod['metadata']['name']:<22} -> {placement(pod)}")


def demo_main(
    run_demo: Callable[[Path], None], prog: str, description: str | None, argv: list[str] | None
) -> int:
    """A demo's command line: ``run_demo(workdir)`` in --workdir or a temporary directory."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--workdir", type=Path, help="keep logs here (default: a temporary directory)"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    if args.workdir:
        run_demo(args.workdir.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="spotguard-demo-") as tmp:
            run_demo(Path(tmp))
        say(
            "(the logs above were removed with the demo's temporary directory; keep them with "
            "--workdir DIR)"
        )
    say(f"\ndemo finished in {time.monotonic() - started:.1f} s; everything it started is stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    return demo_main(run, "python -m devtools.demo", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
