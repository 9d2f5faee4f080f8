"""Soak: the real server for N minutes under steady load while it is operated.

Run: ``python -m benchmarks.soak --minutes 10`` (not in CI). ``spotguard serve`` (2
workers, a policy file) takes ~500 reviews/s over kept-alive TLS connections plus a few
new connections per second from the Go load generator, while, spread over the run:

- the serving certificate is rotated (``--rotations``, by replacing tls.key and tls.crt
  one after the other, as a careless tool would), and once switched to a new CA (the
  client trusts both, as a caBundle does during a CA rotation);
- the policy file is rewritten ``--policy-writes`` times, every ``--invalid-every``-th
  write invalid; each valid revision's time until every worker serves it is measured,
  and each invalid one is checked never to take effect;
- the master gets SIGHUP ``--sighups`` times (all workers replaced).

Every review must be answered 200 with the expected decision (a pod tolerating spot
without being fault-tolerant: denied). It prints reviews sent, correct and failed,
revision propagation times, and RSS per worker over time.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

from benchmarks.load import build_loadgen, result, start_loadgen
from benchmarks.measure import rss_mib
from certs.pki import CertifiedKey, CertPaths, generate_ca, generate_serving, write_pair
from devtools.reviews import plain_pod, review
from devtools.server import RunningServer, start_server
from policies.loader import parse_policy_text

NAMES, ADDRESSES = ["localhost"], ["127.0.0.1"]


def policy_text(number: int) -> str:
    excluded = "kube-system, kube-public, kube-node-lease, spotguard-system"
    return f"mode: enforce\nnamespaces:\n  exclude: [{excluded}, soak-{number}]\n"


class Operator:
    """Does the operations at their planned times and records what it saw."""

    def __init__(self, server: RunningServer, workdir: Path, policy: Path) -> None:
        self.server, self.workdir, self.policy = server, workdir, policy
        self.cert_dir = server.certs.cert.parent
        self.propagation: list[float] = []
        self.invalid_seen_in_force = 0
        self.invalid_writes = 0
        self.not_propagated = 0
        self.invalid_unchecked = 0
        self.log: list[str] = []
        self.revision = parse_policy_text(policy.read_text()).revision

    def rotate(self, ca: CertifiedKey, label: str) -> None:
        pair = generate_serving(ca, NAMES, ADDRESSES)
        staged = write_pair(self.workdir / f"staged-{time.monotonic_ns()}", ca, pair)
        staged.key.replace(self.cert_dir / "tls.key")  # key first: a moment of mismatch
        time.sleep(0.05)
        staged.cert.replace(self.cert_dir / "tls.crt")
        self.log.append(label)

    def write_policy(self, number: int, invalid: bool) -> None:
        if invalid:
            self.invalid_writes += 1
            self.policy.write_text("mode: sometimes\n")
            time.sleep(2.5)  # file poll (1 s) + worker check (0.25 s), with slack
            try:
                if self.server.revisions() != {self.revision}:
                    self.invalid_seen_in_force += 1
            except requests.RequestException:
                self.invalid_unchecked += 1
            return
        text = policy_text(number)
        self.policy.write_text(text)
        revision = parse_policy_text(text).revision
        try:
            self.propagation.append(self.server.wait_for_revision(revision, timeout=15))
        except TimeoutError:
            self.not_propagated += 1
        self.revision = revision

    def sighup(self) -> None:
        self.server.process.send_signal(signal.SIGHUP)
        self.log.append("SIGHUP")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=500, help="reviews/s on kept-alive conns")
    parser.add_argument("--fresh", type=int, default=5, help="new connections per second")
    parser.add_argument("--rotations", type=int, default=3)
    parser.add_argument("--policy-writes", type=int, default=100)
    parser.add_argument("--invalid-every", type=int, default=20)
    parser.add_argument("--sighups", type=int, default=3)
    return parser.parse_args(argv)


def plan(args: argparse.Namespace) -> list[tuple[float, str, int]]:
    """(fraction of the run, operation, its number), in time order."""
    steps = [((n + 0.5) / args.policy_writes, "policy", n + 1) for n in range(args.policy_writes)]
    steps += [((n + 1) / (args.rotations + 2), "rotate", n) for n in range(args.rotations)]
    steps.append((0.55, "ca", 0))
    steps += [((n + 1) / (args.sighups + 1) - 0.03, "sighup", n) for n in range(args.sighups)]
    return sorted(steps)


def operate(
    operator: Operator, args: argparse.Namespace, cas: tuple[CertifiedKey, CertifiedKey]
) -> None:
    seconds, started, switched = args.minutes * 60, time.monotonic(), False
    for at, what, n in plan(args):
        time.sleep(max(0.0, started + at * seconds * 0.95 - time.monotonic()))
        if what == "policy":
            operator.write_policy(n, invalid=n % args.invalid_every == 0)
        elif what == "rotate":
            operator.rotate(cas[1] if switched else cas[0], f"rotation {n + 1}")
        elif what == "ca":
            operator.rotate(cas[1], "switch to a new CA")
            switched = True
        else:
            operator.sighup()


def report(
    args: argparse.Namespace,
    figures: dict[str, Any],
    operator: Operator,
    lost: list[str],
    rss: dict[int, list[float]],
) -> int:
    fresh = figures["fresh"]
    sent = figures["requests"] + fresh["requests"]
    failed = sum(figures[k] + fresh[k] for k in ("errors", "non200", "wrong"))
    print(f"\nsoak: {args.minutes:g} minutes, {figures['rps']:,.0f} reviews/s kept-alive + "
          f"{fresh['rps']:.1f} new connections/s; {', '.join(operator.log)}")  # fmt: skip
    print(f"  reviews sent {sent:,}, correct {sent - failed:,}, failed {failed}")
    print(f"    kept-alive: {figures['requests']:,} (errors {figures['errors']}, non-200 "
          f"{figures['non200']}, wrong answer {figures['wrong']}), p50 {figures['p50_ms']:.1f} "
          f"ms, p99 {figures['p99_ms']:.1f} ms, max {figures['max_ms']:.0f} ms")  # fmt: skip
    print(f"    new connections: {fresh['requests']:,} (errors {fresh['errors']}), handshake "
          f"p99 {figures['handshakes']['p99_ms']:.1f} ms")  # fmt: skip
    for sample in figures.get("error_samples") or fresh.get("error_samples") or []:
        print(f"    e.g. {sample}")
    times = operator.propagation
    print(f"  policy revisions: {len(times)} valid, in force in every worker after median "
          f"{statistics.median(times):.2f} s, max {max(times):.2f} s; {operator.invalid_writes} "
          f"invalid, in force: {operator.invalid_seen_in_force} (unchecked: "
          f"{operator.invalid_unchecked}); not in force within 15 s: "
          f"{operator.not_propagated}")  # fmt: skip
    print(f"  workers lost: {len(lost)}")
    print("  RSS per worker (MiB), first sample -> last, max:")
    for pid, values in rss.items():
        print(f"    pid {pid}: {values[0]:.1f} -> {values[-1]:.1f}, max {max(values):.1f} "
              f"({len(values)} samples)")  # fmt: skip
    return 0 if failed == 0 and not operator.invalid_seen_in_force else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seconds = args.minutes * 60
    with tempfile.TemporaryDirectory(prefix="spotguard-soak-") as tmp:
        workdir = Path(tmp)
        cas = (generate_ca(), generate_ca("spotguard-ca-2"))
        paths = write_pair(workdir / "certs", cas[0], generate_serving(cas[0], NAMES, ADDRESSES))
        bundle = workdir / "ca-bundle.crt"  # what the client trusts: both CAs
        bundle.write_bytes(cas[0].cert_pem + cas[1].cert_pem)
        policy = workdir / "policy.yaml"
        policy.write_text(policy_text(0))
        server = start_server(
            workdir, "--policy", str(policy), workers=2,
            certs=CertPaths(bundle, paths.cert, paths.key),
        )  # fmt: skip
        body = workdir / "review.json"
        body.write_text(json.dumps(review(plain_pod(tolerate_spot=True))))
        operator = Operator(server, workdir, policy)
        rss: dict[int, list[float]] = {}
        stop = threading.Event()

        def sample_memory() -> None:
            while not stop.wait(15):
                for pid in server.workers():
                    rss.setdefault(pid, []).append(rss_mib(pid))

        threading.Thread(target=sample_memory, daemon=True).start()
        try:
            load = start_loadgen(
                build_loadgen(), server, "/validate", body, rate=args.rate, c=16,
                fresh=args.fresh, d=f"{seconds:.0f}s", expect='"allowed":false',
            )  # fmt: skip
            try:
                operate(operator, args, cas)
                figures = result(load, timeout=seconds + 120)
            finally:
                if load.poll() is None:
                    load.kill()
            lost = [line for line in server.log_lines() if "worker_lost" in line]
        finally:
            stop.set()
            server.stop()
    return report(args, figures, operator, lost, rss)


if __name__ == "__main__":
    sys.exit(main())
