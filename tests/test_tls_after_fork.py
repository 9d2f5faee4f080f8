"""A worker proves TLS works before it serves: a fork that inherited a lock held inside
OpenSSL by another thread of the master is caught, and the worker makes way for another.
The last test forks a process whose threads make TLS connections, as the master's do."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from gunicorn.arbiter import Arbiter

from certs.pki import CertPaths, generate_pair
from controlplane.loopback import free_port
from controlplane.polling import wait_for
from testsupport.server import ONE_REQUEST, REPO, RunningServer
from webhook.tls import ReloadingContext
from webhook.tls_after_fork import EXIT_TLS_WEDGED, handshake_in_memory, tls_works


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> CertPaths:
    return generate_pair(tmp_path_factory.mktemp("certs"), ["localhost"], ["127.0.0.1"])


def serving_context(pair: CertPaths) -> ssl.SSLContext:
    """The context the server serves with (the one a worker's check uses)."""
    return ReloadingContext(pair.cert, pair.key).context()


def test_the_probe_completes_a_handshake_with_the_serving_context(pair: CertPaths) -> None:
    context = serving_context(pair)
    handshake_in_memory(context)  # raises if either side did not finish
    started = time.monotonic()
    assert tls_works(lambda: context)
    assert time.monotonic() - started < 1.0


def test_a_handshake_that_never_finishes_is_reported_within_the_bound(pair: CertPaths) -> None:
    held = threading.Event()  # never set: a lock no thread of this process will release
    started = time.monotonic()
    assert not tls_works(lambda: serving_context(pair), 0.2, probe=lambda _: held.wait())
    assert time.monotonic() - started < 1.0


def test_a_context_that_cannot_be_had_is_reported_too() -> None:
    held = threading.Event()

    def context() -> ssl.SSLContext:
        held.wait()
        raise AssertionError("unreachable")

    assert not tls_works(context, 0.2)


def test_an_error_is_not_a_held_lock(pair: CertPaths) -> None:
    def failing(_: ssl.SSLContext) -> None:
        raise ssl.SSLError("a certificate being replaced")

    assert tls_works(lambda: serving_context(pair), 0.2, probe=failing)


def test_the_exit_code_makes_gunicorn_fork_another_worker_not_stop() -> None:
    assert EXIT_TLS_WEDGED not in (Arbiter.WORKER_BOOT_ERROR, Arbiter.APP_LOAD_ERROR)


FORKS = 200
FINE, CAUGHT, MISSED, PROBE_ONLY = 0, 5, 6, 7


class TLSChurn:
    """A TLS server on loopback and four threads connecting to it without pause, as the
    master's watch, lease and audit threads connect to the API server."""

    def __init__(self, pair: CertPaths) -> None:
        self.pair = pair
        self.context = serving_context(pair)
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()

    def __enter__(self) -> TLSChurn:
        threading.Thread(target=self._serve, daemon=True).start()
        for _ in range(4):
            threading.Thread(target=self._churn, daemon=True).start()
        time.sleep(0.2)
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.listener.close()

    def connect(self) -> None:
        client = ssl.create_default_context(cafile=str(self.pair.ca_cert))
        with (
            socket.create_connection(("127.0.0.1", self.port), timeout=5) as raw,
            client.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.sendall(b"x")

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with (
            contextlib.suppress(ssl.SSLError, OSError),
            self.context.wrap_socket(connection, server_side=True) as tls,
        ):
            tls.recv(1)

    def _churn(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(ssl.SSLError, OSError):
                self.connect()


def child(churn: TLSChurn) -> int:
    """In the forked child: the probe, then a real connection, both bounded."""
    signal.alarm(10)
    passed = tls_works(lambda: churn.context, 2.0)
    real = threading.Thread(target=churn.connect, daemon=True)
    real.start()
    real.join(2.0)
    outcomes = {
        (True, False): FINE,
        (False, True): CAUGHT,
        (True, True): MISSED,
        (False, False): PROBE_ONLY,
    }
    return outcomes[(passed, real.is_alive())]


@pytest.mark.processes
def test_no_fork_passes_the_probe_and_then_hangs_in_a_handshake(pair: CertPaths) -> None:
    """Forked while other threads make TLS connections, a child the probe passed must
    connect: the probe misses no fork that inherited a held lock."""
    outcomes: dict[int, int] = {}
    with TLSChurn(pair) as churn:
        for _ in range(FORKS):
            pid = os.fork()
            if pid == 0:
                os._exit(child(churn))
            code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            outcomes[code] = outcomes.get(code, 0) + 1
    print(f"{FORKS} forks: {outcomes} (0 fine, 5 caught, 6 missed, 7 only the probe hung)")
    assert set(outcomes) <= {FINE, CAUGHT, PROBE_ONLY}, outcomes
    assert outcomes.get(FINE, 0) >= FORKS * 0.8, outcomes


#: Runs the CLI with the worker's TLS check failing in the first worker only (a marker
#: file says a worker already failed it), as a fork that inherited a held lock would.
FIRST_WORKER_WEDGED = """
import os, sys
from pathlib import Path
import webhook.worker
marker = Path(os.environ["WEDGE_MARKER"])
def first_fails(context, *args, **kwargs):
    if marker.exists():
        return True
    marker.write_text(str(os.getpid()))
    return False
webhook.worker.tls_works = first_fails
from webhook.cli import main
sys.exit(main())
"""


@pytest.mark.processes
def test_a_wedged_worker_exits_and_gunicorn_forks_a_working_one(tmp_path: Path) -> None:
    certs = generate_pair(tmp_path / "certs", ["localhost"], ["127.0.0.1"])
    port = free_port()
    log_file = tmp_path / "serve.log"
    command = [
        sys.executable, "-c", FIRST_WORKER_WEDGED, "serve", "--bind", f"127.0.0.1:{port}",
        "--cert-dir", str(certs.cert.parent), "--workers", "1", "--shutdown-delay", "0",
    ]  # fmt: skip
    marker = tmp_path / "wedged"
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "WEDGE_MARKER": str(marker)},
        )  # fmt: skip
    server = RunningServer(f"https://127.0.0.1:{port}", port, certs, process, log_file)
    try:
        with server.session() as session:

            def ready() -> bool:
                try:
                    reply = session.get(server.url + "/readyz", timeout=1, headers=ONE_REQUEST)
                except requests.RequestException:
                    return False
                return reply.status_code == 200

            wait_for(ready, 30, "a worker answers /readyz")
        events = [json.loads(line) for line in server.log_lines() if line.startswith("{")]
        wedged = [e for e in events if e.get("event") == "worker_tls_wedged"]
        assert [e["pid"] for e in wedged] == [int(marker.read_text())]
        assert any(f"exited with code {EXIT_TLS_WEDGED}" in e["message"] for e in events)
        assert process.poll() is None  # the master carried on
        assert server.workers() and int(marker.read_text()) not in server.workers()
    finally:
        server.stop()
