"""Run ``spotguard serve`` as a child process on loopback, the way tests and the demo need it.

The server is the real one (gunicorn, TLS); this module only picks a free port, makes
certificates, waits for ``/readyz`` and stops it again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from certs.pki import CertPaths, generate_pair, service_dns_names
from controlplane.loopback import free_port
from testsupport.procnet import children

REPO = Path(__file__).resolve().parent.parent

# Probes ask the server to close after answering: a kept-alive probe connection would
# otherwise linger on some worker until the garbage collector frees the response, and
# tests that count a worker's connections would count it too.
ONE_REQUEST = {"Connection": "close"}


@dataclass(frozen=True)
class RunningServer:
    url: str
    port: int
    certs: CertPaths
    process: subprocess.Popen[bytes]
    log_file: Path

    @property
    def ca_file(self) -> Path:
        return self.certs.ca_cert

    def session(self) -> requests.Session:
        """A keep-alive session that verifies the server against the generated CA only."""
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE must not replace our CA
        session.verify = str(self.certs.ca_cert)
        return session

    def workers(self) -> list[int]:
        """The worker processes' pids (the master's children)."""
        return children(self.process.pid)

    def log_lines(self) -> list[str]:
        return self.log_file.read_text().splitlines()

    def revisions(self, asks: int = 6) -> set[str]:
        """Policy revisions answered on ``asks`` new connections, so every worker is asked
        (a kept-alive connection always reaches the same worker)."""
        answers = set()
        for _ in range(asks):
            with self.session() as session:
                ready = session.get(self.url + "/readyz", timeout=5, headers=ONE_REQUEST).json()
                answers.add(str(ready["policyRevision"]))
        return answers

    def wait_for_revision(self, revision: str, timeout: float = 10.0) -> float:
        """Seconds until every worker serves policy ``revision``."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            try:
                if self.revisions() == {revision}:
                    return time.monotonic() - started
            except requests.RequestException:  # a busy host: ask again
                pass
            time.sleep(0.05)
        raise TimeoutError(f"policy revision {revision} not in force after {timeout:.0f} s")

    def stop(self, timeout: float = 40.0) -> None:
        stop_process_group(self.process, timeout)


def stop_process_group(process: subprocess.Popen[bytes], timeout: float = 40.0) -> None:
    """SIGTERM (the graceful path), then SIGKILL to the whole process group: a killed
    master must not leave workers behind still answering the API server."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def start_server(
    workdir: Path,
    *extra_args: str,
    workers: int = 1,
    port: int | None = None,
    certs: CertPaths | None = None,
    ready_timeout: float = 30.0,
    shutdown_delay: float = 0.0,
    repo: Path = REPO,
) -> RunningServer:
    """Start the webhook on 127.0.0.1 and wait until it answers ``/readyz`` over TLS.

    ``repo``: the source tree to run (another checkout, e.g. to benchmark an older design).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    if certs is None:
        names = [*service_dns_names("spotguard", "spotguard-system"), "localhost"]
        certs = generate_pair(workdir / "certs", names, ["127.0.0.1"])
    port = port or free_port()
    log_file = workdir / "webhook.log"
    command = [
        sys.executable, "-m", "webhook", "serve", "--bind", f"127.0.0.1:{port}",
        "--cert-dir", str(certs.cert.parent), "--workers", str(workers),
        "--shutdown-delay", str(shutdown_delay), *extra_args,
    ]  # fmt: skip
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            command, cwd=repo, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = RunningServer(f"https://127.0.0.1:{port}", port, certs, process, log_file)
    try:
        _wait_ready(server, ready_timeout)
    except BaseException:
        server.stop()  # never leave a server behind a failed start
        raise
    return server


def _wait_ready(server: RunningServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with server.session() as session:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                log = server.log_file
                raise RuntimeError(f"webhook exited early; log {log}:\n{log.read_text()}")
            try:
                reply = session.get(server.url + "/readyz", timeout=1, headers=ONE_REQUEST)
                if reply.status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):
                # Not listening yet; workers accept only once their watch caches synced
                # (until then a connection waits in the kernel's queue); or a loaded
                # machine did not finish the TLS handshake within the second: ask again.
                time.sleep(0.1)
    raise RuntimeError(f"webhook not ready in {timeout:.0f} s; log {server.log_file}")
