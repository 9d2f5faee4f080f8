"""Measuring helpers for the benchmarks: CPU time per call, per server process and of
the rest of the host (the noise), and one load-generator phase with the server's CPU."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.load import loadgen_command
from devtools.reviews import plain_pod, review, training_pod
from devtools.server import RunningServer
from policies.loader import default_policy
from policies.review import Phase
from policies.review import review as domain_review
from webhook.admission import request_of
from webhook.review import parse_review


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
    loadgen: Path,
    server: RunningServer,
    path: str,
    body: Path | None,
    sample: tuple[float, Callable[[], Any]] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """One load phase; adds the server's CPU time per request (robust to a busy host).
    ``sample``: (seconds, function) called that long into the phase; its value is
    returned as ``result["sample"]``."""
    command = loadgen_command(loadgen, server, path, body, **options)
    before, busy, loadgen_cpu = (
        server_cpu_seconds(server),
        busy_cpu_seconds(),
        children_cpu_seconds(),
    )
    sampled: list[Any] = []
    if sample is not None:
        delay, function = sample
        timer = threading.Timer(delay, lambda: sampled.append(function()))
        timer.start()
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(output)
    if sample is not None:
        timer.join()
        result["sample"] = sampled[0] if sampled else None
    after = server_cpu_seconds(server)
    spent = [seconds - before.get(pid, 0.0) for pid, seconds in after.items()]
    result["server_cpu_us"] = sum(spent) / max(result["requests"], 1) * 1e6
    result["busiest_share"] = max(spent, default=0.0) / max(sum(spent), 1e-9)
    # What neither the server nor the load generator used: other processes on this host.
    others = busy_cpu_seconds() - busy - sum(spent) - (children_cpu_seconds() - loadgen_cpu)
    result["others_cores"] = max(others, 0.0) / max(result["seconds"], 1e-9)
    return result


def rss_mib(pid: int) -> float:
    """Resident memory of a process, in MiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
