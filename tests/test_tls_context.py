"""The serving certificate is reloaded from its files, and a half-written pair is waited
out with the last good one instead of failing new connections."""

from __future__ import annotations

from pathlib import Path

import pytest

from certs.pki import generate_ca, generate_serving, write_pair
from webhook import tls
from webhook.tls import ReloadingContext


def test_a_key_without_its_certificate_keeps_the_previous_pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tls, "CHECK_INTERVAL_SECONDS", 0.0)
    ca = generate_ca()
    first = write_pair(tmp_path / "a", ca, generate_serving(ca, ["localhost"], []))
    second = write_pair(tmp_path / "b", ca, generate_serving(ca, ["localhost"], []))
    expiries: list[float] = []
    context = ReloadingContext(first.cert, first.key, expiries.append)
    served = context.context()
    (tmp_path / "b" / "tls.key").replace(first.key)  # the new key, the old certificate
    assert context.context() is served  # not an error: the old pair still serves
    (tmp_path / "b" / "tls.crt").replace(first.cert)
    assert context.context() is not served  # the whole new pair, on the next look
    assert len(expiries) == 2
    assert second.cert.exists() is False  # moved into place


def test_without_a_previous_pair_a_broken_one_is_an_error(tmp_path: Path) -> None:
    ca = generate_ca()
    paths = write_pair(tmp_path, ca, generate_serving(ca, ["localhost"], []))
    paths.key.write_text("not a key")
    with pytest.raises(Exception, match=r"PEM|SSL|key"):
        ReloadingContext(paths.cert, paths.key).context()
