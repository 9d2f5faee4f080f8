"""List-then-watch with the kubernetes client, resumed on errors: one loop for every cache.

- A listing replaces the target's whole content at once (``replace``); watch events then
  update it one object at a time (``apply``). A cache is never emptied to be refilled.
- The watch asks for bookmarks: the API server then sends the newest resourceVersion
  even when nothing changes, so a watch resumed after its timeout starts from a version
  the server still remembers. A bookmark's object is only ``{kind, apiVersion,
  metadata: {resourceVersion}}``; the kubernetes client's ``Watch`` hands it over as a
  plain dict where other events carry a model (and, with ``deserialize=False``, fails on
  error events itself), so the event lines are parsed here, as plain JSON.
- Only ``410 Gone`` (the server no longer remembers our resourceVersion) leads to a
  relist. A watch that ends (its timeout), breaks or fails otherwise is resumed from the
  last resourceVersion seen, after a backoff (1 s doubling to 30 s) if it failed.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger("spotguard.watch")

WATCH_TIMEOUT_SECONDS = 300
MAX_BACKOFF_SECONDS = 30.0
#: Seconds to wait for a connection to the API server.
CONNECT_TIMEOUT_SECONDS = 5.0
#: Silence on a watch longer than its timeout plus this means the connection is dead.
READ_SLACK_SECONDS = 15.0

JSON = dict[str, Any]


class WatchTarget(Protocol):
    def replace(self, items: list[JSON]) -> None:
        """A full listing: the target's new content, in place of the old at once."""

    def apply(self, kind: str, obj: JSON) -> None:
        """One change: ``kind`` is ADDED, MODIFIED or DELETED."""


@dataclass
class WatchStats:
    """What a watch loop did, for logs, metrics and tests."""

    relists: int = 0
    bookmarks: int = 0
    events: int = 0
    resumes: int = 0
    failures: int = 0


@dataclass
class _Cursor:
    """The newest resourceVersion seen; None: list first. Kept outside the watch
    request, so that a watch broken halfway resumes from where it got to."""

    version: str | None = None


class _Gone(Exception):
    """410 Gone: the API server no longer remembers our resourceVersion."""


def run_watch(
    describe: str,
    list_function: Callable[..., Any],
    target: WatchTarget,
    stop: threading.Event,
    *,
    stats: WatchStats | None = None,
    timeout_seconds: int = WATCH_TIMEOUT_SECONDS,
    on_relist: Callable[[], None] = lambda: None,
    **list_arguments: Any,
) -> None:
    """List and watch until ``stop`` is set (run it in a daemon thread)."""
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    stats = stats if stats is not None else WatchStats()
    backoff = 1.0
    cursor = _Cursor()
    while not stop.is_set():
        try:
            if cursor.version is None:
                cursor.version = _list(list_function, target, list_arguments)
                stats.relists += 1
                on_relist()
                log.info(
                    "listed %s at resourceVersion %s",
                    describe,
                    cursor.version,
                    extra={"fields": {"event": "cache_listed", "cache": describe}},
                )
            _follow(
                list_function,
                target,
                cursor=cursor,
                stop=stop,
                stats=stats,
                timeout_seconds=timeout_seconds,
                arguments=list_arguments,
            )
            stats.resumes += 1
            backoff = 1.0
        except _Gone:
            log.info("watch of %s: resourceVersion %s expired; relisting", describe, cursor.version)
            cursor.version = None
        except ApiException as error:
            if error.status == 410:
                cursor.version = None
                continue
            stats.failures += 1
            log.warning("watch of %s failed: %s %s", describe, error.status, error.reason)
            stop.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
        except Exception as error:  # noqa: BLE001 - a broken connection, a timeout: resume
            stats.failures += 1
            log.warning("watch of %s interrupted (%s); resuming", describe, error)
            stop.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)


def _list(list_function: Callable[..., Any], target: WatchTarget, arguments: JSON) -> str:
    response = list_function(
        _preload_content=False, _request_timeout=(CONNECT_TIMEOUT_SECONDS, 60), **arguments
    )
    listing = json.loads(response.data)
    # Items of a list carry neither kind nor apiVersion; watch events' objects do.
    kind = str(listing.get("kind", "")).removesuffix("List")
    items: list[JSON] = listing.get("items") or []
    for item in items:
        item.setdefault("kind", kind)
        item.setdefault("apiVersion", listing.get("apiVersion"))
    target.replace(items)
    return str(listing["metadata"]["resourceVersion"])


def _follow(
    list_function: Callable[..., Any],
    target: WatchTarget,
    *,
    cursor: _Cursor,
    stop: threading.Event,
    stats: WatchStats,
    timeout_seconds: int,
    arguments: JSON,
) -> None:
    """Follow one watch request to its end, moving ``cursor`` with every event."""
    from kubernetes.watch.watch import iter_resp_lines  # noqa: PLC0415

    response = list_function(
        watch=True,
        resource_version=cursor.version,
        allow_watch_bookmarks=True,
        timeout_seconds=timeout_seconds,
        _preload_content=False,
        _request_timeout=(CONNECT_TIMEOUT_SECONDS, timeout_seconds + READ_SLACK_SECONDS),
        **arguments,
    )
    try:
        for line in iter_resp_lines(response):
            if stop.is_set():
                break
            if not line:
                continue
            event = json.loads(line)
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise _Gone()
                raise RuntimeError(f"error event {obj.get('code')}: {obj.get('message')}")
            seen = (obj.get("metadata") or {}).get("resourceVersion")
            cursor.version = str(seen) if seen else cursor.version
            if kind == "BOOKMARK":
                stats.bookmarks += 1
            else:
                stats.events += 1
                target.apply(str(kind), obj)
    finally:
        response.close()
        response.release_conn()
