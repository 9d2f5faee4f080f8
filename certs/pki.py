"""A small PKI for the webhook: a CA the API server trusts and a serving certificate.

ECDSA P-256 keys keep TLS handshakes cheap. Validity uses timezone-aware UTC datetimes and
starts a few minutes in the past, so clocks slightly behind the signer still accept it.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = timedelta(days=3650)
SERVING_VALIDITY = timedelta(days=365)
CLOCK_SKEW = timedelta(minutes=5)

#: File names as in a kubernetes.io/tls Secret, so a mounted Secret works unchanged.
#: The certificate files' names, and the keys of the Secret that holds them (a mounted
#: Secret's keys are its file names): the one definition for the CLI, the server, the
#: Secret's lifecycle and the tools that copy it.
CA_CERT_FILE, CA_KEY_FILE = "ca.crt", "ca.key"
SERVING_CERT_FILE, SERVING_KEY_FILE = "tls.crt", "tls.key"
#: Every CA the clients should trust during a CA rotation (the Secret's extra key).
CA_BUNDLE_FILE = "ca-bundle.crt"


@dataclass(frozen=True)
class CertifiedKey:
    """A certificate and its private key, both PEM-encoded."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    def private_key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key


def service_dns_names(service: str, namespace: str) -> list[str]:
    """The names the API server may use to reach a webhook Service."""
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def generate_ca(
    common_name: str = "spotguard-ca", validity: timedelta = CA_VALIDITY
) -> CertifiedKey:
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertifiedKey(certificate.public_bytes(serialization.Encoding.PEM), _pem(key))


def generate_serving(
    ca: CertifiedKey,
    dns_names: list[str],
    ip_addresses: list[str],
    validity: timedelta = SERVING_VALIDITY,
) -> CertifiedKey:
    """A server certificate for ``dns_names`` and ``ip_addresses``, signed by ``ca``."""
    key = _new_key()
    ca_cert = ca.certificate
    now = datetime.now(UTC)
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + validity, ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.private_key().public_key()),
            critical=False,
        )
        .sign(ca.private_key(), hashes.SHA256())
    )
    return CertifiedKey(certificate.public_bytes(serialization.Encoding.PEM), _pem(key))


@dataclass(frozen=True)
class CertPaths:
    ca_cert: Path
    cert: Path
    key: Path


def write_pair(directory: Path, ca: CertifiedKey, serving: CertifiedKey) -> CertPaths:
    """Write the CA certificate and key and the serving pair; private keys are mode 0600."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        CA_CERT_FILE: ca.cert_pem,
        CA_KEY_FILE: ca.key_pem,
        SERVING_CERT_FILE: serving.cert_pem,
        SERVING_KEY_FILE: serving.key_pem,
    }
    for name, data in files.items():
        path = directory / name
        path.write_bytes(data)
        os.chmod(path, 0o600 if name.endswith(".key") else 0o644)
    return pair_in(directory)


def pair_in(directory: Path) -> CertPaths:
    """The paths of the pair :func:`write_pair` writes to ``directory``."""
    return CertPaths(
        directory / CA_CERT_FILE, directory / SERVING_CERT_FILE, directory / SERVING_KEY_FILE
    )


def generate_pair(directory: Path, dns_names: list[str], ip_addresses: list[str]) -> CertPaths:
    """A new CA and serving certificate written to ``directory``."""
    ca = generate_ca()
    return write_pair(directory, ca, generate_serving(ca, dns_names, ip_addresses))
