"""Which server process holds which TCP connection, read from /proc (Linux).

Tests and the benchmark use it to see how connections spread over the workers and to
find the worker that serves a given client connection, without asking the server.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

PROC = Path("/proc")


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (a gunicorn master's workers)."""
    found = []
    for stat in PROC.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # field 4: parent pid
            found.append(int(stat.parent.name))
    return sorted(found)


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in (PROC / str(pid) / "fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:
        pass
    return inodes


ESTABLISHED, LISTEN = "01", "0A"  # the st column of /proc/net/tcp


def _sockets(state: str, local_port: int) -> Iterator[tuple[int, int]]:
    """(remote port, inode) of each IPv4 and IPv6 TCP socket in ``state`` on ``local_port``."""
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == state and int(fields[1].rsplit(":", 1)[1], 16) == local_port:
                yield int(fields[2].rsplit(":", 1)[1], 16), int(fields[9])


def _established(server_port: int) -> dict[int, int]:
    """Inode of each established connection to ``server_port`` (server side), by the
    client's port."""
    return {port: inode for port, inode in _sockets(ESTABLISHED, server_port) if inode}


def owners(server_port: int, pids: list[int]) -> dict[int, int]:
    """Client port to the pid (among ``pids``) holding the server side of its connection."""
    inodes = {pid: _socket_inodes(pid) for pid in pids}
    result = {}
    for client_port, inode in _established(server_port).items():
        for pid, held in inodes.items():
            if inode in held:
                result[client_port] = pid
    return result


def spread(server_port: int, pids: list[int]) -> dict[int, int]:
    """Established connections per pid (0 for a pid holding none)."""
    counts = Counter(owners(server_port, pids).values())
    return {pid: counts.get(pid, 0) for pid in pids}


def listening(server_port: int, pids: list[int]) -> dict[int, set[int]]:
    """Inodes of the sockets listening on ``server_port`` that each pid holds."""
    inodes = {inode for _, inode in _sockets(LISTEN, server_port)}
    return {pid: _socket_inodes(pid) & inodes for pid in pids}
