"""List-then-watch with the kubernetes client, resumed on errors: one loop for every cache.

The API server ends watches by itself and forgets old resourceVersions (HTTP 410); the
loop relists then, and backs off (1 s doubling to 30 s) on any other error, so a cache
or a policy source never dies while the server runs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("spotguard.watch")

WATCH_TIMEOUT_SECONDS = 300
MAX_BACKOFF_SECONDS = 30.0

#: Called with the event type (ADDED, MODIFIED, DELETED) and the object; the initial
#: listing is replayed as ADDED events after ``on_relist``.
EventHandler = Callable[[str, Any], None]


def run_watch(
    describe: str,
    list_function: Callable[..., Any],
    on_event: EventHandler,
    stop: threading.Event,
    on_relist: Callable[[], None] = lambda: None,
    **list_arguments: Any,
) -> None:
    """List and watch until ``stop`` is set (run it in a daemon thread)."""
    from kubernetes import watch  # noqa: PLC0415 - only servers with cluster access
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    backoff = 1.0
    version: str | None = None
    while not stop.is_set():
        try:
            if version is None:
                listing = list_function(**list_arguments)
                on_relist()
                for item in listing.items:
                    on_event("ADDED", item)
                version = listing.metadata.resource_version
            stream = watch.Watch().stream(
                list_function,
                resource_version=version,
                timeout_seconds=WATCH_TIMEOUT_SECONDS,
                allow_watch_bookmarks=True,
                **list_arguments,
            )
            for event in stream:
                if stop.is_set():
                    return
                version = event["object"].metadata.resource_version
                if event["type"] != "BOOKMARK":
                    on_event(event["type"], event["object"])
            backoff = 1.0
        except ApiException as error:
            if error.status == 410:  # our resourceVersion is too old: list again
                version = None
                continue
            log.warning("watch of %s failed: %s %s", describe, error.status, error.reason)
            stop.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
        except Exception:
            log.warning("watch of %s interrupted; retrying", describe, exc_info=True)
            version = None
            stop.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
