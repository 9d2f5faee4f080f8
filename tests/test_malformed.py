"""Every malformed request is answered 400 with a message: never a 500, never a traceback."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient

from testsupport.reviews import review, training_pod


def with_request(**changes: Any) -> bytes:
    body = review(training_pod())
    for key, value in changes.items():
        if value is ...:
            del body["request"][key]
        else:
            body["request"][key] = value
    return json.dumps(body).encode()


def with_top(**changes: Any) -> bytes:
    body = review(training_pod())
    body.update(changes)
    return json.dumps(body).encode()


def without_namespace() -> bytes:
    body = review(training_pod())
    del body["request"]["namespace"]
    del body["request"]["object"]["metadata"]["namespace"]
    return json.dumps(body).encode()


def nested(levels: int) -> bytes:
    """A review whose pod has a field nested ``levels`` deep (built as text: no recursion)."""
    body = json.dumps(review(training_pod()))
    deep = '{"a":' * levels + "1" + "}" * levels
    return body.replace('"spec": {', f'"status": {deep}, "spec": {{', 1).encode()


def pod_with(**spec: Any) -> bytes:
    pod = training_pod()
    pod["spec"].update(spec)
    return json.dumps(review(pod)).encode()


JSON = "application/json"
CASES: list[tuple[str, bytes, str, str]] = [
    ("invalid JSON", b'{"apiVersion": ', JSON, "not valid JSON"),
    ("not UTF-8", b"\xff\xfe\x00", JSON, "not valid JSON"),
    ("JSON but not an object", b"[1, 2]", JSON, "must be a JSON object"),
    ("empty body", b"", JSON, "not valid JSON"),
    ("wrong Content-Type", with_request(), "text/plain", "Content-Type must be application/json"),
    ("no Content-Type", with_request(), "", "Content-Type must be application/json"),
    ("wrong apiVersion", with_top(apiVersion="admission.k8s.io/v2"), JSON, "apiVersion must be"),
    ("wrong kind", with_top(kind="TokenReview"), JSON, "kind must be AdmissionReview"),
    ("missing request", with_top(request=None), JSON, "request: missing"),
    ("missing uid", with_request(uid=...), JSON, "request.uid: missing"),
    ("empty uid", with_request(uid=""), JSON, "request.uid: missing"),
    ("bad operation", with_request(operation="PATCH"), JSON, "request.operation: must be"),
    ("missing object", with_request(object=None), JSON, "request.object: missing"),
    ("object not a mapping", with_request(object="pod"), JSON, "request.object: must be an object"),
    (
        "CONNECT's object not a mapping",
        with_request(operation="CONNECT", object=["exec"]),
        JSON,
        "request.object: must be an object",
    ),
    (
        "CONNECT's object not a mapping, no namespace",
        with_request(operation="CONNECT", object="exec", namespace=...),
        JSON,
        "request.object: must be an object",
    ),
    (
        "a kind spotguard does not review",
        with_request(
            kind={"group": "", "version": "v1", "kind": "Service"},
            object={"kind": "Service", "metadata": {"name": "web"}},
        ),
        JSON,
        "spotguard does not review v1 Service",
    ),
    ("request.kind not a GVK", with_request(kind="Pod"), JSON, "request.kind: must be an object"),
    (
        "workload template not shaped like a pod",
        with_request(
            kind={"group": "apps", "version": "v1", "kind": "Deployment"},
            object={
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "spec": {"template": {"spec": {"containers": "x"}}},
            },
        ),
        JSON,
        "request.object.spec.template.spec.containers: must be a list",
    ),
    (
        "not a Pod (object.kind)",
        with_request(object={"kind": "Service", "metadata": {"name": "x"}}),
        JSON,
        "request.object.kind: must be Pod",
    ),
    ("UPDATE without oldObject", with_request(operation="UPDATE"), JSON, "request.oldObject"),
    ("no namespace anywhere", without_namespace(), JSON, "request.namespace: missing"),
    ("spec not a mapping", with_request(object={"kind": "Pod", "spec": []}), JSON, "object.spec"),
    (
        "spec null",
        with_request(object={"kind": "Pod", "metadata": {}, "spec": None}),
        JSON,
        "request.object.spec: must be a mapping, not null",
    ),
    (
        "metadata null",
        with_request(object={"kind": "Pod", "metadata": None, "spec": {}}),
        JSON,
        "request.object.metadata: must be a mapping, not null",
    ),
    (
        "userInfo not a mapping",
        with_request(userInfo=["alice"]),
        JSON,
        "request.userInfo: must be a mapping",
    ),
    (
        "groups not a list",
        with_request(userInfo={"username": "system:node:n1", "groups": "system:nodes"}),
        JSON,
        "request.userInfo.groups: must be a list",
    ),
    ("subResource not a string", with_request(subResource=["binding"]), JSON, "subResource"),
    ("nested past the domain's bound", nested(200), JSON, "nested deeper than 100 levels"),
    ("nested past the parser's bound", nested(5000), JSON, "not valid JSON"),
    ("nested absurdly", nested(40_000), JSON, "not valid JSON"),
    ("containers not a list", pod_with(containers={"a": 1}), JSON, "spec.containers: must be"),
    ("toleration not a mapping", pod_with(tolerations=["spot"]), JSON, "spec.tolerations[0]"),
    (
        "grace not an integer",
        pod_with(terminationGracePeriodSeconds="30"),
        JSON,
        "must be an integer",
    ),
    (
        "body over the limit",
        b"{" + b" " * (300 * 1024) + b"}",
        JSON,
        "exceeds the 262144-byte limit",
    ),
]


@pytest.mark.parametrize("path", ["/mutate", "/validate"])
@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_malformed_review_is_a_400_with_a_message(
    client: FlaskClient, path: str, body: bytes, content_type: str, expected: str
) -> None:
    reply = client.post(
        path, data=body, headers={"Content-Type": content_type} if content_type else {}
    )
    assert reply.status_code == 400, reply.get_data(as_text=True)
    payload = reply.get_json()
    assert expected in payload["error"], payload
    assert "Traceback" not in reply.get_data(as_text=True)


def test_wrong_method_is_a_clean_json_error(client: FlaskClient) -> None:
    reply = client.get("/mutate")
    assert reply.status_code == 405
    assert reply.get_json()["status"] == 405
