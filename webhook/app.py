"""The Flask application: routes, request checks and error handlers; no policy logic.

Every path out of a review route is a well-formed answer: malformed requests get HTTP 400
with a message, and an unexpected error still returns an AdmissionReview that admits the
pod unchanged (fail open, the same choice as the webhooks' ``failurePolicy: Ignore``).

The review routes are plain functions of (Content-Type, body) (:class:`ReviewEndpoint`):
Flask serves them like any route, and the event-loop worker calls them directly
(:func:`direct_endpoints`), because Flask's own handling of a request (its contexts,
routing, request and response objects) cost about as much CPU as the review itself.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import orjson
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.http import parse_options_header

from policies.model import Policy
from webhook.admission import Outcome, Result, Reviewer, validate_policy_configmap
from webhook.cluster import NO_CLUSTER, ClusterAccess
from webhook.metrics import Metrics
from webhook.policy_sources import DEFAULT_CONFIGMAP_KEY
from webhook.policy_store import PolicyView
from webhook.review import AdmissionResponse, BadReview, Review, allow, parse_review, response_body

log = logging.getLogger("spotguard.review")

#: Largest review body accepted. The API server caps an object near 3 MiB and an UPDATE
#: review carries two of them, so 8 MiB admits every real review and bounds memory.
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024


def body_limit_message(limit: int) -> str:
    """The size-limit error, the same whether the app or the connection reading the body
    (webhook.connection) finds the body too large."""
    return f"request body exceeds the {limit}-byte limit"


Handler = Callable[[Review, Policy], tuple[AdmissionResponse, Outcome]]


def _never() -> bool:
    return False


def _all_synced() -> tuple[str, ...]:
    return ()


@dataclass(frozen=True)
class WebhookSettings:
    policies: PolicyView
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    metrics: Metrics | None = None
    #: True once shutdown began: readiness fails so traffic drains before the server stops.
    draining: Callable[[], bool] = _never
    #: Node labels and Binding pods for the rules; nothing is known without cluster access.
    cluster: ClusterAccess = NO_CLUSTER
    #: Names of the cluster caches not synced yet; readiness fails while there are any.
    unsynced_caches: Callable[[], tuple[str, ...]] = _all_synced
    #: The ConfigMap key holding the policy (serve --policy-key): /validate-policy checks it.
    policy_key: str = DEFAULT_CONFIGMAP_KEY


def _encode(body: object) -> bytes:
    """Compact JSON without Flask's key sorting: responses carry large patches, and
    orjson encodes them in a fraction of the time ``json.dumps`` takes."""
    try:
        return orjson.dumps(body)
    except TypeError:  # something orjson refuses (a non-string key): json.dumps may not
        return json.dumps(body, separators=(",", ":")).encode()


def _json(body: object, status: int = 200) -> tuple[Response, int]:
    return Response(_encode(body), mimetype="application/json"), status


def _error(status: int, message: str) -> tuple[Response, int]:
    return _json({"error": message, "status": status}, status)


@dataclass(frozen=True)
class Reply:
    """A review endpoint's answer: an HTTP status and a JSON body."""

    status: int
    body: bytes


def _error_reply(status: int, message: str) -> Reply:
    return Reply(status, _encode({"error": message, "status": status}))


#: A review route without the framework: (the Content-Type header, the body) -> Reply.
ReviewEndpoint = Callable[[str | None, bytes], Reply]

#: The key under ``Flask.extensions`` of the review endpoints, by path (see module doc).
DIRECT_ENDPOINTS = "spotguard.review-endpoints"


def direct_endpoints(app: object) -> dict[bytes, ReviewEndpoint]:
    """The POST routes a server may call without Flask, by path; {} for another app."""
    extensions = getattr(app, "extensions", None)
    found = extensions.get(DIRECT_ENDPOINTS) if isinstance(extensions, dict) else None
    return dict(found) if isinstance(found, dict) else {}


def create_app(settings: WebhookSettings) -> Flask:
    """Build the app around a policy view (the factory pattern: tests build their own)."""
    app = Flask("spotguard")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    policies, metrics = settings.policies, settings.metrics
    reviewer = Reviewer(settings.cluster)

    def review_endpoint(name: str, handler: Handler) -> ReviewEndpoint:
        def endpoint(content_type: str | None, body: bytes) -> Reply:
            started = time.perf_counter()
            mimetype = parse_options_header(content_type or "")[0].lower()
            if mimetype != "application/json":
                got = mimetype or "none"
                return _error_reply(400, f"Content-Type must be application/json, got {got!r}")
            if len(body) > settings.max_body_bytes:
                return _error_reply(400, body_limit_message(settings.max_body_bytes))
            try:
                review = parse_review(body)
            except BadReview as error:
                return _error_reply(400, f"malformed AdmissionReview: {error}")
            policy = policies.snapshot().policy
            if policy is None:  # not ready: answer as the failurePolicy would
                response = allow(
                    warnings=["spotguard has no policy loaded yet: pod admitted unchanged"]
                )
                return Reply(200, _encode(response_body(review, review.api_version, response)))
            try:
                response, outcome = handler(review, policy)
            except BadReview as error:  # what is reviewed is malformed, or not reviewed
                return _error_reply(400, f"malformed AdmissionReview: {error}")
            except Exception:  # noqa: BLE001 - a bug: answered as failurePolicy Ignore would
                response, outcome = _internal_error(name, review, policy, metrics)
            elapsed = time.perf_counter() - started
            _log_review(review, outcome, policy, elapsed)
            if metrics is not None:
                _count(metrics, review, outcome, elapsed)
            return Reply(200, _encode(response_body(review, review.api_version, response)))

        return endpoint

    endpoints = {
        "/mutate": review_endpoint("mutate", reviewer.mutate),
        "/validate": review_endpoint("validate", reviewer.validate),
        "/validate-policy": review_endpoint(
            "validate-policy", partial(validate_policy_configmap, key=settings.policy_key)
        ),
    }
    for path, endpoint in endpoints.items():
        app.add_url_rule(path, view_func=_flask_route(path, endpoint), methods=["POST"])
    app.extensions[DIRECT_ENDPOINTS] = {path.encode(): ep for path, ep in endpoints.items()}

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        return _json({"status": "ok"})

    @app.get("/readyz")
    def readyz() -> tuple[Response, int]:
        state = policies.snapshot()
        draining = settings.draining()
        unsynced = settings.unsynced_caches()
        if draining:
            status = "draining"
        elif state.policy is None:
            status = "no policy loaded"
        elif unsynced:
            status = "cluster caches not synced yet: " + ", ".join(unsynced)
        else:
            status = "ready"
        body = {
            "status": status,
            "clusterCachesUnsynced": list(unsynced),
            "policyRevision": state.policy.revision if state.policy else None,
            "policySource": state.source,
            "policyStale": state.stale,
            "policyError": list(state.error.problems) if state.error else None,
            # Reported, never a reason to fail readiness: an unready webhook is skipped for
            # every review, a registration that misses some only skips those.
            "registrationCoversPolicy": None
            if state.registration is None
            else not state.registration,
            "registrationProblems": list(state.registration or ()),
        }
        return _json(body, 200 if status == "ready" else 503)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_: RequestEntityTooLarge) -> tuple[Response, int]:
        return _error(400, body_limit_message(settings.max_body_bytes))

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int]:
        return _error(error.code or 500, error.description or error.name)

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> tuple[Response, int]:
        log.exception("unexpected error outside a review")
        return _error(500, "internal error")

    return app


def _flask_route(path: str, endpoint: ReviewEndpoint) -> Callable[[], Response]:
    """The endpoint as a Flask view (a body over the limit stops at ``get_data``)."""

    def route() -> Response:
        reply = endpoint(request.headers.get("Content-Type"), request.get_data(cache=False))
        return Response(reply.body, status=reply.status, mimetype="application/json")

    route.__name__ = "review" + path.replace("/", "_").replace("-", "_")
    return route


def _internal_error(
    name: str, review: Review, policy: Policy, metrics: Metrics | None
) -> tuple[AdmissionResponse, Outcome]:
    """A bug: answer as failurePolicy Ignore would, but never silently (log with the review
    uid and the traceback, count it)."""
    log.exception(
        "review failed, admitting unchanged", extra={"fields": {"uid": review.uid, "webhook": name}}
    )
    if metrics is not None:
        metrics.internal_errors.labels(name).inc()
    response = allow(warnings=[f"spotguard internal error: pod admitted unchanged by {name}"])
    return response, Outcome(name, Result.ERROR, policy.mode)


def _count(metrics: Metrics, review: Review, outcome: Outcome, elapsed: float) -> None:
    mode = str(outcome.mode)
    metrics.reviews.labels(outcome.webhook, review.operation, outcome.result.value, mode).inc()
    metrics.latency.labels(outcome.webhook).observe(elapsed)
    metrics.count_changes(outcome.changes, mode)
    for rule, rule_mode in outcome.rule_modes:
        metrics.violations.labels(rule.value, str(rule_mode)).inc()


def _log_review(review: Review, outcome: Outcome, policy: Policy, elapsed: float) -> None:
    metadata = review.object.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    log.info(
        "%s %s",
        outcome.webhook,
        outcome.result,
        extra={
            "fields": {
                "event": "review",
                "uid": review.uid,
                "webhook": outcome.webhook,
                "operation": review.operation,
                "namespace": review.namespace,
                "kind": review.gvk[2],
                "name": metadata.get("name") or metadata.get("generateName"),
                "dryRun": review.dry_run,
                "result": outcome.result.value,
                "mode": str(outcome.mode),
                "rule": outcome.rule,
                "exemption": outcome.exemption or None,
                # Kinds, not details: the policy revision and the pod say the rest, and a
                # short line keeps logging cheap at thousands of reviews per second.
                "injected": sorted({c.kind for c in outcome.changes}),
                "violations": list(outcome.violations),
                "policyRevision": policy.revision,
                "durationMs": round(elapsed * 1000, 3),
            }
        },
    )
