"""The review endpoints the event-loop worker calls without Flask answer exactly as the
Flask routes do, and the worker sends reviews to them (everything else to Flask)."""

from __future__ import annotations

import json
import logging
from typing import Any, cast

import pytest
from flask import Flask

from testsupport.reviews import configmap_review, plain_pod, review, training_pod
from webhook.app import ReviewEndpoint, WebhookSettings, create_app, direct_endpoints
from webhook.http_messages import Request
from webhook.policy_store import PolicyState, PolicyStore
from webhook.worker import EventLoopWorker

LIMIT = 64 * 1024
JSON = "application/json"


def _app(store: PolicyStore) -> Flask:
    return create_app(WebhookSettings(policies=store, max_body_bytes=LIMIT))


def _body(document: Any) -> bytes:
    return json.dumps(document).encode()


#: (path, Content-Type header, body): every way out of a review endpoint.
CASES: list[tuple[str, str | None, bytes]] = [
    ("/mutate", JSON, _body(review(training_pod()))),
    ("/mutate", JSON, _body(review(plain_pod()))),
    ("/validate", JSON, _body(review(plain_pod(tolerate_spot=True)))),
    ("/validate", "Application/JSON; charset=utf-8", _body(review(plain_pod()))),
    ("/validate", "text/plain", _body(review(plain_pod()))),
    ("/validate", None, _body(review(plain_pod()))),
    ("/mutate", JSON, b"{not json"),
    ("/mutate", JSON, b'{"kind": "AdmissionReview"}'),
    ("/mutate", JSON, _body(review(training_pod())) + b" " * LIMIT),
    ("/validate-policy", JSON, _body(configmap_review({"spotguard.yaml": "mode: audit\n"}))),
    ("/validate-policy", JSON, _body(configmap_review({"spotguard.yaml": "mode: [\n"}))),
]


@pytest.mark.parametrize(("path", "content_type", "body"), CASES)
@pytest.mark.parametrize("loaded", [True, False], ids=["policy", "no-policy"])
def test_a_direct_endpoint_answers_as_the_flask_route(
    path: str, content_type: str | None, body: bytes, loaded: bool
) -> None:
    store = PolicyStore.from_file(None) if loaded else PolicyStore(PolicyState(None, "none"))
    app = _app(store)
    headers = {"Content-Type": content_type} if content_type is not None else {}
    routed = app.test_client().post(path, data=body, headers=headers)
    direct = direct_endpoints(app)[path.encode()](content_type, body)
    assert (direct.status, direct.body) == (routed.status_code, routed.get_data())
    assert routed.mimetype == JSON


def test_every_post_route_of_the_app_has_a_direct_endpoint() -> None:
    app = _app(PolicyStore.from_file(None))
    posted = {
        rule.rule.encode() for rule in app.url_map.iter_rules() if "POST" in (rule.methods or ())
    }
    assert set(direct_endpoints(app)) == posted == {b"/mutate", b"/validate", b"/validate-policy"}
    assert direct_endpoints(object()) == {}


class _Worker:
    """What EventLoopWorker.respond uses of its worker."""

    def __init__(self, app: Flask, endpoints: dict[bytes, ReviewEndpoint]) -> None:
        self.nr = 0
        self.log = logging.getLogger("test")
        self._address = ("127.0.0.1", 8443)
        self._endpoints = endpoints
        self.wsgi = app
        self._call_endpoint = lambda *a: EventLoopWorker._call_endpoint(cast(Any, self), *a)


def _request(method: bytes, target: bytes, body: bytes = b"") -> Request:
    headers = [(b"Host", b"spotguard"), (b"Content-Type", b"application/json")]
    return Request(method, target, headers, body, keep_alive=True, http_version="1.1")


def test_the_worker_sends_reviews_to_their_endpoint_and_the_rest_to_flask() -> None:
    app = _app(PolicyStore.from_file(None))
    called: list[bytes] = []

    def counting(path: bytes) -> ReviewEndpoint:
        endpoint = direct_endpoints(app)[path]

        def count(content_type: str | None, body: bytes) -> Any:
            called.append(path)
            return endpoint(content_type, body)

        return count

    worker = _Worker(app, {path: counting(path) for path in direct_endpoints(app)})
    respond = EventLoopWorker.respond
    peer = ("127.0.0.1", 40000)
    body = _body(review(plain_pod(tolerate_spot=True)))
    # The API server appends ?timeout=...s to the path it calls.
    timed = _request(b"POST", b"/validate?timeout=5s", body)
    answer = respond(cast(Any, worker), timed, peer, False)
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Type: application/json" in head
    assert json.loads(payload)["response"]["allowed"] is False
    assert called == [b"/validate"]
    # Another method, or a path spelled otherwise, is Flask's: the same answers as before.
    not_allowed = respond(cast(Any, worker), _request(b"GET", b"/validate"), peer, True)
    assert not_allowed.startswith(b"HTTP/1.1 405 ")
    assert b"Connection: close" in not_allowed
    encoded = respond(cast(Any, worker), _request(b"POST", b"/v%61lidate", body), peer, False)
    assert encoded.startswith(b"HTTP/1.1 200 OK\r\n")
    assert called == [b"/validate"]
    assert worker.nr == 3


def test_an_endpoint_that_raises_is_a_500_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    app = _app(PolicyStore.from_file(None))

    def broken(content_type: str | None, body: bytes) -> Any:
        raise RuntimeError("bug")

    worker = _Worker(app, {b"/mutate": broken})
    answer = EventLoopWorker.respond(
        cast(Any, worker), _request(b"POST", b"/mutate", b"{}"), ("127.0.0.1", 1), False
    )
    assert answer.startswith(b"HTTP/1.1 500 ")
    error = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert error == {"error": "internal error", "status": 500}
    assert "error serving POST" in caplog.text
