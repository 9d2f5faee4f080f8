"""The benchmark's reference server (benchmarks/refserver, Go): what latency this machine
gives any server doing a given amount of work per request, under the same load.

A tail latency measured on a small VM may be the machine's rather than the server's: the
load generator shares its cores, and a hypervisor can slow a busy vCPU without reporting
steal time. Run in the same benchmark with spotguard's own CPU time per review, the
reference separates the two: with the same fixed work per request (which, like a review,
takes longer when the core is slower) and with work bounded by the thread's CPU clock
(which does not)."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.load import build_go_program
from certs.pki import CertPaths
from controlplane.loopback import HOST, free_port
from controlplane.polling import wait_for
from testsupport.server import REPO, RunningServer

REFSERVER_DIR = REPO / "benchmarks" / "refserver"


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


def build_refserver() -> Path:
    """The reference server, built once per source version."""
    return build_go_program(REFSERVER_DIR, "refserver")


@contextmanager
def reference_server(
    binary: Path, certs: CertPaths, workdir: Path, *, work_us: float = 0, cpu_us: float = 0
) -> Iterator[RunningServer]:
    """The reference doing ``work_us`` of fixed work (as timed when it starts) and
    ``cpu_us`` of CPU-clock-bounded work per request, serving with spotguard's certificates
    (the load generator trusts it as it trusts spotguard), in its own process group (for
    its CPU time)."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log_file = workdir / "refserver.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [str(binary), "-addr", f"{HOST}:{port}", "-cert", str(certs.cert),
             "-key", str(certs.key), "-work-us", str(round(work_us)),
             "-cpu-us", str(round(cpu_us))],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    server = RunningServer(f"https://{HOST}:{port}", port, certs, process, log_file)

    def alive() -> None:
        if process.poll() is not None:
            raise RuntimeError(f"refserver exited: {log_file.read_text()}")

    try:
        wait_for(lambda: _accepts(port), 30, "the reference server to listen", alive=alive)
        yield server
    finally:
        server.stop()
