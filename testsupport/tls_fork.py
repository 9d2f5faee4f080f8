"""Fork a process whose threads make TLS connections, as spotguard's master does, and ask
each child whether the worker's TLS probe and a real connection agree.

It runs as its own process (``python -m testsupport.tls_fork CERT_DIR FORKS``) so that
the only threads a fork copies are the churn's: forked from the test runner, a child
would also inherit whatever threads earlier tests left behind, and the experiment would
depend on the order the tests ran in. It prints the outcomes as one JSON object.

A lock inherited held is never released, so a child's real connection counts as hung
only after :data:`HUNG_SECONDS`; one that finishes later than :data:`PROMPT_SECONDS`
was slow (a loaded machine), not wedged, and is counted apart.
"""

from __future__ import annotations

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
from pathlib import Path

from certs.pki import CA_CERT_FILE, SERVING_CERT_FILE, SERVING_KEY_FILE, CertPaths
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
    """A TLS server on loopback and four threads connecting to it without pause, as the
    master's watch, lease and audit threads connect to the API server."""

    def __init__(self, pair: CertPaths) -> None:
        self.pair = pair
        self.context = ReloadingContext(pair.cert, pair.key).context()
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
        """One verified client connection and one byte, as a watch's first request."""
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
    """In the forked child: the probe, then a real connection, both bounded. A hung real
    connection after a passing probe (a miss) prints where it hangs."""
    signal.alarm(int(PROBE_SECONDS + HUNG_SECONDS + 10))
    passed = tls_works(lambda: churn.context, PROBE_SECONDS)
    started = time.monotonic()
    real = threading.Thread(target=churn.connect, daemon=True)
    real.start()
    real.join(HUNG_SECONDS if passed else PROMPT_SECONDS)
    if not passed:
        return CAUGHT if real.is_alive() else PROBE_ONLY
    if real.is_alive():
        faulthandler.dump_traceback(all_threads=True)
        return MISSED
    return FINE if time.monotonic() - started < PROMPT_SECONDS else SLOW


def fork_many(pair: CertPaths, forks: int) -> dict[str, int]:
    """Fork ``forks`` children while the churn runs; count their outcomes by name."""
    counts = dict.fromkeys(OUTCOME_NAMES.values(), 0)
    with TLSChurn(pair) as churn:
        for _ in range(forks):
            pid = os.fork()
            if pid == 0:
                signal.alarm(int(PROBE_SECONDS + HUNG_SECONDS + 10))  # nothing outlives it
                os._exit(child(churn))
            code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            name = OUTCOME_NAMES.get(code, f"exit {code}")
            counts[name] = counts.get(name, 0) + 1
    return counts


def main(argv: list[str]) -> int:
    cert_dir, forks = Path(argv[0]), int(argv[1])
    pair = CertPaths(
        cert_dir / CA_CERT_FILE, cert_dir / SERVING_CERT_FILE, cert_dir / SERVING_KEY_FILE
    )
    print(json.dumps(fork_many(pair, forks)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
