"""The real server: gunicorn, TLS verified against the generated CA, keep-alive."""

from __future__ import annotations

import http.client
import json
import ssl
import warnings

import pytest
import requests

from testsupport.reviews import plain_pod, review, training_pod
from testsupport.server import RunningServer

pytestmark = pytest.mark.processes


def test_mutate_and_validate_over_verified_tls(tls_server: RunningServer) -> None:
    with tls_server.session() as session:
        body = review(training_pod())
        mutated = session.post(tls_server.url + "/mutate", json=body, timeout=5)
        assert mutated.status_code == 200
        assert mutated.json()["response"]["uid"] == body["request"]["uid"]
        assert mutated.json()["response"]["patchType"] == "JSONPatch"
        denied = session.post(
            tls_server.url + "/validate", json=review(plain_pod(tolerate_spot=True)), timeout=5
        )
        assert denied.json()["response"]["allowed"] is False


def test_malformed_request_is_a_400_over_tls(tls_server: RunningServer) -> None:
    with tls_server.session() as session:
        reply = session.post(
            tls_server.url + "/mutate",
            data=b"{not json",
            headers={"Content-Type": "application/json"},
            timeout=5,
        )
    assert reply.status_code == 400
    assert "not valid JSON" in reply.json()["error"]


def test_connection_is_kept_alive_across_reviews(tls_server: RunningServer) -> None:
    context = ssl.create_default_context(cafile=str(tls_server.ca_file))
    port = int(tls_server.url.rsplit(":", 1)[1])
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    try:
        sockets = set()
        for _ in range(5):
            connection.request(
                "POST",
                "/validate",
                body=json.dumps(review(plain_pod())),
                headers={"Content-Type": "application/json"},
            )
            reply = connection.getresponse()
            assert reply.status == 200
            assert reply.getheader("Connection", "").lower() != "close"
            reply.read()
            sockets.add(id(connection.sock))
        assert len(sockets) == 1  # one TLS handshake for five reviews
    finally:
        connection.close()


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["TLSv1.2", "TLSv1.3"]
)
def test_no_session_tickets_are_issued(tls_server: RunningServer, version: ssl.TLSVersion) -> None:
    """The API server never resumes a session (webhook.tls), so minting tickets would
    only cost CPU per handshake. A TLS 1.3 ticket arrives after the handshake: the
    client reads an answer first, by which time any ticket has been received."""
    context = ssl.create_default_context(cafile=str(tls_server.ca_file))
    context.minimum_version = context.maximum_version = version
    port = int(tls_server.url.rsplit(":", 1)[1])
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    try:
        connection.request("GET", "/healthz")
        assert connection.getresponse().read()
        assert isinstance(connection.sock, ssl.SSLSocket)
        assert connection.sock.version() == version.name.replace("_", ".")
        session = connection.sock.session
        assert session is not None
        assert not session.has_ticket
    finally:
        connection.close()


def test_an_untrusted_client_cannot_verify_the_server(tls_server: RunningServer) -> None:
    session = requests.Session()
    session.trust_env = False
    with pytest.raises(requests.exceptions.SSLError):
        session.get(tls_server.url + "/healthz", verify=True, timeout=5)


def test_tls_below_1_2_is_refused(tls_server: RunningServer) -> None:
    context = ssl.create_default_context(cafile=str(tls_server.ca_file))
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    port = int(tls_server.url.rsplit(":", 1)[1])
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    with pytest.raises(ssl.SSLError) as refused:
        connection.request("GET", "/healthz")
    connection.close()
    if refused.value.reason == "NO_PROTOCOLS_AVAILABLE":
        pytest.skip("this client's OpenSSL cannot offer TLS 1.1, so the server is not tested")
    assert refused.value.reason in {"TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL"}


def test_plain_http_is_not_served(tls_server: RunningServer) -> None:
    port = int(tls_server.url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/healthz")
        status = connection.getresponse().status
    except (ConnectionError, http.client.HTTPException):
        status = None
    finally:
        connection.close()
    assert status != 200
