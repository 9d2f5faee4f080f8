"""The benchmark's handshake figure: it measures real handshakes with both contexts."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from benchmarks.handshake import handshake_figures, server_cpu_per_handshake_us
from certs.pki import generate_pair
from webhook.tls import ReloadingContext


def test_both_contexts_are_measured_with_real_handshakes(tmp_path: Path) -> None:
    figures = handshake_figures(tmp_path, count=5, rounds=3)
    assert len(figures.rounds) == 3
    assert all(tickets > 0 and served > 0 for tickets, served in figures.rounds)
    assert figures.ratio_low <= figures.ratio <= figures.ratio_high
    assert figures.ratio_low == min(served / tickets for tickets, served in figures.rounds)


def test_a_client_that_cannot_verify_the_server_fails_the_measurement(tmp_path: Path) -> None:
    served = generate_pair(tmp_path / "served", ["localhost"], ["127.0.0.1"])
    stranger = generate_pair(tmp_path / "stranger", ["localhost"], ["127.0.0.1"])
    context = ReloadingContext(served.cert, served.key).context()
    with pytest.raises(ssl.SSLError):
        server_cpu_per_handshake_us(context, stranger.ca_cert, count=1)
