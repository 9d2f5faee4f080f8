"""Listening sockets held by the gunicorn master, one per worker slot.

Each worker accepts from its own socket, and the sockets share the address through
``SO_REUSEPORT``: the kernel spreads new connections evenly over them by a hash of the
client's address and port. (On one socket shared by every worker, whichever worker woke
first took a whole burst of connections; a client that opened all its connections at
once often got every one of them on the same worker.)

The master creates the sockets and keeps them open for the life of the server. A worker
inherits its slot's socket through fork; the worker that replaces it (after a SIGHUP, a
crash, a timeout or a SIGTERM of that worker alone) inherits the same socket. So the
connections the kernel queued for a slot are never reset: they wait, for the second or
so a replacement takes to start, and the replacement accepts them. (When each worker
opened its own socket, a stopping worker's queue was reset as the socket closed with it.)
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Sequence
from typing import Any

#: Connections the kernel queues per socket before refusing new ones (gunicorn's default).
BACKLOG = 2048


def parse_bind(bind: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) to an address tuple."""
    host, separator, port = bind.rpartition(":")
    if not separator or not port.isdigit():
        raise ValueError(f"--bind must be ADDRESS:PORT, got {bind!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


class Listener:
    """One slot's socket, shaped as gunicorn expects a listener (``fileno``, ``close``,
    ``str``). ``str`` is the URL clients use, which gunicorn's startup line prints."""

    def __init__(self, sock: socket.socket, url: str, slot: int) -> None:
        self.sock = sock
        self.url = url
        self.slot = slot

    def fileno(self) -> int:
        return self.sock.fileno()

    def getsockname(self) -> Any:
        return self.sock.getsockname()

    def close(self) -> None:
        self.sock.close()

    def __str__(self) -> str:
        return self.url


class ListenerSlots:
    """``count`` listening sockets on one address, all in one ``SO_REUSEPORT`` group."""

    def __init__(self, bind: str, count: int, backlog: int = BACKLOG) -> None:
        host, port = parse_bind(bind)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sockets: list[socket.socket] = []
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]  # port 0: every slot on the port the first got
            sock.listen(backlog)
            sock.setblocking(False)
            sock.set_inheritable(True)
            self._sockets.append(sock)
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        self.url = f"https://{shown}:{port}"
        self.port = port
        self.listeners = [Listener(s, self.url, slot) for slot, s in enumerate(self._sockets)]

    def __len__(self) -> int:
        return len(self.listeners)

    # gunicorn's master keeps this group as its one listener: it prints it at start-up
    # (the URL), passes it to each worker (which keeps only its slot) and, on stop, reads
    # its address (to unlink a Unix socket) and closes it.
    def fileno(self) -> int:
        return self.listeners[0].fileno()

    def getsockname(self) -> Any:
        return self.listeners[0].sock.getsockname()

    def __str__(self) -> str:
        return self.url

    def least_held(self, held: Iterable[int]) -> int:
        """The slot a new worker takes: the one fewest live workers hold (a slot freed by
        a worker that died, or during a reload the slot of an old worker about to stop),
        the lowest-numbered among equals."""
        counts = [0] * len(self.listeners)
        for slot in held:
            if 0 <= slot < len(counts):
                counts[slot] += 1
        return counts.index(min(counts))

    def keep_only(self, slot: int) -> Sequence[Listener]:
        """In a worker after fork: close its copies of the other slots' sockets (the
        master holds them) and return its own."""
        for listener in self.listeners:
            if listener.slot != slot:
                listener.close()
        return [self.listeners[slot]]

    def close(self) -> None:
        for listener in self.listeners:
            listener.close()
