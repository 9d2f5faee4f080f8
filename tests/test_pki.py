"""Certificates: chains verify, validity is timezone-aware and sane, names are right."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from certs.pki import generate_ca, generate_serving, service_dns_names


def test_serving_certificate_verifies_against_its_ca_for_every_name() -> None:
    ca = generate_ca()
    names = service_dns_names("spotguard", "spotguard-system")
    serving = generate_serving(ca, [*names, "localhost"], ["127.0.0.1"])
    verifier = (
        PolicyBuilder()
        .store(Store([ca.certificate]))
        .build_server_verifier(x509.DNSName("spotguard.spotguard-system.svc"))
    )
    chain = verifier.verify(serving.certificate, [])
    assert chain[-1] == ca.certificate


def test_validity_is_timezone_aware_and_starts_slightly_in_the_past() -> None:
    ca = generate_ca()
    serving = generate_serving(ca, ["localhost"], [], validity=timedelta(days=30))
    now = datetime.now(UTC)
    cert = serving.certificate
    assert cert.not_valid_before_utc.tzinfo is not None
    assert now - timedelta(minutes=10) < cert.not_valid_before_utc < now
    assert timedelta(days=29) < cert.not_valid_after_utc - now <= timedelta(days=30)


def test_serving_certificate_never_outlives_its_ca() -> None:
    ca = generate_ca(validity=timedelta(days=10))
    serving = generate_serving(ca, ["localhost"], [], validity=timedelta(days=365))
    assert serving.certificate.not_valid_after_utc <= ca.certificate.not_valid_after_utc
