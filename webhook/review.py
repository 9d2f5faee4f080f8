"""The AdmissionReview wire format: parsing requests and building responses.

Two kinds of failure are kept apart, as the API server treats them differently: a request
that is malformed (:class:`BadReview`, answered HTTP 400 with a message) and a pod the
policy rejects (a well-formed review answered ``allowed: false``).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, TypedDict, cast

import orjson

from policies.pods import JSONObject

SUPPORTED_API_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
OPERATIONS = frozenset({"CREATE", "UPDATE", "DELETE", "CONNECT"})


class BadReview(ValueError):
    """The request is not a usable AdmissionReview; the message says why (HTTP 400)."""


class GroupVersionKind(TypedDict):
    group: str
    version: str
    kind: str


class AdmissionRequest(TypedDict, total=False):
    """The fields of ``request`` spotguard reads, in the API's own camelCase."""

    uid: str
    kind: GroupVersionKind
    subResource: str
    name: str
    namespace: str
    operation: str
    object: JSONObject | None
    oldObject: JSONObject | None
    userInfo: dict[str, Any]
    dryRun: bool


class StatusResult(TypedDict, total=False):
    code: int
    reason: str
    message: str


class AdmissionResponse(TypedDict, total=False):
    uid: str
    allowed: bool
    patch: str
    patchType: str
    warnings: list[str]
    auditAnnotations: dict[str, str]
    status: StatusResult


@dataclass(frozen=True)
class Review:
    """A parsed AdmissionReview whose envelope is checked; what it is about is the domain's
    to check (:func:`policies.review.review` raises ``Malformed``)."""

    api_version: str
    request: AdmissionRequest

    @property
    def uid(self) -> str:
        return self.request["uid"]

    @property
    def operation(self) -> str:
        return self.request["operation"]

    @property
    def namespace(self) -> str:
        return self.request["namespace"]

    @property
    def gvk(self) -> tuple[str, str, str]:
        """The (group, version, kind) of what is reviewed, as the API server names it."""
        kind = self.request["kind"]
        return kind["group"], kind["version"], kind["kind"]

    @property
    def sub_resource(self) -> str:
        return self.request.get("subResource") or ""

    @property
    def name(self) -> str:
        return self.request.get("name") or ""

    @property
    def object(self) -> JSONObject:
        """The object under review: the new one, or the old one for DELETE."""
        return self.request.get("object") or self.request.get("oldObject") or {}

    @property
    def old_object(self) -> JSONObject | None:
        return self.request.get("oldObject")

    @property
    def user_info(self) -> Any:
        return self.request.get("userInfo")

    @property
    def dry_run(self) -> bool:
        return bool(self.request.get("dryRun"))


def parse_review(body: bytes) -> Review:
    """Decode and check a review body; raise BadReview naming the first problem found.

    orjson decodes without Python recursion and refuses nesting deeper than 1024 levels,
    so no body reaches Python's recursion limit here (the domain bounds nesting further).
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise BadReview(f"body is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise BadReview("body must be a JSON object (an AdmissionReview)")
    api_version = document.get("apiVersion")
    if api_version not in SUPPORTED_API_VERSIONS:
        raise BadReview(
            f"apiVersion must be one of {', '.join(SUPPORTED_API_VERSIONS)}, got {api_version!r}"
        )
    if document.get("kind") != "AdmissionReview":
        raise BadReview(f"kind must be AdmissionReview, got {document.get('kind')!r}")
    request = document.get("request")
    if not isinstance(request, dict):
        raise BadReview("request: missing, or not an object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadReview("request.uid: missing, or not a non-empty string")
    operation = request.get("operation")
    if operation not in OPERATIONS:
        raise BadReview(f"request.operation: must be one of {', '.join(sorted(OPERATIONS))}")
    kind = request.get("kind")
    if not isinstance(kind, dict) or not all(
        isinstance(kind.get(k), str) for k in ("group", "version", "kind")
    ):
        raise BadReview("request.kind: must be an object with group, version and kind")
    for field in ("subResource", "name"):
        if request.get(field) is not None and not isinstance(request[field], str):
            raise BadReview(f"request.{field}: must be a string")
    _check_objects(request, operation, kind["kind"])
    if not isinstance(request.get("namespace"), str) or not request["namespace"]:
        metadata = (request.get("object") or request.get("oldObject") or {}).get("metadata")
        namespace = metadata.get("namespace") if isinstance(metadata, dict) else None
        if not isinstance(namespace, str) or not namespace:
            raise BadReview("request.namespace: missing (Pods are namespaced)")
        request["namespace"] = namespace
    return Review(api_version=api_version, request=cast(AdmissionRequest, request))


def _check_objects(request: dict[str, Any], operation: str, kind: str) -> None:
    """Presence and type of object/oldObject; what is inside is checked per kind."""
    needed = {"CREATE": ("object",), "UPDATE": ("object", "oldObject"), "DELETE": ("oldObject",)}
    for field in needed.get(operation, ()):
        if request.get(field) is None:
            raise BadReview(f"request.{field}: missing, required for {operation}")
    sub_resource = request.get("subResource") or ""
    for field in ("object", "oldObject"):
        value = request.get(field)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise BadReview(f"request.{field}: must be an object")
        connect_options = operation == "CONNECT" and field == "object"  # e.g. PodExecOptions
        if not sub_resource and not connect_options and value.get("kind") not in (None, kind):
            raise BadReview(f"request.{field}.kind: must be {kind}, got {value.get('kind')!r}")


def response_body(
    review: Review | None, api_version: str, response: AdmissionResponse
) -> JSONObject:
    """Wrap a response in the AdmissionReview envelope of the version that was received."""
    if review is not None:
        response["uid"] = review.uid
    return {"apiVersion": api_version, "kind": "AdmissionReview", "response": dict(response)}


def allow(
    *, warnings: list[str] | None = None, audit: dict[str, str] | None = None
) -> AdmissionResponse:
    response: AdmissionResponse = {"allowed": True}
    if warnings:
        response["warnings"] = warnings
    if audit:
        response["auditAnnotations"] = audit
    return response


def patched(patch: list[JSONObject], *, warnings: list[str] | None = None) -> AdmissionResponse:
    """Allow with a JSON Patch (base64 of its JSON, as the API requires)."""
    response = allow(warnings=warnings)
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    return response


def denied(
    message: str, *, warnings: list[str] | None = None, audit: dict[str, str] | None = None
) -> AdmissionResponse:
    """Reject: HTTP 200 carrying ``allowed: false`` and a 403 status kubectl prints."""
    response: AdmissionResponse = {
        "allowed": False,
        "status": {"code": 403, "reason": "Forbidden", "message": message},
    }
    if warnings:
        response["warnings"] = warnings
    if audit:
        response["auditAnnotations"] = audit
    return response
