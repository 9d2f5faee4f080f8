"""What spotguard costs the API server: pod creates through a real kube-apiserver and etcd.

Run: ``python -m benchmarks.bench_apiserver`` (``make bench-apiserver``). It starts etcd and
kube-apiserver from the harness (no scheduler, no controllers: pods stay Pending, which is
all admission needs) and spotguard's server (gunicorn, TLS, 2 workers, metrics on), and
compares, interleaved in rounds so that a busy host hurts every configuration alike:

- ``none``: no admission webhook or policy (the baseline of every ratio);
- ``shipped``: spotguard's webhooks without match conditions (as shipped before them);
- ``conditions``: spotguard's webhooks with the conditions rendered for the policy;
- ``map``: a MutatingAdmissionPolicy injecting the same tolerations and preferred affinity.

For labelled training pods and ordinary pods, under a policy whose spot nodes are all
tainted (AKS) and one where they are not (EKS), each phase creates pods for a fixed time
with one client and with 8 concurrent clients (benchmarks/apiload, Go, kept-alive
connections) and prints creates/s, p50/p99 latency, the CPU time per create of the API
server, etcd and spotguard (from /proc; spotguard's processes as a group) and spotguard's
reviews per pod (its review counter). Figures are medians over the rounds; ratios are to
``none`` in the same run. A last section measures patch size: labelled pods with one and
four containers, with the inline preStop script (about 1 KB per container) and with a
short hook command.

spotguard runs without cluster access (a policy file): its watch caches cost per change
in the cluster, not per review, and would otherwise load the API server in every phase.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from benchmarks.admission_configs import CONFIGS, FAULT_TOLERANT_LABEL, Configurations
from benchmarks.load import cache_dir
from benchmarks.measure import host_steal_percent, server_cpu_seconds
from controlplane.harness import ControlPlane
from devtools.server import REPO, RunningServer, free_port, start_server
from policies.decisions import PodContext
from policies.loader import parse_policy_text
from policies.mutate import mutate_pod
from policies.patch import make_patch

APILOAD_DIR = REPO / "benchmarks" / "apiload"
NAMESPACE = "bench"
#: (name, policy document, what it stands for)
POLICIES = (
    ("aks", "spotNodes: {presets: [aks]}\n", "every spot node tainted (AKS)"),
    ("eks", "spotNodes: {presets: [eks, karpenter]}\n", "untainted spot nodes (EKS, Karpenter)"),
)
SHORT_HOOK = (
    "spotNodes: {presets: [aks]}\n"
    'inject: {preStop: {command: [/bin/sh, -c, "exec /opt/spotguard/prestop"]}}\n'
)
KINDS = ("training", "ordinary")
CLIENTS = (1, 8)

JSONObject = dict[str, Any]


def build_apiload() -> Path:
    """Build the Go client once per source version, into the cache."""
    import hashlib  # noqa: PLC0415

    digest = hashlib.sha256()
    for name in ("go.mod", "main.go"):
        digest.update((APILOAD_DIR / name).read_bytes())
    binary = cache_dir() / "apiload" / digest.hexdigest()[:12] / "apiload"
    if not binary.exists():
        binary.parent.mkdir(parents=True, exist_ok=True)
        partial = binary.with_name(f"apiload.{os.getpid()}")
        subprocess.run(["go", "build", "-o", str(partial), "."], cwd=APILOAD_DIR, check=True)
        partial.replace(binary)
    return binary


def pod(kind: str, containers: int = 1) -> JSONObject:
    labels = (
        {FAULT_TOLERANT_LABEL: "true", "app": "trainer"} if kind == "training" else {"app": "web"}
    )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": f"{kind}-", "labels": labels},
        "spec": {
            "containers": [
                {"name": f"c{i}", "image": "registry.example/app:1"} for i in range(containers)
            ]
        },
    }


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Phase:
    """One measured phase: the client's figures and the CPU each process spent."""

    rps: float
    p50_ms: float
    p99_ms: float
    creates: int
    failures: int
    cpu_ms: dict[str, float]  # per create: apiserver, etcd, spotguard
    reviews_per_pod: float


@dataclass
class Bench:
    cluster: ControlPlane
    apiload: Path
    token_file: Path
    duration: float
    results: dict[tuple[str, ...], list[Phase]] = field(default_factory=dict)

    def reviews(self, metrics_url: str) -> Callable[[], dict[str, float]]:
        def read() -> dict[str, float]:
            counts: dict[str, float] = {}
            for line in requests.get(metrics_url, timeout=5).text.splitlines():
                if line.startswith("spotguard_reviews_total{"):
                    labels, value = line.rsplit(" ", 1)
                    webhook = labels.split('webhook="', 1)[1].split('"', 1)[0]
                    counts[webhook] = counts.get(webhook, 0.0) + float(value)
            return counts

        return read

    def clear(self) -> None:
        """Delete the phase's pods (not measured), so etcd does not grow run by run."""
        self.cluster.request("DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status, body = self.cluster.request(
                "GET", f"/api/v1/namespaces/{NAMESPACE}/pods?limit=1"
            )
            if status == 200 and not body.get("items"):
                return
            time.sleep(0.2)

    def measure(
        self,
        body: JSONObject,
        clients: int,
        server: RunningServer,
        reviews: Callable[[], dict[str, float]],
    ) -> Phase:
        self.clear()
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            json.dump(body, handle)
            body_file = Path(handle.name)
        pids = {"apiserver": self.cluster.pid("kube-apiserver"), "etcd": self.cluster.pid("etcd")}
        before = {name: process_cpu(pid) for name, pid in pids.items()}
        before_spotguard = sum(server_cpu_seconds(server).values())
        before_reviews = sum(reviews().values())
        command = [
            str(self.apiload),
            "-url", f"{self.cluster.server}/api/v1/namespaces/{NAMESPACE}/pods",
            "-ca", str(self.cluster.ca_file), "-token-file", str(self.token_file),
            "-body", str(body_file), "-c", str(clients), "-d", f"{self.duration}s",
        ]  # fmt: skip
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        figures = json.loads(output)
        after = {name: process_cpu(pid) for name, pid in pids.items()}
        after_spotguard = sum(server_cpu_seconds(server).values())
        after_reviews = sum(reviews().values())
        body_file.unlink()
        creates = max(int(figures["created"]), 1)
        cpu = {name: (after[name] - before[name]) / creates * 1000 for name in pids}
        cpu["spotguard"] = (after_spotguard - before_spotguard) / creates * 1000
        return Phase(
            rps=figures["rps"],
            p50_ms=figures["p50_ms"],
            p99_ms=figures["p99_ms"],
            creates=figures["created"],
            failures=figures["errors"] + figures["unexpected"],
            cpu_ms=cpu,
            reviews_per_pod=(after_reviews - before_reviews) / creates,
        )

    def record(self, key: tuple[str, ...], phase: Phase) -> None:
        self.results.setdefault(key, []).append(phase)


@contextmanager
def spotguard(workdir: Path, policy_text: str) -> Iterator[tuple[RunningServer, str]]:
    """spotguard serving ``policy_text`` from a file, with metrics; (server, metrics URL)."""
    workdir.mkdir(parents=True, exist_ok=True)
    policy_file = workdir / "policy.yaml"
    policy_file.write_text(policy_text)
    metrics_port = free_port()
    server = start_server(
        workdir,
        "--policy", str(policy_file), "--metrics-bind", f"127.0.0.1:{metrics_port}",
        "--runtime-dir", str(workdir / "run"),
        workers=2,
    )  # fmt: skip
    try:
        yield server, f"http://127.0.0.1:{metrics_port}/metrics"
    finally:
        server.stop()


def median_phase(phases: list[Phase]) -> Phase:
    def med(get: Callable[[Phase], float]) -> float:
        return statistics.median(get(p) for p in phases)

    return Phase(
        rps=med(lambda p: p.rps),
        p50_ms=med(lambda p: p.p50_ms),
        p99_ms=med(lambda p: p.p99_ms),
        creates=int(med(lambda p: p.creates)),
        failures=sum(p.failures for p in phases),
        cpu_ms={k: med(lambda p, k=k: p.cpu_ms[k]) for k in phases[0].cpu_ms},  # type: ignore[misc]
        reviews_per_pod=med(lambda p: p.reviews_per_pod),
    )


def run_policy(bench: Bench, workdir: Path, name: str, text: str, rounds: int) -> None:
    policy = parse_policy_text(text)
    with spotguard(workdir / name, text) as (server, metrics_url):
        reviews = bench.reviews(metrics_url)
        configs = Configurations(
            bench.cluster, NAMESPACE, server.url, server.ca_file, policy, reviews
        )
        for round_index in range(rounds):
            order = CONFIGS[round_index % len(CONFIGS) :] + CONFIGS[: round_index % len(CONFIGS)]
            for config in order:
                configs.use(config)
                for kind in KINDS:
                    for clients in CLIENTS:
                        phase = bench.measure(pod(kind), clients, server, reviews)
                        bench.record((name, kind, str(clients), config), phase)
                print(f"  {name} round {round_index + 1}: {config} measured", flush=True)


def run_patch_size(bench: Bench, workdir: Path, rounds: int) -> None:
    """Labelled pods under the AKS policy with match conditions: 1 and 4 containers, the
    inline hook script and a short hook command."""
    for hook, text in (("inline script", POLICIES[0][1]), ("short command", SHORT_HOOK)):
        policy = parse_policy_text(text)
        with spotguard(workdir / f"patch-{hook.split()[0]}", text) as (server, metrics_url):
            reviews = bench.reviews(metrics_url)
            configs = Configurations(
                bench.cluster, NAMESPACE, server.url, server.ca_file, policy, reviews
            )
            for _ in range(rounds):
                for config in ("none", "conditions"):
                    configs.use(config)
                    for containers in (1, 4):
                        phase = bench.measure(pod("training", containers), 8, server, reviews)
                        bench.record(("patch", hook, str(containers), config), phase)
            print(f"  patch size: {hook} measured", flush=True)


def patch_bytes(text: str, containers: int) -> int:
    policy = parse_policy_text(text)
    body = pod("training", containers)
    body["spec"]["terminationGracePeriodSeconds"] = 30
    decision = mutate_pod(body, PodContext(NAMESPACE), policy)
    assert decision.mutated is not None
    return len(json.dumps(make_patch(body, decision.mutated)))


def ratio(value: float, base: float) -> str:
    return f"{value / base:4.2f}x" if base > 0 else "  -  "


def print_policy_tables(bench: Bench) -> None:
    for name, _, description in POLICIES:
        for kind in KINDS:
            print(f"\n{name}: {description}; {kind} pods")
            print(
                f"  {'config':<11}{'creates/s 1':>12}{'p50 1':>13}{'p99 1':>13}"
                f"{'creates/s 8':>13}{'p50 8':>13}{'apiserver CPU':>16}{'etcd CPU':>14}"
                f"{'spotguard CPU':>15}{'calls/pod':>10}"
            )
            base1 = median_phase(bench.results[(name, kind, "1", "none")])
            base8 = median_phase(bench.results[(name, kind, "8", "none")])
            for config in CONFIGS:
                one = median_phase(bench.results[(name, kind, "1", config)])
                eight = median_phase(bench.results[(name, kind, "8", config)])
                cpu = eight.cpu_ms
                base_cpu = base8.cpu_ms
                print(
                    f"  {config:<11}"
                    f"{one.rps:>7.0f} {ratio(one.rps, base1.rps)}"
                    f"{one.p50_ms:>6.2f}ms {ratio(one.p50_ms, base1.p50_ms)}"
                    f"{one.p99_ms:>6.1f}ms {ratio(one.p99_ms, base1.p99_ms)}"
                    f"{eight.rps:>7.0f} {ratio(eight.rps, base8.rps)}"
                    f"{eight.p50_ms:>6.2f}ms {ratio(eight.p50_ms, base8.p50_ms)}"
                    f"{cpu['apiserver']:>7.2f}ms {ratio(cpu['apiserver'], base_cpu['apiserver'])}"
                    f"{cpu['etcd']:>6.2f}ms {ratio(cpu['etcd'], base_cpu['etcd'])}"
                    f"{cpu['spotguard']:>8.2f}ms {ratio(cpu['spotguard'], base_cpu['apiserver'])}"
                    f"{one.reviews_per_pod:>10.2f}"
                )


def print_targets(bench: Bench) -> None:
    def get(*key: str) -> Phase:
        return median_phase(bench.results[key])

    base8 = get("aks", "ordinary", "8", "none").cpu_ms["apiserver"]
    cond8 = get("aks", "ordinary", "8", "conditions").cpu_ms["apiserver"]
    base1 = get("aks", "ordinary", "1", "none").p50_ms
    cond1 = get("aks", "ordinary", "1", "conditions").p50_ms
    calls = get("eks", "ordinary", "1", "conditions").reviews_per_pod
    print("\ntargets (match conditions):")
    print(
        f"  AKS ordinary pods, API-server CPU per create: {cond8 / base8:.2f}x baseline "
        f"(target <= 1.10x); p50 with one client {cond1 / base1:.2f}x (target <= 1.20x)"
    )
    print(f"  EKS ordinary pods, webhook calls per pod: {calls:.2f} (target <= 1)")
    for name, _, _ in POLICIES:
        spot = get(name, "training", "8", "conditions").cpu_ms["apiserver"]
        cel = get(name, "training", "8", "map").cpu_ms["apiserver"]
        print(
            f"  {name.upper()} labelled pods, API-server CPU per create: spotguard {spot:.2f} ms, "
            f"MutatingAdmissionPolicy {cel:.2f} ms ({spot / cel:.2f}x; target <= 1.00x)"
        )


def print_patch_size(bench: Bench) -> None:
    print(
        "\npatch size (AKS, labelled pods, match conditions, 8 clients; API-server CPU per create):"
    )
    print(
        f"  {'hook':<15}{'containers':>11}{'patch bytes':>13}{'apiserver CPU':>15}"
        f"{'vs none':>9}{'etcd CPU':>10}"
    )
    for hook, text in (("inline script", POLICIES[0][1]), ("short command", SHORT_HOOK)):
        for containers in ("1", "4"):
            with_hook = median_phase(bench.results[("patch", hook, containers, "conditions")])
            without = median_phase(bench.results[("patch", hook, containers, "none")])
            print(
                f"  {hook:<15}{containers:>11}{patch_bytes(text, int(containers)):>13}"
                f"{with_hook.cpu_ms['apiserver']:>12.2f} ms"
                f"{ratio(with_hook.cpu_ms['apiserver'], without.cpu_ms['apiserver']):>9}"
                f"{with_hook.cpu_ms['etcd']:>7.2f} ms"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_apiserver",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per phase")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--no-patch-size", action="store_true", help="skip the patch-size section")
    args = parser.parse_args(argv)
    started = time.monotonic()
    apiload = build_apiload()
    print(
        f"machine: {os.cpu_count()} cores; {args.rounds} rounds of {args.duration:.0f} s phases",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="spotguard-bench-apiserver-") as tmp:
        workdir = Path(tmp)
        cluster = ControlPlane(workdir / "plane", controllers=False, scheduler=False, nodes=False)
        cluster.start()
        try:
            cluster.ensure_namespace(NAMESPACE)
            token_file = workdir / "token"
            token_file.write_text(cluster.token)
            bench = Bench(cluster, apiload, token_file, args.duration)
            for name, text, _ in POLICIES:
                run_policy(bench, workdir, name, text, args.rounds)
            if not args.no_patch_size:
                run_patch_size(bench, workdir, args.rounds)
        finally:
            cluster.stop()
    print_policy_tables(bench)
    print_targets(bench)
    if not args.no_patch_size:
        print_patch_size(bench)
    failures = sum(p.failures for phases in bench.results.values() for p in phases)
    steal = host_steal_percent()
    print(
        f"\n{failures} failed creates; CPU steal {steal if steal is not None else 0:.0f}%; "
        f"{time.monotonic() - started:.0f} s in all (figures are medians of {args.rounds} rounds; "
        "noisy on a shared host)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
