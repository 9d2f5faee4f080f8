"""Benchmark the webhook: reviews per second and latency over real gunicorn and TLS.

Run: ``python -m benchmarks.bench_webhook`` (``make bench``). It prints, for /mutate and
/validate, closed-loop throughput and p50/p99 latency with concurrent keep-alive
clients, then p50/p99 at a fixed offered rate (1,000 reviews/s by default), and the CPU time
per review of the pure policy path. Every figure is also given as a ratio to a baseline
measured in the same run (the no-op ``/healthz`` route for HTTP; JSON decoding of the
review for the policy path), so results from different machines can be compared.

The load generator is a small Go program (benchmarks/loadgen) so the client's CPU cost
stays small next to the Python server it measures; both share this machine's cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devtools.reviews import plain_pod, review, training_pod
from devtools.server import REPO, RunningServer, start_server
from policies.loader import default_policy
from policies.review import Phase
from policies.review import review as domain_review
from webhook.admission import request_of
from webhook.review import parse_review

LOADGEN_DIR = REPO / "benchmarks" / "loadgen"


def cache_dir() -> Path:
    base = os.environ.get("SPOTGUARD_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "spotguard"
    )
    return Path(base)


def build_loadgen() -> Path:
    """Build the Go load generator once per source version, into the cache."""
    digest = hashlib.sha256()
    for name in ("go.mod", "main.go"):
        digest.update((LOADGEN_DIR / name).read_bytes())
    binary = cache_dir() / "loadgen" / digest.hexdigest()[:12] / "loadgen"
    if not binary.exists():
        print(f"building load generator into {binary.parent} ...", flush=True)
        subprocess.run(["go", "build", "-o", str(binary), "."], cwd=LOADGEN_DIR, check=True)
    return binary


def cpu_per_call(function: Callable[[], Any], seconds: float) -> float:
    """CPU microseconds per call, measured with process time over a fixed wall budget."""
    for _ in range(50):
        function()
    calls, start_cpu, deadline = 0, time.process_time(), time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(100):
            function()
        calls += 100
    return (time.process_time() - start_cpu) / calls * 1e6


def policy_path_figures(seconds: float) -> dict[str, float]:
    policy = default_policy()
    mutate_body = json.dumps(review(training_pod())).encode()
    validate_body = json.dumps(review(plain_pod(tolerate_spot=True))).encode()

    def decode_only() -> None:
        parse_review(mutate_body)

    def mutate_path() -> None:
        verdict = domain_review(request_of(parse_review(mutate_body)), policy, phases=Phase.MUTATE)
        assert verdict.mutation is not None and verdict.mutation.patched is not None
        verdict.mutation.patch()

    def validate_path() -> None:
        domain_review(request_of(parse_review(validate_body)), policy, phases=Phase.VALIDATE)

    return {
        "decode_us": cpu_per_call(decode_only, seconds),
        "mutate_us": cpu_per_call(mutate_path, seconds),
        "validate_us": cpu_per_call(validate_path, seconds),
    }


def _cpu_times() -> list[int]:
    return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]


_START_TIMES = _cpu_times() if Path("/proc/stat").exists() else []


def host_steal_percent() -> float | None:
    """Share of CPU time the hypervisor gave to others since start-up (/proc/stat 'steal')."""
    if not _START_TIMES:
        return None
    delta = [now - then for now, then in zip(_cpu_times(), _START_TIMES, strict=True)]
    return 100.0 * delta[7] / max(sum(delta[:8]), 1)


def busy_cpu_seconds() -> float:
    """User + system CPU time of every process on this host (all cores, /proc/stat)."""
    user, nice, system = _cpu_times()[:3]
    return (user + nice + system) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU time of this process's finished children (the load generator runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def server_cpu_seconds(server: RunningServer) -> dict[int, float]:
    """User + system CPU of each of the server's processes: the master and the workers
    (its whole process group), by process id."""
    ticks = os.sysconf("SC_CLK_TCK")
    seconds: dict[int, float] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == server.process.pid:  # field 5: process group id
            pid = int(stat_file.parent.name)
            seconds[pid] = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return seconds


def run_load(
    loadgen: Path, server: RunningServer, path: str, body: Path | None, **options: Any
) -> dict[str, Any]:
    """One load phase; adds the server's CPU time per request (robust to a busy host)."""
    command = [str(loadgen), "-url", server.url + path, "-ca", str(server.ca_file)]
    if body is not None:
        command += ["-body", str(body)]
    for key, value in options.items():
        command += [f"-{key}", str(value)]
    before, busy, loadgen_cpu = (
        server_cpu_seconds(server),
        busy_cpu_seconds(),
        children_cpu_seconds(),
    )
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(output)
    after = server_cpu_seconds(server)
    spent = [seconds - before.get(pid, 0.0) for pid, seconds in after.items()]
    result["server_cpu_us"] = sum(spent) / max(result["requests"], 1) * 1e6
    result["busiest_share"] = max(spent, default=0.0) / max(sum(spent), 1e-9)
    # What neither the server nor the load generator used: other processes on this host.
    others = busy_cpu_seconds() - busy - sum(spent) - (children_cpu_seconds() - loadgen_cpu)
    result["others_cores"] = max(others, 0.0) / max(result["seconds"], 1e-9)
    return result


def _latency(result: dict[str, Any]) -> str:
    errors = result["errors"] + result["non200"]
    return (
        f"{result['p50_ms']:>8.2f} {result['p99_ms']:>8.2f} {errors:>7} "
        f"{result['server_cpu_us']:>10.0f} {result['busiest_share']:>11.0%}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_webhook",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load phase")
    parser.add_argument("--connections", type=int, default=16, help="keep-alive connections")
    parser.add_argument("--rate", type=int, default=1000, help="offered reviews/s for latency")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--worker-class", default="gthread", choices=["gthread", "gevent"])
    parser.add_argument("--threads", type=int, default=4, help="threads per gthread worker")
    args = parser.parse_args(argv)

    loadgen = build_loadgen()
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}", flush=True)
    pure = policy_path_figures(min(args.duration, 3.0))
    print("\npure policy path, CPU time per review (one core):")
    print(f"  decode AdmissionReview (baseline) {pure['decode_us']:8.1f} us")
    for name in ("mutate", "validate"):
        us = pure[f"{name}_us"]
        ratio = us / pure["decode_us"]
        print(
            f"  decode + {name:<8} (+ patch)      {us:8.1f} us  = {ratio:4.1f}x baseline"
            f"  -> {1e6 / us:,.0f} reviews/s per core"
        )

    with tempfile.TemporaryDirectory(prefix="spotguard-bench-") as tmp:
        workdir = Path(tmp)
        bodies = {"/mutate": workdir / "mutate.json", "/validate": workdir / "validate.json"}
        bodies["/mutate"].write_text(json.dumps(review(training_pod())))
        bodies["/validate"].write_text(json.dumps(review(plain_pod(tolerate_spot=True))))
        # Production settings: INFO logs (one JSON line per review, here to a file).
        server = start_server(
            workdir,
            *("--worker-class", args.worker_class, "--threads", str(args.threads)),
            workers=args.workers,
        )
        try:
            common = {"c": args.connections, "d": f"{args.duration}s"}
            print(
                f"\nHTTP over TLS, gunicorn {args.worker_class} x{args.workers} workers "
                f"({args.threads} threads each for gthread), "
                f"{args.connections} keep-alive connections, {args.duration:.0f} s each "
                "(server CPU: master + workers, per review; busiest: the share of it spent by "
                "the busiest process):"
            )
            print(
                f"  {'endpoint':<10} {'reviews/s':>10} {'vs /healthz':>12} {'p50 ms':>8} "
                f"{'p99 ms':>8} {'errors':>7} {'server CPU us':>13} {'busiest':>8}"
            )
            baseline = run_load(loadgen, server, "/healthz", None, **common)
            rows = [("/healthz", baseline)]
            rows += [
                (path, run_load(loadgen, server, path, bodies[path], **common)) for path in bodies
            ]
            for path, result in rows:
                ratio = result["rps"] / baseline["rps"]
                print(f"  {path:<10} {result['rps']:>10,.0f} {ratio:>11.2f}x {_latency(result)}")
            cores = os.cpu_count() or 1
            for path, result in rows[1:]:
                print(
                    f"  {path}: server capacity if it had all {cores} cores = "
                    f"{cores / result['server_cpu_us'] * 1e6:,.0f} reviews/s"
                )
            print(
                f"\nlatency at a fixed offered rate of {args.rate} reviews/s "
                "(measured from the scheduled send time; Go's HTTP client, like the API "
                "server's, reuses the most recently used idle connection, so at a modest rate "
                "one worker may get most reviews, as 'busiest' shows):"
            )
            for path, body in bodies.items():
                result = run_load(loadgen, server, path, body, **common, rate=args.rate)
                rows.append((path, result))
                print(f"  {path:<10} achieved {result['rps']:>7,.0f}/s {_latency(result)}")
        finally:
            server.stop()
    others = [result["others_cores"] for _, result in rows]
    print(
        f"\nCPU used by other processes on this host during the load phases: "
        f"{sum(others) / len(others):.2f} cores on average, {max(others):.2f} at most "
        "(noise in the figures)"
    )
    steal = host_steal_percent()
    if steal is not None:
        print(f"\nCPU steal by the hypervisor during the run: {steal:.0f}% (noise in the figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
