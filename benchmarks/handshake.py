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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class HandshakeFigures:
    """Per round (OpenSSL's default tickets, as served) in microseconds; the ratio
    served/default is read from them: its median over the rounds and its range."""

    rounds: list[tuple[float, float]]

    @property
    def ratios(self) -> list[float]:
        return [served / tickets for tickets, served in self.rounds]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def ratio_low(self) -> float:
        return min(self.ratios)

    @property
    def ratio_high(self) -> float:
        return max(self.ratios)


def handshake_figures(workdir: Path, count: int = 500, rounds: int = 7) -> HandshakeFigures:
    """Server CPU per handshake with OpenSSL's default tickets and as served, both in each
    round, in alternating order: a round's ratio compares two phases a few hundred
    milliseconds apart on the same machine, where separate medians of the two would mix
    rounds measured in different moments of a shared machine."""
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
    return HandshakeFigures(list(zip(measured["tickets"], measured["served"], strict=True)))
