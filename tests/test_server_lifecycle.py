"""The real server's life: live policy file reload, certificate rotation, metrics, SIGTERM."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from cryptography import x509

from certs.pki import generate_ca, generate_serving, write_pair
from controlplane.loopback import free_port
from controlplane.polling import wait_for
from testsupport.procnet import children
from testsupport.reviews import plain_pod, review, training_pod
from testsupport.server import RunningServer, start_server

pytestmark = pytest.mark.processes

RELOAD_SECONDS = 3.0  # file poll (1 s) + worker check (0.25 s), with slack


def readyz(server: RunningServer) -> dict[str, object]:
    with server.session() as session:
        reply = session.get(server.url + "/readyz", timeout=5)
        body: dict[str, object] = reply.json()
        body["httpStatus"] = reply.status_code
        return body


def validate_allowed(server: RunningServer) -> bool:
    with server.session() as session:
        body = review(plain_pod(tolerate_spot=True))
        return bool(
            session.post(server.url + "/validate", json=body, timeout=5).json()["response"][
                "allowed"
            ]
        )


@pytest.fixture
def policy_server(tmp_path: Path) -> Iterator[tuple[RunningServer, Path]]:
    policy = tmp_path / "policy.yaml"
    policy.write_text("mode: enforce\n")
    server = start_server(tmp_path, "--policy", str(policy), workers=2)
    yield server, policy
    server.stop()


def test_policy_file_edits_apply_live_and_bad_revisions_are_refused(
    policy_server: tuple[RunningServer, Path],
) -> None:
    server, policy = policy_server
    first = readyz(server)["policyRevision"]
    assert validate_allowed(server) is False

    started = time.monotonic()
    policy.write_text("mode: audit\n")
    # Several workers: the change is in force once every answer has it.

    def edited() -> bool:
        # New connections land on either worker; twelve of them make missing one unlikely.
        revisions = server.revisions(asks=12)
        return first not in revisions and all(validate_allowed(server) for _ in range(6))

    wait_for(edited, RELOAD_SECONDS, "the edit in every worker", 0.05)
    print(f"policy change in force in every worker after {time.monotonic() - started:.2f} s")
    (second,) = server.revisions(asks=12)
    assert second != first

    policy.write_text("mode: loud\n")
    refused = {
        "policyRevision": second,  # the last good policy stays in force
        "policyStale": True,
        "policyError": ["mode: must be one of enforce, audit, off"],
        "httpStatus": 200,
    }

    def every_worker_refused() -> bool:  # two workers: ask until both have answered so
        return all({k: readyz(server).get(k) for k in refused} == refused for _ in range(6))

    wait_for(every_worker_refused, RELOAD_SECONDS, "every worker refusing", 0.05)
    assert all(validate_allowed(server) for _ in range(6))  # still the audit-mode policy
    assert "policy_refused" in server.log_file.read_text()


def test_rotated_certificate_is_served_without_restart(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        port = server.port

        def serial_seen(ca_file: Path) -> int:
            context = ssl.create_default_context(cafile=str(ca_file))
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                context.wrap_socket(raw, server_hostname="localhost") as tls,
            ):
                der = tls.getpeercert(binary_form=True)
            assert der is not None
            return int(x509.load_der_x509_certificate(der).serial_number)

        before = serial_seen(server.ca_file)
        # Rotate to a new CA and certificate, as `spotguard certs` will in a Secret.
        new_ca = generate_ca()
        new_dir = tmp_path / "rotated"
        paths = write_pair(new_dir, new_ca, generate_serving(new_ca, ["localhost"], ["127.0.0.1"]))
        for name in ("tls.key", "tls.crt"):
            (new_dir / name).replace(server.certs.cert.parent / name)
        wait_for(
            lambda: _serial_or_none(serial_seen, paths.ca_cert) not in (None, before),
            5,
            "the rotated certificate served",
            0.05,
        )
    finally:
        server.stop()


def _serial_or_none(probe: Callable[[Path], int], ca_file: Path) -> int | None:
    try:
        return probe(ca_file)
    except ssl.SSLError:
        return None


def test_metrics_count_reviews_across_workers(tmp_path: Path) -> None:
    metrics_port = free_port()
    server = start_server(tmp_path, "--metrics-bind", f"127.0.0.1:{metrics_port}", workers=2)
    try:
        with server.session() as session:
            for _ in range(10):
                session.post(server.url + "/mutate", json=review(training_pod()), timeout=5)
                session.post(
                    server.url + "/validate", json=review(plain_pod(tolerate_spot=True)), timeout=5
                )
        scrape = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    finally:
        server.stop()

    def value(line_start: str) -> float:
        lines = [line for line in scrape.splitlines() if line.startswith(line_start)]
        assert lines, f"no sample {line_start} in:\n{scrape}"
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines)

    assert (
        value(
            'spotguard_reviews_total{mode="enforce",operation="CREATE",result="patched",webhook="mutate"}'
        )
        == 10
    )
    assert (
        value(
            'spotguard_reviews_total{mode="enforce",operation="CREATE",result="denied",webhook="validate"}'
        )
        == 10
    )
    assert (
        value('spotguard_violations_total{mode="enforce",rule="spot-requires-fault-tolerance"}')
        == 10
    )
    # One per pod mutated, whatever the number of tolerations each got.
    assert value('spotguard_injections_total{kind="tolerations",mode="enforce"}') == 10
    assert value('spotguard_review_duration_seconds_count{webhook="mutate"}') == 10
    assert value("spotguard_certificate_expiry_timestamp_seconds") > time.time() + 300 * 86400


def test_sigterm_fails_readiness_first_and_finishes_reviews_in_flight(tmp_path: Path) -> None:
    server = start_server(tmp_path, workers=1, shutdown_delay=2)
    context = ssl.create_default_context(cafile=str(server.ca_file))
    connection = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=10)
    connection.request("GET", "/readyz")
    assert connection.getresponse().read() and True
    server.process.send_signal(signal.SIGTERM)
    # During the delay: still serving, but not ready.
    wait_for(lambda: _status(connection, "/readyz") == 503, 1.5, "readiness failing", 0.05)
    body = json.dumps(review(training_pod()))
    results: list[int] = []

    def late_review() -> None:
        connection.request(
            "POST", "/mutate", body=body, headers={"Content-Type": "application/json"}
        )
        results.append(connection.getresponse().status)

    worker = threading.Thread(target=late_review)
    worker.start()
    worker.join(5)
    assert results == [200]
    assert server.process.wait(timeout=30) == 0
    connection.close()


def _status(connection: http.client.HTTPSConnection, path: str) -> int:
    connection.request("GET", path)
    reply = connection.getresponse()
    reply.read()
    return reply.status


def test_without_runtime_or_cert_dir_the_throwaway_directories_go_with_the_server(
    tmp_path: Path,
) -> None:
    """``spotguard serve`` with neither --runtime-dir nor --cert-dir makes temporary
    directories; workers replaced on SIGHUP leave them alone, a clean stop removes them."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "webhook", "serve", "--bind", f"127.0.0.1:{port}",
         "--workers", "2"],
        env={**os.environ, "TMPDIR": str(temp)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:

        def made() -> list[Path]:
            kinds = sorted(p.name.split("-")[1] for p in temp.iterdir())
            return list(temp.glob("spotguard-certs-*/tls.crt")) if kinds == ["certs", "run"] else []

        certs = wait_for(made, 20, "the throwaway directories")[0].parent

        def healthy() -> bool:
            with requests.Session() as session:
                session.trust_env = False
                try:
                    reply = session.get(
                        f"https://127.0.0.1:{port}/healthz", verify=str(certs / "ca.crt"), timeout=2
                    )
                except requests.RequestException:
                    return False
                return reply.status_code == 200

        wait_for(healthy, 20, "the server answering", 0.1)
        workers = children(process.pid)
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: not set(children(process.pid)) & set(workers), 20, "new workers")
        wait_for(healthy, 20, "the new workers answering", 0.1)
        assert sorted(p.name.split("-")[1] for p in temp.iterdir()) == ["certs", "run"]
    finally:
        process.terminate()
        process.wait(timeout=40)
    assert list(temp.iterdir()) == []
