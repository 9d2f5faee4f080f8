"""Certificate lifecycle: decide what to create, renew or rotate (pure, no cluster access).

The Secret holds the current CA (certificate and key), the serving pair, and the bundle of
CA certificates the API server must trust. Rotation never leaves a moment where the API
server distrusts the serving certificate:
- the serving certificate is renewed, signed by the current CA, well before it expires;
- a new CA joins the bundle next to the old one; the serving certificate is re-signed by
  the new CA; the old CA leaves the bundle only once it has expired. The caller publishes
  the bundle before the new serving certificate (see certs.kube), so the API server
  trusts the new CA before the webhook presents a certificate signed by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from certs.pki import (
    CA_BUNDLE_FILE,
    CA_CERT_FILE,
    CA_KEY_FILE,
    SERVING_CERT_FILE,
    SERVING_KEY_FILE,
    CertifiedKey,
    generate_ca,
    generate_serving,
)

RENEW_SERVING_BEFORE = timedelta(days=30)
RENEW_CA_BEFORE = timedelta(days=90)

#: Keys of the Secret (a kubernetes.io/tls Secret with three extra keys): the file names.
TLS_CERT, TLS_KEY = SERVING_CERT_FILE, SERVING_KEY_FILE
CA_CERT, CA_KEY, CA_BUNDLE = CA_CERT_FILE, CA_KEY_FILE, CA_BUNDLE_FILE


@dataclass(frozen=True)
class CertBundle:
    """Everything in the Secret."""

    ca: CertifiedKey
    serving: CertifiedKey
    trusted: tuple[bytes, ...]  # PEM CA certificates, newest first

    @property
    def bundle_pem(self) -> bytes:
        return b"".join(self.trusted)

    def to_secret_data(self) -> dict[str, bytes]:
        return {
            TLS_CERT: self.serving.cert_pem,
            TLS_KEY: self.serving.key_pem,
            CA_CERT: self.ca.cert_pem,
            CA_KEY: self.ca.key_pem,
            CA_BUNDLE: self.bundle_pem,
        }

    @classmethod
    def from_secret_data(cls, data: dict[str, bytes]) -> CertBundle | None:
        """Read a Secret's data; None when it lacks any of the keys (start afresh)."""
        if any(key not in data for key in (TLS_CERT, TLS_KEY, CA_CERT, CA_KEY)):
            return None
        trusted = split_pem(data.get(CA_BUNDLE, b"")) or (data[CA_CERT],)
        return cls(
            ca=CertifiedKey(data[CA_CERT], data[CA_KEY]),
            serving=CertifiedKey(data[TLS_CERT], data[TLS_KEY]),
            trusted=trusted,
        )


def split_pem(pem: bytes) -> tuple[bytes, ...]:
    marker = b"-----END CERTIFICATE-----"
    return tuple(
        part.strip() + b"\n" + marker + b"\n" for part in pem.split(marker) if part.strip()
    )


@dataclass(frozen=True)
class Wanted:
    """What the serving certificate must cover, and the renewal margins."""

    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    renew_serving_before: timedelta = RENEW_SERVING_BEFORE
    renew_ca_before: timedelta = RENEW_CA_BEFORE


def _expires(pem: bytes) -> datetime:
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc


def _names(certificate: x509.Certificate) -> tuple[set[str], set[str]]:
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    return set(sans.get_values_for_type(x509.DNSName)), {
        str(ip) for ip in sans.get_values_for_type(x509.IPAddress)
    }


def _signed_by(serving: CertifiedKey, ca: CertifiedKey) -> bool:
    try:
        serving.certificate.verify_directly_issued_by(ca.certificate)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def plan(
    current: CertBundle | None,
    wanted: Wanted,
    now: datetime | None = None,
    *,
    rotate_serving: bool = False,
    rotate_ca: bool = False,
) -> tuple[CertBundle, list[str]]:
    """The bundle to store, and what changed (empty when nothing needs doing)."""
    now = now or datetime.now(UTC)
    dns, ips = list(wanted.dns_names), list(wanted.ip_addresses)
    if current is None:
        ca = generate_ca()
        return CertBundle(ca, generate_serving(ca, dns, ips), (ca.cert_pem,)), [
            "created a CA and a serving certificate"
        ]
    actions: list[str] = []
    ca, serving = current.ca, current.serving
    trusted = [pem for pem in current.trusted if _expires(pem) > now]
    if len(trusted) < len(current.trusted):
        actions.append("dropped expired CA certificates from the bundle")
    if rotate_ca or _expires(ca.cert_pem) - now < wanted.renew_ca_before:
        ca = generate_ca()
        trusted.insert(0, ca.cert_pem)
        actions.append("rotated the CA (the previous CA stays trusted until it expires)")
    elif ca.cert_pem not in trusted:
        trusted.insert(0, ca.cert_pem)
    wanted_names = (set(dns), set(ips))
    if (
        rotate_serving
        or serving.certificate.not_valid_after_utc - now < wanted.renew_serving_before
        or _names(serving.certificate) != wanted_names
        or not _signed_by(serving, ca)
    ):
        serving = generate_serving(ca, dns, ips)
        actions.append("issued a new serving certificate")
    return CertBundle(ca, serving, tuple(trusted)), actions
