"""What one TLS handshake costs the server: CPU time of the thread that accepts it.

A worker runs handshakes on its event loop, between reviews, so their CPU time is time
the loop serves nobody else. This measures the server's side alone (its thread's CPU
time from accept to a finished handshake, the client's work excluded) over loopback,
for the context spotguard serves with (webhook.tls) and for the same certificate with
OpenSSL's default of two TLS 1.3 session tickets, the baseline.
"""

from __future__ import annotations

import socket
import ssl
import statistics
import threading
import time
from pathlib import Path

from certs.pki import generate_pair
from webhook.tls import ReloadingContext

TIMEOUT_SECONDS = 10.0


def server_cpu_per_handshake_us(context: ssl.SSLContext, ca_file: Path, count: int) -> float:
    """Mean server-thread CPU microseconds per handshake over ``count`` new connections."""
    failed: list[Exception] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT_SECONDS)
        port = listener.getsockname()[1]
        client = threading.Thread(target=_connect, args=(port, ca_file, count, failed))
        client.start()
        spent = 0.0
        try:
            for _ in range(count):
                sock, _ = listener.accept()
                started = time.thread_time()
                with context.wrap_socket(sock, server_side=True) as tls:
                    spent += time.thread_time() - started
                    tls.sendall(b"x")  # the client waits for it: one handshake at a time
        finally:
            client.join()
    if failed:
        raise failed[0]
    return spent / count * 1e6


def _connect(port: int, ca_file: Path, count: int, failed: list[Exception]) -> None:
    context = ssl.create_default_context(cafile=str(ca_file))
    try:
        for _ in range(count):
            with (
                socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_SECONDS) as sock,
                context.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
            ):
                tls.recv(1)
    except (OSError, ssl.SSLError) as error:  # raised unless the server side failed first
        failed.append(error)


def handshake_figures(workdir: Path, count: int = 200, rounds: int = 5) -> dict[str, float]:
    """Server CPU per handshake as served and with OpenSSL's default tickets: the median
    of each over ``rounds`` rounds, and the median of the rounds' ratios (served over
    tickets). Each round measures both, in alternating order, so a ratio compares two
    phases a few hundred milliseconds apart on the same machine."""
    paths = generate_pair(workdir / "handshake-certs", ["localhost"], ["127.0.0.1"])
    contexts = {
        "served": ReloadingContext(paths.cert, paths.key).context(),
        "tickets": ReloadingContext(paths.cert, paths.key).context(),
    }
    contexts["tickets"].options &= ~ssl.OP_NO_TICKET
    contexts["tickets"].num_tickets = 2  # OpenSSL's default
    measured: dict[str, list[float]] = {"served": [], "tickets": []}
    for round_ in range(rounds):
        for name in ("served", "tickets") if round_ % 2 else ("tickets", "served"):
            measured[name].append(server_cpu_per_handshake_us(contexts[name], paths.ca_cert, count))
    ratios = [s / t for s, t in zip(measured["served"], measured["tickets"], strict=True)]
    return {
        "served_us": statistics.median(measured["served"]),
        "tickets_us": statistics.median(measured["tickets"]),
        "ratio": statistics.median(ratios),
        "ratio_low": min(ratios),
        "ratio_high": max(ratios),
    }
