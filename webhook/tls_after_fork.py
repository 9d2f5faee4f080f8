"""Does TLS work in this process? A worker asks once, right after gunicorn forked it.

The master's threads talk TLS to the API server (the policy and registration watches,
the audit and its Lease). A fork taken while one of them holds a lock inside OpenSSL
leaves that lock held for ever in the child, where no thread will release it: the
child's first handshake that needs it never returns. Such a worker would answer no
review (every one of them admitted by ``failurePolicy: Ignore`` after the timeout) or
keep its watch caches empty for ever. Reproduced outside spotguard: a parent with four
threads making TLS connections, forked 400 times, left 5 children whose handshake hung.

So each worker first runs a handshake between its serving context and a fresh client
context, in memory, on a thread, within a bound. One that does not finish means the
fork inherited a held lock: the worker exits (:data:`EXIT_TLS_WEDGED`) before it
accepts anything, and the master forks another.

The probe catches most such forks, not all: a lock the fork copied in the middle of a
change can let the probe through and stop a later first use. With four threads making
TLS connections and a server starting a thread per connection in the forking process
(testsupport.tls_fork), 7,400 forks gave 130 children whose real connection hung; the
probe caught 124 of them. With the server in a process of its own, as the master has
none, 4,000 forks gave 23 and the probe caught 22. The one sure way is a master whose
threads never use OpenSSL while it forks; that is not what spotguard does yet.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
from collections.abc import Callable

#: EX_TEMPFAIL: gunicorn restarts a worker that exits with it (3 and 4 would stop the
#: whole server as a boot failure).
EXIT_TLS_WEDGED = 75
#: A handshake takes a few milliseconds; a loaded host may stretch it, a held lock never
#: ends it.
PROBE_SECONDS = 5.0
_ROUNDS = 8  # a TLS 1.3 handshake needs 2-3 flights each way


def tls_works(
    server_context: Callable[[], ssl.SSLContext],
    timeout: float = PROBE_SECONDS,
    probe: Callable[[ssl.SSLContext], object] | None = None,
) -> bool:
    """False only if the handshake did not finish within ``timeout``: an error from it
    (say, a certificate being replaced) is not a held lock, and serving will report it.
    ``server_context`` is called on the probe's thread too: getting the context may take
    a lock of its own."""
    run = probe or handshake_in_memory

    def attempt() -> None:
        with contextlib.suppress(ssl.SSLError, OSError, ValueError):
            run(server_context())

    # Joined, not signalled from inside: a thread that used OpenSSL takes its
    # thread-registration lock again as it exits, and that is inside the bound too.
    probe_thread = threading.Thread(target=attempt, name="tls-probe", daemon=True)
    probe_thread.start()
    probe_thread.join(timeout)
    return not probe_thread.is_alive()


def handshake_in_memory(server_context: ssl.SSLContext) -> None:
    """One full handshake over memory BIOs: no socket, no peer, nothing left open."""
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.check_hostname = False
    client_context.verify_mode = ssl.CERT_NONE  # only the mechanics are under test
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(to_client, to_server, server_hostname="probe.invalid")
    server = server_context.wrap_bio(to_server, to_client, server_side=True)
    finished: set[ssl.SSLObject] = set()
    for _ in range(_ROUNDS):
        for end in (client, server):
            if end not in finished:
                with contextlib.suppress(ssl.SSLWantReadError):
                    end.do_handshake()
                    finished.add(end)
        if len(finished) == 2:
            return
    raise ssl.SSLError("the in-memory handshake did not complete")
