"""Replacing workers under load loses nothing queued; a killed worker loses only its own
requests, and the master counts them. Real gunicorn, real TLS, and the API server's own
HTTP client (Go's, in benchmarks/loadgen) keeping connections alive and opening new ones.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
import requests

from benchmarks.load import build_loadgen, go_available, result, start_loadgen
from controlplane.loopback import free_port
from controlplane.polling import wait_for
from testsupport.procnet import listening, owners
from testsupport.reviews import plain_pod, review
from testsupport.server import RunningServer, start_server
from webhook.worker_state import LastState

pytestmark = [
    pytest.mark.processes,
    pytest.mark.toolchain,
    pytest.mark.skipif(
        not go_available(), reason="needs Go to build the load generator (benchmarks/loadgen)"
    ),
]


def body_file(tmp_path: Path) -> Path:
    path = tmp_path / "validate.json"
    path.write_text(json.dumps(review(plain_pod())))
    return path


def assert_no_failure(figures: dict[str, object]) -> None:
    for name, part in (("kept-alive", figures), ("new connections", figures["fresh"])):
        assert isinstance(part, dict)
        assert part["requests"] > 0, name
        assert (part["errors"], part["non200"]) == (0, 0), (name, part)


@pytest.mark.parametrize("whom", ["SIGHUP to the master", "SIGTERM to one worker"])
def test_workers_replaced_under_load_lose_no_review(tmp_path: Path, whom: str) -> None:
    server = start_server(tmp_path, workers=2)
    try:
        # Ready means one worker answers; wait until both have booted and hold their slot.
        wait_for(
            lambda: (
                len(server.workers()) == 2 and len(listening(server.port, server.workers())) == 2
            ),
            20,
            "both workers listening",
        )
        before = listening(server.port, server.workers())
        assert all(len(held) == 1 for held in before.values()), before
        slots = set().union(*before.values())
        master_fds = len(os.listdir(f"/proc/{server.process.pid}/fd"))
        load = start_loadgen(
            build_loadgen(), server, "/validate", body_file(tmp_path),
            c=8, fresh=30, d="9s",
        )  # fmt: skip
        replaced: set[int] = set()
        for _ in range(3):
            time.sleep(2)
            workers = server.workers()
            if whom.startswith("SIGHUP"):
                server.process.send_signal(signal.SIGHUP)
                replaced |= set(workers)
            else:
                os.kill(workers[0], signal.SIGTERM)
                replaced.add(workers[0])
        figures = result(load)
        print(f"{whom}, 3 times: {figures}")
        assert_no_failure(figures)
        # The new workers took over the old workers' listening sockets, one each.
        # (a worker told to stop is still the master's child until it has finished)
        wait_for(
            lambda: len(server.workers()) == 2 and not set(server.workers()) & replaced,
            30,
            "two new workers, the replaced ones gone",
        )
        after = listening(server.port, server.workers())
        assert not set(after) & replaced
        assert all(len(held) == 1 for held in after.values()), after
        assert set().union(*after.values()) == slots
        # The master leaks nothing per worker it replaces.
        assert len(os.listdir(f"/proc/{server.process.pid}/fd")) == master_fds
    finally:
        server.stop()


class Pinned:
    """A TLS connection whose server side is held by a known worker."""

    def __init__(self, server: RunningServer, context: ssl.SSLContext) -> None:
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        self.port = self.sock.getsockname()[1]


def read_state(server_dir: Path, pid: int) -> LastState:
    data = (server_dir / "workers" / str(pid)).read_bytes()
    values = memoryview(data).cast("q")
    return LastState(values[0], values[1], bool(values[2]))


BODY = json.dumps(review(plain_pod())).encode()
HEAD = (
    b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    + f"Content-Length: {len(BODY)}\r\n\r\n".encode()
)


class SteadyReviews:
    """Reviews sent back to back on given kept-alive connections, in threads."""

    def __init__(self, server: RunningServer, connections: list[Pinned]) -> None:
        self.failures: list[str] = []
        self.answered: list[int] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(server, c)) for c in connections]
        for thread in self._threads:
            thread.start()

    def _run(self, server: RunningServer, connection: Pinned) -> None:
        client = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=10)
        client.sock = connection.sock  # this very connection, on a known worker
        while not self._stop.is_set():
            try:
                client.request("POST", "/validate", body=BODY,
                               headers={"Content-Type": "application/json"})  # fmt: skip
                reply = client.getresponse()
                reply.read()
                self.answered.append(reply.status)
            except (OSError, http.client.HTTPException) as error:
                self.failures.append(repr(error))
                return

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def test_a_killed_worker_loses_only_its_own_requests_and_they_are_counted(
    tmp_path: Path,
) -> None:
    runtime = tmp_path / "run"
    metrics_port = free_port()
    server = start_server(
        tmp_path, "--runtime-dir", str(runtime), "--metrics-bind", f"127.0.0.1:{metrics_port}",
        workers=2,
    )  # fmt: skip
    context = ssl.create_default_context(cafile=str(server.ca_file))
    connections = [Pinned(server, context) for _ in range(16)]
    try:
        workers = server.workers()
        wait_for(
            lambda: len(owners(server.port, workers)) >= 16,
            5,
            "len(owners(server.port, workers)) >= 16",
        )
        held = owners(server.port, workers)
        victim, survivor = workers
        doomed = [c for c in connections if held[c.port] == victim][:3]
        steady = [c for c in connections if held[c.port] == survivor][:2]
        if len(doomed) < 3 or not steady:
            pytest.skip("the kernel put fewer than 3 of 16 connections on one worker")
        for connection in connections:  # only the doomed and the steady stay open
            if connection not in doomed + steady:
                connection.sock.close()
        # Three requests under way on the victim: headers and half of each body read.
        for connection in doomed:
            connection.sock.sendall(HEAD + BODY[: len(BODY) // 2])
        wait_for(
            lambda: read_state(runtime, victim).busy_connections == 3,
            5,
            "read_state(runtime, victim).busy_connections == 3",
        )

        # Reviews keep flowing on kept-alive connections of the other worker throughout,
        # and on new connections, including those the kernel queues for the dead worker.
        reviews = SteadyReviews(server, steady)
        time.sleep(0.5)
        os.kill(victim, signal.SIGKILL)
        for _ in range(20):
            with server.session() as session:
                reply = session.post(server.url + "/validate", data=BODY, timeout=10,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
                assert reply.status_code == 200
        wait_for(
            lambda: victim not in server.workers() and len(server.workers()) == 2,
            10,
            "victim not in server.workers() and len(server.worker",
        )
        time.sleep(0.5)
        reviews.stop()
        assert reviews.failures == []
        assert reviews.answered and set(reviews.answered) == {200}
        assert survivor in server.workers()

        # The victim's three requests are lost: their connections were reset.
        for connection in doomed:
            with pytest.raises(OSError):
                connection.sock.sendall(BODY[len(BODY) // 2 :])
                if not connection.sock.recv(65536):
                    raise ConnectionResetError("closed without an answer")
        lost = [json.loads(line) for line in server.log_lines() if "worker_lost" in line]
        assert [(e["pid"], e["requestsLost"], e["connectionsDropped"]) for e in lost] == [
            (victim, 3, 3)
        ]
        scrape = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        assert "spotguard_worker_requests_lost_total 3.0" in scrape
        assert "spotguard_worker_connections_lost_total 3.0" in scrape
    finally:
        for connection in connections:
            connection.sock.close()
        server.stop()
