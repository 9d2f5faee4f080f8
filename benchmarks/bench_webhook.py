"""Benchmark the webhook: reviews per second and latency over real gunicorn and TLS, the
event-loop worker against the gthread design it replaced, with and without bad clients.

Run: ``python -m benchmarks.bench_webhook`` (``make bench``). It prints:

1. CPU time per review of the pure policy path (baseline: decoding the review), and the
   server's CPU time per TLS handshake as served (baseline: OpenSSL's default tickets).
2. Closed-loop reviews/s and p50/p99 for /healthz, /mutate and /validate with concurrent
   keep-alive clients, then p50/p99 at a fixed offered rate (1,000/s), for the current
   design and the old one (OLD_DESIGN_REF, run from its own tree), alternating rounds,
   with the ratio new/old; and how the connections spread over the workers.
3. A steady 500 reviews/s from keep-alive clients plus 5 new connections per second,
   first alone (the baseline), then with 1,000 idle TLS connections, 200 connections
   trickling a request one byte per second and 100 that never start TLS, all open at
   once: p50/p99, failures, the new connections' handshake times, RSS per worker. Targets:
   p99 under 20 ms, 0 failures, handshakes within 100 ms. On a shared machine the p99
   moves from run to run: ``--steady-rounds N`` repeats these phases N times per design,
   alternating, and says in how many rounds every target was met.
4. The same steady load on a reference server (benchmarks/refserver, Go, see
   benchmarks/reference.py) doing no work, the same fixed work per request as spotguard's
   CPU time per review (adjusted once under load), and work bounded by its CPU clock to
   the same time: what tail this machine gives any server with spotguard's budget.

The load generator is a small Go program (benchmarks/loadgen), Go's HTTP client being
the API server's; it shares this machine's cores with the server, and so does whatever
else runs here: the CPU other processes used is printed as the noise in the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.designs import OLD_DESIGN_REF, source_tree
from benchmarks.handshake import handshake_figures
from benchmarks.load import build_loadgen
from benchmarks.measure import host_steal_percent, policy_path_figures, rss_mib, run_load
from benchmarks.reference import build_refserver, reference_server
from certs.pki import CertPaths
from testsupport.procnet import spread
from testsupport.reviews import plain_pod, review, training_pod
from testsupport.server import REPO, RunningServer, start_server

BAD_CLIENTS = {"idle": 1000, "trickle": 200, "notls": 100}
STEADY = {"rate": 500, "c": 16, "fresh": 5}
P99_TARGET_MS, HANDSHAKE_TARGET_MS = 20.0, 100.0
#: The steady phases, in the order they run: without the bad clients, then with them.
PHASES = ("alone", "bad clients")
Row = dict[str, Any]
#: One steady phase measured: (design, phase, round counted from 1, figures).
SteadyRun = tuple[str, str, int, Row]


def print_pure_path(seconds: float) -> None:
    pure = policy_path_figures(seconds)
    print("\npure policy path, CPU time per review (one core):")
    print(f"  decode AdmissionReview (baseline) {pure['decode_us']:8.1f} us")
    for name in ("mutate", "validate"):
        us = pure[f"{name}_us"]
        print(
            f"  decode + {name:<8} (+ patch)      {us:8.1f} us  = "
            f"{us / pure['decode_us']:4.1f}x baseline  -> {1e6 / us:,.0f} reviews/s per core"
        )


def print_handshakes() -> None:
    with tempfile.TemporaryDirectory(prefix="spotguard-bench-") as tmp:
        figures = handshake_figures(Path(tmp))
    rounds = ", ".join(f"{tickets:.0f} -> {served:.0f}" for tickets, served in figures.rounds)
    print(
        "\nTLS handshake, the server's CPU time per new connection, as served (no session "
        "tickets)\nagainst OpenSSL's default of 2 tickets (the baseline), in paired rounds:"
    )
    low, high = figures.ratio_low, figures.ratio_high
    print(
        f"  {figures.ratio:4.2f}x the baseline (median of the rounds' ratios, {low:.2f}-{high:.2f})"
    )
    print(f"  per round, baseline -> as served: {rounds} us")


def workers_of(server: RunningServer) -> Callable[[], dict[int, int]]:
    return lambda: spread(server.port, server.workers())


def closed_loop_round(
    loadgen: Path, server: RunningServer, bodies: dict[str, Path], args: argparse.Namespace
) -> dict[str, Row]:
    common = {"c": args.connections, "d": f"{args.duration}s"}
    rows = {"/healthz": run_load(loadgen, server, "/healthz", None, **common)}
    for path, body in bodies.items():
        sample = (args.duration / 2, workers_of(server)) if path == "/mutate" else None
        rows[path] = run_load(loadgen, server, path, body, sample=sample, **common)
        rows[f"{path} @{args.rate}/s"] = run_load(
            loadgen, server, path, body, rate=args.rate, **common
        )
    return rows


def median_rows(rounds: list[dict[str, Row]]) -> dict[str, Row]:
    merged: dict[str, Row] = {}
    for name in rounds[0]:
        runs = [r[name] for r in rounds]
        row = {k: statistics.median(run[k] for run in runs) for k in
               ("rps", "p50_ms", "p99_ms", "server_cpu_us", "others_cores")}  # fmt: skip
        row["failures"] = sum(run["errors"] + run["non200"] for run in runs)
        row["spread"] = [run.get("sample") for run in runs if run.get("sample")]
        merged[name] = row
    return merged


def print_designs(results: dict[str, dict[str, Row]], rounds: int) -> None:
    print(
        f"\nHTTP over TLS, 2 workers, median of {rounds} alternating rounds per design "
        "(server CPU: master + workers, per request):"
    )
    print(f"  {'':<22}{'':<7}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'fails':>6}"
          f"{'CPU us':>8}{'  new/old req/s, p99, CPU':>27}")  # fmt: skip
    new, old = results["new"], results.get("old")
    for name in new:
        for design in ("new", "old"):
            if design == "old" and old is None:
                continue
            r = results[design][name]
            ratio = ""
            if design == "new" and old is not None:
                o = old[name]
                ratio = (f"{r['rps'] / o['rps']:>7.2f}x {r['p99_ms'] / o['p99_ms']:>7.2f}x"
                         f" {r['server_cpu_us'] / o['server_cpu_us']:>7.2f}x")  # fmt: skip
            print(f"  {name if design == 'new' else '':<22}{design:<7} {r['rps']:>7,.0f}"
                  f" {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['failures']:>5}"
                  f" {r['server_cpu_us']:>7.0f}  {ratio}")  # fmt: skip
    for design, rows in results.items():
        spreads = rows["/mutate"]["spread"]
        shown = "; ".join(", ".join(str(n) for n in s.values()) for s in spreads)
        print(f"  connections per worker, {design} design, 16-connection closed loop: {shown}")


def steady_phase(
    loadgen: Path, server: RunningServer, body: Path, args: argparse.Namespace, bad: bool
) -> Row:
    options: dict[str, Any] = {**STEADY, "d": f"{args.bad_duration}s", "expect": '"allowed"'}
    warmup = 0.0
    if bad:
        warmup = 8.0
        options.update(BAD_CLIENTS, warmup=f"{warmup:.0f}s")

    def memory() -> dict[str, Any]:
        pids = server.workers()
        return {
            "rss": [round(rss_mib(pid), 1) for pid in pids],
            "spread": spread(server.port, pids),
        }

    return run_load(loadgen, server, "/validate", body,
                    sample=(warmup + args.bad_duration / 2, memory), **options)  # fmt: skip


def reference_phases(
    loadgen: Path,
    certs: CertPaths,
    body: Path,
    *,
    spotguard_cpu_us: float,
    workdir: Path,
    args: argparse.Namespace,
) -> list[tuple[str, Row]]:
    """The steady load on the reference: no work, spotguard's work, spotguard's CPU time.

    The fixed work is timed when the reference starts, on a quiet core; under load the same
    work takes more CPU time, so it is adjusted once, from a short phase, until the
    reference's CPU per request matches spotguard's."""
    binary = build_refserver()
    options: dict[str, Any] = {**STEADY, "d": f"{args.bad_duration}s", "expect": '"allowed"'}

    def phase(name: str, duration: float | None = None, **work: float) -> Row:
        timed = {**options, "d": f"{duration}s"} if duration else options
        with reference_server(binary, certs, workdir / name, **work) as reference:
            return run_load(loadgen, reference, "/validate", body, **timed)

    bare = phase("none")
    budget = max(spotguard_cpu_us - bare["server_cpu_us"], 0.0)
    trial = phase("trial", duration=5.0, work_us=budget)
    work = budget * budget / max(trial["server_cpu_us"] - bare["server_cpu_us"], 1.0)
    return [
        ("no work", bare),
        ("same work", phase("work", work_us=work)),
        ("same CPU time", phase("cpu", cpu_us=budget)),
    ]


def print_reference(spotguard: Row, rows: list[tuple[str, Row]]) -> None:
    print(
        f"\nreference (Go HTTPS server, the same steady load; spotguard alone used "
        f"{spotguard['server_cpu_us']:,.0f} us of CPU per review, "
        f"p99 {spotguard['p99_ms']:.1f} ms):"
    )
    print(f"  {'':<16}{'CPU/req us':>11}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'fails':>6}")
    for name, row in rows:
        failures = steady_failures(row)
        print(f"  {name:<16} {row['server_cpu_us']:>10,.0f} {row['p50_ms']:>7.2f}"
              f" {row['p99_ms']:>7.2f} {row['max_ms']:>7.1f} {failures:>5}")  # fmt: skip


def steady_failures(row: Row) -> int:
    fresh = row["fresh"]
    return int(row["errors"] + row["non200"] + row["wrong"] + fresh["errors"] + fresh["non200"])


def steady_target_met(row: Row) -> bool:
    return bool(row["p99_ms"] < P99_TARGET_MS and steady_failures(row) == 0
                and row["handshakes"]["p99_ms"] < HANDSHAKE_TARGET_MS)  # fmt: skip


def print_steady_summary(steady: list[SteadyRun]) -> None:
    """Per design and phase, over the rounds: the median p99 and CPU per review, and how
    many rounds met every target."""
    print("  over the rounds: median p99 (each round's), median server CPU per review, "
          "rounds meeting the targets")  # fmt: skip
    for design in dict.fromkeys(d for d, _, _, _ in steady):
        for phase in PHASES:
            rows = [r for d, p, _, r in steady if d == design and p == phase]
            p99 = statistics.median(r["p99_ms"] for r in rows)
            each = ", ".join(f"{r['p99_ms']:.1f}" for r in rows)
            cpu = statistics.median(r["server_cpu_us"] for r in rows)
            met = sum(steady_target_met(r) for r in rows)
            print(f"  {design:<5}{phase:<12} p99 {p99:5.1f} ms ({each}), CPU {cpu:,.0f} us, "
                  f"met in {met} of {len(rows)}")  # fmt: skip


def print_steady(design: str, name: str, row: Row) -> None:
    handshakes = row["handshakes"]
    failures = steady_failures(row)
    met = steady_target_met(row)
    sample = row.get("sample") or {}
    # A space before every figure (here and in the other tables): a round that failed
    # (p99 near the client's 20 s timeout) prints figures wider than their columns, and
    # they must not run together.
    print(f"  {design:<5}{name:<16} {row['rps']:>6,.0f} {row['p50_ms']:>7.2f} {row['p99_ms']:>7.2f}"
          f" {row['max_ms']:>7.1f} {failures:>5} {handshakes['p50_ms']:>7.1f}"
          f" {handshakes['p99_ms']:>7.1f} {row['bad_connections_open_avg']:>6.0f}"
          f"  {sample.get('rss')} MiB  {'yes' if met else 'no'}")  # fmt: skip
    if row.get("error_samples"):
        print(f"      e.g. {row['error_samples'][:2]}")


def print_steady_section(steady: list[SteadyRun], args: argparse.Namespace) -> None:
    print(
        f"\nsteady {STEADY['rate']} reviews/s on {STEADY['c']} kept-alive connections + "
        f"{STEADY['fresh']} new connections/s, {args.bad_duration:.0f} s, alone and with "
        f"{BAD_CLIENTS['idle']} idle TLS, {BAD_CLIENTS['trickle']} trickling and "
        f"{BAD_CLIENTS['notls']} no-TLS connections (targets: p99 < {P99_TARGET_MS:.0f} ms, "
        f"0 failures, handshake p99 < {HANDSHAKE_TARGET_MS:.0f} ms):"
    )
    print(f"  {'':<21}{'req/s':>7}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'fails':>6}"
          f"{'hs p50':>8}{'hs p99':>8}{'bad':>7}  RSS per worker  met")  # fmt: skip
    for design, phase, round_, row in steady:
        print_steady(design, f"{phase} #{round_}", row)
    if args.steady_rounds > 1:
        print_steady_summary(steady)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_webhook",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load phase")
    parser.add_argument(
        "--bad-duration", type=float, default=15.0, help="seconds of each steady phase"
    )
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per design")
    parser.add_argument(
        "--steady-rounds", type=int, default=1,
        help="alternating rounds of the steady phases per design (the p99 target varies "
        "from run to run on a shared machine: repeat it to see how often it is met)",
    )  # fmt: skip
    parser.add_argument("--connections", type=int, default=16, help="keep-alive connections")
    parser.add_argument("--rate", type=int, default=1000, help="offered reviews/s for latency")
    parser.add_argument("--old-ref", default=OLD_DESIGN_REF, help="commit of the old design")
    parser.add_argument("--no-old", action="store_true", help="measure the current design only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    loadgen = build_loadgen()
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}", flush=True)
    print_pure_path(min(args.duration, 3.0))
    print_handshakes()
    with (
        tempfile.TemporaryDirectory(prefix="spotguard-bench-") as tmp,
        source_tree(args.old_ref) as old_tree,
    ):
        workdir = Path(tmp)
        bodies = {"/mutate": workdir / "mutate.json", "/validate": workdir / "validate.json"}
        bodies["/mutate"].write_text(json.dumps(review(training_pod())))
        bodies["/validate"].write_text(json.dumps(review(plain_pod(tolerate_spot=True))))
        designs = {"new": REPO}
        if old_tree is not None and not args.no_old:
            designs["old"] = old_tree
        rounds: dict[str, list[dict[str, Row]]] = {design: [] for design in designs}
        steady: list[SteadyRun] = []
        baseline: Row | None = None  # the current design's steady phase alone
        reference: list[tuple[str, Row]] = []
        for round_ in range(max(args.rounds, args.steady_rounds)):
            for design, tree in designs.items():
                server = start_server(workdir / f"{design}{round_}", workers=2, repo=tree)
                try:
                    if round_ < args.rounds:
                        rounds[design].append(closed_loop_round(loadgen, server, bodies, args))
                    if round_ < args.steady_rounds:
                        for bad in (False, True):
                            row = steady_phase(loadgen, server, bodies["/validate"], args, bad)
                            steady.append((design, PHASES[bad], round_ + 1, row))
                            if design == "new" and not bad and baseline is None:
                                baseline = row
                finally:
                    server.stop()
                if baseline is not None and not reference:
                    reference = reference_phases(
                        loadgen, server.certs, bodies["/validate"],
                        spotguard_cpu_us=baseline["server_cpu_us"], workdir=workdir / "ref",
                        args=args,
                    )  # fmt: skip
                print(f"  (round {round_ + 1}, {design} design measured)", flush=True)
        print_designs({d: median_rows(r) for d, r in rounds.items()}, args.rounds)
    print_steady_section(steady, args)
    if baseline is not None:
        print_reference(baseline, reference)
    others = [r["others_cores"] for rs in rounds.values() for rd in rs for r in rd.values()]
    print(
        f"\nCPU used by other processes on this host during the closed-loop phases: "
        f"{statistics.mean(others):.2f} cores on average, {max(others):.2f} at most "
        "(noise in the figures)"
    )
    steal = host_steal_percent()
    if steal is not None:
        print(f"CPU steal by the hypervisor during the run: {steal:.0f}% (noise in the figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
