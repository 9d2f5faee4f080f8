"""Clients that could starve the server, against the real one (gunicorn, TLS, 2 workers).

Timing thresholds are generous (a loaded 2-core CI machine); the speed targets live in
the benchmark (the steady phases of benchmarks/bench_webhook.py). What is tested is that reviews
keep being answered while many idle, slow and silent connections are open, and that
each of those is cut at its own deadline with the answer a client can read.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testsupport.reviews import plain_pod, review, training_pod
from testsupport.server import RunningServer, start_server
from webhook.app import DEFAULT_MAX_BODY_BYTES

pytestmark = pytest.mark.processes

LIMIT_MESSAGE = f"request body exceeds the {DEFAULT_MAX_BODY_BYTES}-byte limit"
NINE_MIB = 9 * 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("connections"), workers=2)
    yield running
    running.stop()


def tls_context(server: RunningServer) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(server.ca_file))


def tls_connection(server: RunningServer, timeout: float = 10) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    return tls_context(server).wrap_socket(raw, server_hostname="localhost")


def https(server: RunningServer, timeout: float = 10) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection(
        "127.0.0.1", server.port, context=tls_context(server), timeout=timeout
    )


def post(connection: http.client.HTTPSConnection, path: str, body: bytes) -> tuple[int, bytes]:
    connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    reply = connection.getresponse()
    return reply.status, reply.read()


def read_all(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (or ``timeout``)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError, ssl.SSLError):
        pass
    return data


class BadClients:
    """Idle TLS connections, connections trickling a request a byte at a time, and TCP
    connections that never start TLS, all held open (and reopened) until stopped."""

    def __init__(self, server: RunningServer, idle: int, trickle: int, silent: int) -> None:
        self.server = server
        self.sockets: list[socket.socket] = []
        self.trickling: list[tuple[ssl.SSLSocket, bytes]] = []
        self._stop = threading.Event()
        for _ in range(idle):
            self.sockets.append(tls_connection(server))
        head = b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        for _ in range(trickle):
            connection = tls_connection(server)
            self.sockets.append(connection)
            self.trickling.append((connection, head))
        for _ in range(silent):
            self.sockets.append(socket.create_connection(("127.0.0.1", server.port)))
        self._thread = threading.Thread(target=self._trickle, daemon=True)
        self._thread.start()

    def _trickle(self) -> None:
        position = 0
        while not self._stop.wait(0.5):
            for connection, head in self.trickling:
                with contextlib.suppress(OSError):
                    connection.sendall(head[position % len(head) : position % len(head) + 1])
            position += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for sock in self.sockets:
            sock.close()


def test_reviews_are_answered_while_many_idle_slow_and_silent_clients_are_connected(
    server: RunningServer,
) -> None:
    # Before this worker, 8 idle TLS connections stopped a 2x4 server for good.
    bad = BadClients(server, idle=150, trickle=40, silent=40)
    try:
        body = json.dumps(review(training_pod())).encode()
        kept_alive = https(server)
        slowest = 0.0
        for _ in range(40):
            started = time.monotonic()
            status, _ = post(kept_alive, "/mutate", body)
            slowest = max(slowest, time.monotonic() - started)
            assert status == 200
        kept_alive.close()
        for _ in range(10):  # new connections: a TLS handshake each
            started = time.monotonic()
            fresh = https(server)
            status, _ = post(fresh, "/validate", json.dumps(review(plain_pod())).encode())
            fresh.close()
            slowest = max(slowest, time.monotonic() - started)
            assert status == 200
        print(f"slowest review among 50 with 230 bad connections open: {slowest * 1000:.0f} ms")
        assert slowest < 2.0  # the old server: every review waited for the bad clients to go
    finally:
        bad.close()


def test_a_9_mib_body_without_expect_gets_the_size_limit_error(server: RunningServer) -> None:
    """The API server's client sends its body without waiting for ``100 Continue``: it
    must read the 400 instead of a reset connection."""
    connection = https(server, timeout=30)
    status, body = post(connection, "/mutate", b"x" * NINE_MIB)
    assert status == 400
    assert json.loads(body)["error"] == LIMIT_MESSAGE
    connection.close()


def test_a_chunked_body_over_the_limit_is_reported_as_too_large(server: RunningServer) -> None:
    connection = https(server, timeout=30)
    chunks = (b"x" * (1024 * 1024) for _ in range(9))
    connection.request(
        "POST",
        "/mutate",
        body=chunks,
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        encode_chunked=True,
    )
    reply = connection.getresponse()
    assert reply.status == 400
    assert json.loads(reply.read())["error"] == LIMIT_MESSAGE  # not "invalid JSON"
    connection.close()


def test_an_oversized_body_announced_with_expect_is_refused_before_it_is_sent(
    server: RunningServer,
) -> None:
    with tls_connection(server) as sock:
        sock.sendall(
            b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {NINE_MIB}\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        answer = read_all(sock, timeout=5)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert LIMIT_MESSAGE.encode() in answer
    assert b"100 Continue" not in answer


def test_a_body_within_the_limit_announced_with_expect_is_continued(
    server: RunningServer,
) -> None:
    body = json.dumps(review(plain_pod())).encode()
    with tls_connection(server) as sock:
        sock.sendall(
            b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        sock.settimeout(5)
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")


def test_headers_trickled_too_slowly_are_cut_at_the_header_deadline(
    server: RunningServer,
) -> None:
    with tls_connection(server) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /mutate HTTP/1.1\r\n")
        sock.settimeout(0.5)
        answer = b""
        for byte in b"Content-Type: application/json\r\n" * 10:
            try:
                sock.sendall(bytes([byte]))
                answer += sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if answer:
                break
        answer += read_all(sock, timeout=2)
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert 4 <= elapsed < 10  # the 5 s header deadline, checked four times a second


@pytest.mark.parametrize(
    "start",
    [
        b"POST /mutate HTTP/1.1\r\nHost: x\r\nX-Endless: ",
        b"POST /mutate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\n{}\r\n0\r\nX-Endless-Trailer: ",
    ],
    ids=["header", "trailer"],
)
def test_one_endless_header_line_is_refused_before_the_deadline(
    server: RunningServer, start: bytes
) -> None:
    """httptools buffers a header (or trailer) until its line ends: without counting the
    bytes fed meanwhile, one that never ends would be held in memory until the deadline."""
    with tls_connection(server) as sock:
        started = time.monotonic()
        sock.sendall(start)
        with contextlib.suppress(OSError):  # the server may close while we still send
            for _ in range(16):
                sock.sendall(b"a" * 65536)
        answer = read_all(sock, timeout=4)
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 431 "), answer
    assert elapsed < 4  # well before the 5 s header deadline (whose answer is a 408)


def test_a_connection_that_never_starts_tls_is_closed_at_the_handshake_deadline(
    server: RunningServer,
) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        started = time.monotonic()
        assert read_all(sock, timeout=15) == b""
        elapsed = time.monotonic() - started
    assert 4 <= elapsed < 10  # the 5 s handshake deadline


def test_malformed_http_gets_a_400(server: RunningServer) -> None:
    with tls_connection(server) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        answer = read_all(sock, timeout=5)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b"malformed HTTP request" in answer


def test_pipelined_requests_arriving_together_are_all_answered_in_order(
    server: RunningServer,
) -> None:
    """A short TLS record followed at once by a multi-record request and a third one, in
    one TCP write: the worker stops reading after a short record (webhook.connection), so
    the records still in the socket must be read when epoll reports them, not stranded."""
    big_pod = plain_pod("big")
    big_pod["metadata"]["annotations"] = {"example.com/padding": "x" * 50_000}
    bodies = [json.dumps(review(plain_pod(f"small-{n}"))).encode() for n in range(2)]
    bodies.insert(1, json.dumps(review(big_pod)).encode())
    requests = [
        b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
        for body in bodies
    ]
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = tls_context(server).wrap_bio(incoming, outgoing, server_hostname="localhost")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                incoming.write(sock.recv(65536))
        for request in requests:
            tls.write(request)  # one record for the first, several for the second
        sock.sendall(outgoing.read())
        answers = b""
        while answers.count(b"HTTP/1.1 200 ") < 3 or not answers.endswith(b"}}"):
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {answers!r}"
            incoming.write(chunk)
            with contextlib.suppress(ssl.SSLWantReadError):
                while data := tls.read(65536):
                    answers += data
    uids = [json.loads(body)["request"]["uid"] for body in bodies]
    answered = [part.split(b'"uid":"')[1].split(b'"')[0].decode() for part in
                answers.split(b"HTTP/1.1 200 ")[1:]]  # fmt: skip
    assert answered == uids


def test_at_the_connection_cap_the_longest_idle_connection_is_closed(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--max-connections", "6", workers=1)
    try:
        idle = [tls_connection(server) for _ in range(6)]
        for sock in idle:  # each handshake done and seen by the server before the next
            sock.settimeout(0.2)
            with pytest.raises(TimeoutError):
                sock.recv(1)
        time.sleep(0.3)
        body = json.dumps(review(plain_pod())).encode()
        newcomer = https(server)
        assert post(newcomer, "/validate", body)[0] == 200
        assert read_all(idle[0], timeout=2) == b""  # closed: the longest idle
        for sock in idle[1:]:  # still open: no answer, no close
            sock.settimeout(0.1)
            with pytest.raises(TimeoutError):
                sock.recv(1)
        newcomer.close()
        for sock in idle:
            sock.close()
    finally:
        server.stop()


def test_the_logs_are_json_lines_and_the_startup_line_names_the_address(
    server: RunningServer,
) -> None:
    lines = [json.loads(line) for line in server.log_lines() if line.strip()]
    loggers = {line["logger"] for line in lines}
    assert "gunicorn.error" in loggers  # gunicorn's own lines, in the same format
    assert any(line["message"].startswith("Booting worker") for line in lines)
    listening = [line for line in lines if line.get("event") == "listening"]
    assert [line["address"] for line in listening] == [server.url]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
