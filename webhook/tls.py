"""The server's TLS context, rebuilt when the certificate files change.

The worker asks for an SSLContext for every new connection. Building one means reading
and parsing the key pair, so it is cached here and rebuilt only when ``tls.crt`` or
``tls.key`` changes on disk (a mounted Secret swaps both at once): a rotated certificate
is served to the next connection, with no restart. TLS below 1.2 is refused.

No session tickets are issued. The API server's webhook client keeps no TLS session
cache (client-go sets no ``ClientSessionCache``), so it never resumes a session; by
default OpenSSL would still mint and send two TLS 1.3 tickets after every handshake, on
the event loop, for nothing: without them a handshake takes 0.76-0.91x the server's CPU
time (the median of bench-webhook's paired rounds, in five runs).
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509

log = logging.getLogger("spotguard.tls")

#: How often the files are checked, at most (a stat each; connections are long-lived).
CHECK_INTERVAL_SECONDS = 1.0

ExpiryListener = Callable[[float], None]


class ReloadingContext:
    """Hands out an SSLContext for the current certificate files."""

    def __init__(
        self, cert_file: Path, key_file: Path, on_load: ExpiryListener | None = None
    ) -> None:
        self._cert = cert_file
        self._key = key_file
        self._on_load = on_load
        self._lock = threading.Lock()
        self._stamp: tuple[int, ...] | None = None
        self._context: ssl.SSLContext | None = None
        self._next_check = 0.0

    def _files_stamp(self) -> tuple[int, ...]:
        cert, key = self._cert.stat(), self._key.stat()
        return (
            cert.st_mtime_ns,
            cert.st_size,
            cert.st_ino,
            key.st_mtime_ns,
            key.st_size,
            key.st_ino,
        )

    def context(self) -> ssl.SSLContext:
        now = time.monotonic()
        if self._context is not None and now < self._next_check:
            return self._context
        with self._lock:
            self._next_check = now + CHECK_INTERVAL_SECONDS
            try:
                stamp = self._files_stamp()
                if self._context is None or stamp != self._stamp:
                    self._context = self._build()
                    self._stamp = stamp
            except (OSError, ssl.SSLError, ValueError) as error:
                if self._context is None:
                    raise  # nothing to serve with: the caller's problem
                # Caught between two file writes (a new key beside the old certificate,
                # say): keep serving the last good pair and look again next second.
                log.warning("cannot load %s and %s yet (%s); still serving the previous "
                            "certificate", self._cert, self._key, error)  # fmt: skip
            return self._context

    def _build(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.options |= ssl.OP_NO_TICKET  # TLS 1.2: no tickets (see the module doc)
        context.num_tickets = 0  # TLS 1.3: none sent after the handshake
        context.load_cert_chain(certfile=str(self._cert), keyfile=str(self._key))
        if self._on_load is not None:
            certificate = x509.load_pem_x509_certificate(self._cert.read_bytes())
            self._on_load(certificate.not_valid_after_utc.timestamp())
        return context
