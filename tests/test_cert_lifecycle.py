"""Certificate lifecycle decisions, with the clock moved instead of waiting for expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509

from certs.lifecycle import CertBundle, Wanted, plan, split_pem

WANTED = Wanted(dns_names=("spotguard.spotguard-system.svc",), ip_addresses=("127.0.0.1",))
NOW = datetime.now(UTC)


def signed_by(bundle: CertBundle, ca_pem: bytes) -> bool:
    issuer = x509.load_pem_x509_certificate(ca_pem)
    try:
        bundle.serving.certificate.verify_directly_issued_by(issuer)
    except Exception:  # noqa: BLE001 - any failure means "not signed by"
        return False
    return True


def test_first_run_creates_a_ca_and_a_serving_certificate() -> None:
    bundle, actions = plan(None, WANTED, NOW)
    assert actions == ["created a CA and a serving certificate"]
    assert bundle.trusted == (bundle.ca.cert_pem,)
    assert signed_by(bundle, bundle.ca.cert_pem)


def test_a_current_bundle_is_left_alone() -> None:
    bundle, _ = plan(None, WANTED, NOW)
    again, actions = plan(bundle, WANTED, NOW + timedelta(days=1))
    assert (again, actions) == (bundle, [])


def test_serving_certificate_is_renewed_before_it_expires_by_the_same_ca() -> None:
    bundle, _ = plan(None, WANTED, NOW)
    expiry = bundle.serving.certificate.not_valid_after_utc
    renewed, actions = plan(bundle, WANTED, expiry - timedelta(days=10))
    assert actions == ["issued a new serving certificate"]
    assert renewed.ca == bundle.ca and renewed.serving != bundle.serving
    assert signed_by(renewed, bundle.ca.cert_pem)


def test_ca_rotation_keeps_the_old_ca_trusted_until_it_expires() -> None:
    bundle, _ = plan(None, WANTED, NOW)
    ca_expiry = bundle.ca.certificate.not_valid_after_utc
    rotated, actions = plan(bundle, WANTED, NOW, rotate_ca=True)
    assert "rotated the CA (the previous CA stays trusted until it expires)" in actions
    assert rotated.trusted == (rotated.ca.cert_pem, bundle.ca.cert_pem)
    assert signed_by(rotated, rotated.ca.cert_pem)
    # Once the old CA has expired it leaves the bundle.
    later, actions = plan(rotated, WANTED, ca_expiry + timedelta(days=1))
    assert bundle.ca.cert_pem not in later.trusted
    assert "dropped expired CA certificates from the bundle" in actions


def test_ca_close_to_expiry_is_rotated_without_being_asked() -> None:
    bundle, _ = plan(None, WANTED, NOW)
    near = bundle.ca.certificate.not_valid_after_utc - timedelta(days=30)
    rotated, actions = plan(bundle, WANTED, near)
    assert any(a.startswith("rotated the CA") for a in actions)
    assert len(rotated.trusted) == 2


def test_changed_names_reissue_the_serving_certificate() -> None:
    bundle, _ = plan(None, WANTED, NOW)
    other = Wanted(dns_names=("spotguard.other.svc",), ip_addresses=())
    reissued, actions = plan(bundle, other, NOW)
    assert actions == ["issued a new serving certificate"]
    sans = reissued.serving.certificate.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value
    assert sans.get_values_for_type(x509.DNSName) == ["spotguard.other.svc"]


def test_secret_round_trip_and_pem_splitting() -> None:
    rotated, _ = plan(plan(None, WANTED, NOW)[0], WANTED, NOW, rotate_ca=True)
    assert CertBundle.from_secret_data(rotated.to_secret_data()) == rotated
    assert split_pem(rotated.bundle_pem) == rotated.trusted
    assert CertBundle.from_secret_data({"tls.crt": b"x"}) is None
