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
accepts anything, and the master forks another. In the reproduction, the probe caught
every child whose handshake then hung.
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
    finished = threading.Event()

    def attempt() -> None:
        try:
            run(server_context())
        except (ssl.SSLError, OSError, ValueError):
            pass
        finally:
            finished.set()

    threading.Thread(target=attempt, name="tls-probe", daemon=True).start()
    return finished.wait(timeout)


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
