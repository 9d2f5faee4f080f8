"""Fork a process whose threads make TLS connections, as spotguard's master does, and ask
each child whether the worker's TLS probe and a real connection agree.

It runs as its own process (``python -m testsupport.tls_fork CERT_DIR FORKS
[--server-apart]``) so that the only threads a fork copies are the churn's: forked from
the test runner, a child would also inherit whatever threads earlier tests left behind,
and the experiment would depend on the order the tests ran in. It prints the outcomes as
one JSON object.

A lock inherited held is never released, so a child's real connection counts as hung
only after :data:`HUNG_SECONDS`; one that finishes later than :data:`PROMPT_SECONDS`
was slow (a loaded machine), not wedged, and is counted apart.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import os
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from certs.pki import CertPaths, pair_in
from webhook.tls import ReloadingContext
from webhook.tls_after_fork import tls_works

FINE, CAUGHT, MISSED, PROBE_ONLY, SLOW = 0, 5, 6, 7, 8
OUTCOME_NAMES = {
    FINE: "fine",
    CAUGHT: "caught",
    MISSED: "missed",
    PROBE_ONLY: "only the probe hung",
    SLOW: "fine but slow",
}
PROBE_SECONDS = 2.0
PROMPT_SECONDS = 2.0
HUNG_SECONDS = 15.0


class TLSChurn:
    """Four threads making verified TLS connections without pause, as the master's watch,
    lease and audit threads connect to the API server, and the server they connect to,
    which starts a thread per connection.

    By default the server runs in the forking process too. That is harsher than the
    master, which starts no threads while it serves: a thread's first and last use of
    OpenSSL take its thread-registration lock, so a process that starts and ends threads
    all the time hands that lock to its children far more often. ``server_apart`` runs
    the server in a process of its own, forked before any thread starts: the master's
    shape."""

    def __init__(self, pair: CertPaths, server_apart: bool = False) -> None:
        self.pair = pair
        self.context = ReloadingContext(pair.cert, pair.key).context()
        self.server_apart = server_apart
        self.stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.port = self._listener.getsockname()[1]
        self._server_pid = 0

    def __enter__(self) -> TLSChurn:
        if self.server_apart:
            parent = os.getpid()
            self._server_pid = os.fork()
            if self._server_pid == 0:
                _serve(self._listener, self.context, lambda: os.getppid() == parent)
                os._exit(0)
            self._listener.close()
        else:
            serving = threading.Thread(
                target=_serve, args=(self._listener, self.context, self._serving), daemon=True
            )
            serving.start()
        for _ in range(4):
            threading.Thread(target=self._churn, daemon=True).start()
        time.sleep(0.2)
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        if self._server_pid:
            os.kill(self._server_pid, signal.SIGKILL)
            os.waitpid(self._server_pid, 0)
        else:
            self._listener.close()

    def _serving(self) -> bool:
        return not self.stop.is_set()

    def connect(self) -> None:
        """One verified client connection and one byte, as a watch's first request."""
        client = ssl.create_default_context(cafile=str(self.pair.ca_cert))
        with (
            socket.create_connection(("127.0.0.1", self.port), timeout=5) as raw,
            client.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.sendall(b"x")

    def _churn(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(ssl.SSLError, OSError):
                self.connect()


def _serve(listener: socket.socket, context: ssl.SSLContext, serving: Callable[[], bool]) -> None:
    """A handshake and one byte per connection, each on a thread, while ``serving()``."""
    listener.settimeout(0.5)
    while serving():
        try:
            connection, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:  # the listener closed
            return
        connection.settimeout(None)
        threading.Thread(target=_answer, args=(context, connection), daemon=True).start()


def _answer(context: ssl.SSLContext, connection: socket.socket) -> None:
    with (
        contextlib.suppress(ssl.SSLError, OSError),
        context.wrap_socket(connection, server_side=True) as tls,
    ):
        tls.recv(1)


def child(context: ssl.SSLContext, connect: Callable[[], object]) -> int:
    """In the forked child: the probe, then a real connection, both bounded. A hung real
    connection after a passing probe (a miss) prints where it hangs."""
    passed = tls_works(lambda: context, PROBE_SECONDS)
    started = time.monotonic()
    real = threading.Thread(target=connect, daemon=True)
    real.start()
    real.join(HUNG_SECONDS if passed else PROMPT_SECONDS)
    if not passed:
        return CAUGHT if real.is_alive() else PROBE_ONLY
    if real.is_alive():
        faulthandler.dump_traceback(all_threads=True)
        return MISSED
    return FINE if time.monotonic() - started < PROMPT_SECONDS else SLOW


def fork_many(pair: CertPaths, forks: int, server_apart: bool = False) -> dict[str, int]:
    """Fork ``forks`` children while the churn runs; count their outcomes by name."""
    counts = dict.fromkeys(OUTCOME_NAMES.values(), 0)
    with TLSChurn(pair, server_apart) as churn:
        for _ in range(forks):
            pid = os.fork()
            if pid == 0:
                signal.alarm(int(PROBE_SECONDS + HUNG_SECONDS + 10))  # nothing outlives it
                os._exit(child(churn.context, churn.connect))
            code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            name = OUTCOME_NAMES.get(code, f"exit {code}")
            counts[name] = counts.get(name, 0) + 1
    return counts


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m testsupport.tls_fork", description=__doc__)
    parser.add_argument("cert_dir", type=Path, help="ca.crt, tls.crt and tls.key")
    parser.add_argument("forks", type=int)
    parser.add_argument(
        "--server-apart", action="store_true", help="serve from a process of its own"
    )
    args = parser.parse_args(argv)
    print(json.dumps(fork_many(pair_in(args.cert_dir), args.forks, args.server_apart)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
