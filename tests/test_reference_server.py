"""The benchmark's reference server (benchmarks/refserver): it answers reviews as a webhook
would, and it really spends the work it is given, so its latency can stand beside
spotguard's in `make bench` as what this machine gives a server with the same budget."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from benchmarks.load import go_available
from benchmarks.measure import server_cpu_seconds
from benchmarks.reference import build_refserver, reference_server
from certs.pki import CertPaths, generate_pair
from testsupport.reviews import plain_pod, review
from testsupport.server import RunningServer

pytestmark = [
    pytest.mark.processes,
    pytest.mark.toolchain,
    pytest.mark.skipif(
        not go_available(), reason="needs Go to build the reference server (benchmarks/refserver)"
    ),
]

REQUESTS = 40
BUDGET_US = 3000


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertPaths:
    return generate_pair(tmp_path_factory.mktemp("certs"), ["localhost"], ["127.0.0.1"])


@pytest.fixture
def session(certs: CertPaths) -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False  # the environment's CA bundle must not replace ours
        session.verify = str(certs.ca_cert)
        yield session


def cpu_per_request_us(server: RunningServer, session: requests.Session) -> float:
    before = sum(server_cpu_seconds(server).values())
    for i in range(REQUESTS):
        body = review(plain_pod())
        body["request"]["uid"] = f"uid-{i}"
        answer = session.post(server.url + "/validate", json=body, timeout=10)
        assert answer.status_code == 200
        assert answer.json()["response"] == {"uid": f"uid-{i}", "allowed": True}
    return (sum(server_cpu_seconds(server).values()) - before) / REQUESTS * 1e6


@pytest.mark.parametrize("work", ["work_us", "cpu_us"])
def test_the_reference_answers_reviews_and_spends_its_budget(
    certs: CertPaths, session: requests.Session, tmp_path: Path, work: str
) -> None:
    with reference_server(build_refserver(), certs, tmp_path, **{work: BUDGET_US}) as server:
        spent = cpu_per_request_us(server, session)
    # The clock-bounded work cannot end early; the fixed work was timed on this machine at
    # start, so it may run faster or slower since, but not by half.
    assert spent >= BUDGET_US * (0.95 if work == "cpu_us" else 0.5), spent


def test_without_work_the_reference_costs_little(
    certs: CertPaths, session: requests.Session, tmp_path: Path
) -> None:
    with reference_server(build_refserver(), certs, tmp_path) as server:
        spent = cpu_per_request_us(server, session)
    assert spent < BUDGET_US / 2, spent


def test_a_body_that_is_not_a_review_is_refused(
    certs: CertPaths, session: requests.Session, tmp_path: Path
) -> None:
    with reference_server(build_refserver(), certs, tmp_path) as server:
        answer = session.post(server.url + "/validate", data=b"{not json", timeout=10)
        assert answer.status_code == 400
