"""The Flask application: routes, request checks and error handlers; no policy logic.

Every path out of a review route is a well-formed answer: malformed requests get HTTP 400
with a message, and an unexpected error still returns an AdmissionReview that admits the
pod unchanged (fail open, the same choice as the webhooks' ``failurePolicy: Ignore``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from policies.model import Policy
from webhook import admission
from webhook.admission import Outcome
from webhook.policy_store import PolicyStore
from webhook.review import (
    AdmissionResponse,
    BadReview,
    Review,
    allow,
    parse_review,
    response_body,
)

log = logging.getLogger("spotguard.review")

#: Largest review body accepted. The API server caps an object near 3 MiB and an UPDATE
#: review carries two of them, so 8 MiB admits every real review and bounds memory.
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024

Handler = Callable[[Review, Policy], tuple[AdmissionResponse, Outcome]]


@dataclass(frozen=True)
class WebhookSettings:
    store: PolicyStore
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES


def _json(body: object, status: int = 200) -> tuple[Response, int]:
    """Compact JSON without Flask's key sorting: responses carry large patches."""
    return Response(json.dumps(body, separators=(",", ":")), mimetype="application/json"), status


def _error(status: int, message: str) -> tuple[Response, int]:
    return _json({"error": message, "status": status}, status)


def create_app(settings: WebhookSettings) -> Flask:
    """Build the app around a policy store (the factory pattern: tests build their own)."""
    app = Flask("spotguard")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    store = settings.store

    def review_route(name: str, handler: Handler) -> Callable[[], tuple[Response, int]]:
        def route() -> tuple[Response, int]:
            started = time.perf_counter()
            if request.mimetype != "application/json":
                return _error(
                    400,
                    f"Content-Type must be application/json, got {request.mimetype or 'none'!r}",
                )
            try:
                review = parse_review(request.get_data(cache=False))
            except BadReview as error:
                return _error(400, f"malformed AdmissionReview: {error}")
            policy = store.current
            try:
                response, outcome = handler(review, policy)
            except Exception:
                log.exception(
                    "review failed, admitting unchanged",
                    extra={"fields": {"uid": review.uid, "webhook": name}},
                )
                response = allow(
                    warnings=[f"spotguard internal error: pod admitted unchanged by {name}"]
                )
                outcome = Outcome(name, "error", str(policy.mode))
            _log_review(review, outcome, policy, started)
            return _json(response_body(review, review.api_version, response))

        route.__name__ = f"review_{name}"
        return route

    app.add_url_rule(
        "/mutate", view_func=review_route("mutate", admission.mutate), methods=["POST"]
    )
    app.add_url_rule(
        "/validate", view_func=review_route("validate", admission.validate), methods=["POST"]
    )

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        return _json({"status": "ok"})

    @app.get("/readyz")
    def readyz() -> tuple[Response, int]:
        error = store.last_error
        return _json(
            {
                "status": "ready",
                "policyRevision": store.current.revision,
                "policySource": store.source,
                "policyStale": error is not None,
                "policyError": list(error.problems) if error else None,
            }
        )

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_: RequestEntityTooLarge) -> tuple[Response, int]:
        return _error(400, f"request body exceeds the {settings.max_body_bytes}-byte limit")

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int]:
        return _error(error.code or 500, error.description or error.name)

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> tuple[Response, int]:
        log.exception("unexpected error outside a review")
        return _error(500, "internal error")

    return app


def _log_review(review: Review, outcome: Outcome, policy: Policy, started: float) -> None:
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
                "pod": (review.pod.get("metadata") or {}).get("name")
                or (review.pod.get("metadata") or {}).get("generateName"),
                "dryRun": review.dry_run,
                "result": outcome.result,
                "mode": outcome.mode,
                "rule": outcome.rule,
                "changes": [c.detail for c in outcome.changes],
                "violations": list(outcome.violations),
                "policyRevision": policy.revision,
                "durationMs": round((time.perf_counter() - started) * 1000, 3),
            }
        },
    )
