"""Prometheus metrics, correct under several gunicorn worker processes.

With ``PROMETHEUS_MULTIPROC_DIR`` set, every worker writes its samples to files there and
the scrape endpoint (run by the gunicorn master on its own port) merges them. prometheus
client decides between in-process and multiprocess values when it is first imported,
so ``spotguard serve`` sets that variable before anything imports it; that is why this
module imports prometheus_client lazily.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from policies.decisions import Change

#: Latency buckets in seconds, dense around the few milliseconds a review takes.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass(frozen=True)
class Metrics:
    """The metric families spotguard exports. Create once per process with :meth:`create`."""

    reviews: Any
    latency: Any
    injections: Any
    violations: Any
    policy_reloads: Any
    internal_errors: Any
    policy_stale: Any
    registration_covers: Any
    certificate_expiry: Any
    audit_violations: Any
    audit_last_run: Any
    connections_open: Any
    connections_closed: Any
    connections_lost: Any
    requests_lost: Any
    cache_relists: Any
    registry: Any

    @classmethod
    def create(cls, registry: Any = None) -> Metrics:
        """Register the families in ``registry`` (default: the process-global one)."""
        from prometheus_client import REGISTRY, Counter, Gauge, Histogram  # noqa: PLC0415

        registry = registry if registry is not None else REGISTRY
        kwargs = {"registry": registry}
        return cls(
            reviews=Counter(
                "spotguard_reviews",
                "Admission reviews answered, by webhook, operation, result and mode.",
                ["webhook", "operation", "result", "mode"],
                **kwargs,
            ),
            latency=Histogram(
                "spotguard_review_duration_seconds",
                "Time to answer a review, from parsed request to response.",
                ["webhook"],
                buckets=LATENCY_BUCKETS,
                **kwargs,
            ),
            injections=Counter(
                "spotguard_injections",
                "Objects mutated (or, in audit mode, that would be), by kind of injection: "
                "one per object and kind, however many tolerations or terms it got.",
                ["kind", "mode"],
                **kwargs,
            ),
            violations=Counter(
                "spotguard_violations",
                "Rule violations found, by rule and mode (enforce denies, audit warns).",
                ["rule", "mode"],
                **kwargs,
            ),
            policy_reloads=Counter(
                "spotguard_policy_reloads",
                "Policy revisions seen, by result (loaded or refused).",
                ["result"],
                **kwargs,
            ),
            internal_errors=Counter(
                "spotguard_internal_errors",
                "Reviews that failed with an internal error (admitted unchanged), by webhook.",
                ["webhook"],
                **kwargs,
            ),
            policy_stale=Gauge(
                "spotguard_policy_stale",
                "1 while the newest policy revision was refused and an older one is in force.",
                multiprocess_mode="max",
                **kwargs,
            ),
            registration_covers=Gauge(
                "spotguard_registration_covers_policy",
                "1 while the live webhook registration sends every review the policy in force "
                "needs, 0 while it does not (not exported without cluster access).",
                multiprocess_mode="min",
                **kwargs,
            ),
            certificate_expiry=Gauge(
                "spotguard_certificate_expiry_timestamp_seconds",
                "When the serving certificate in use expires (Unix time).",
                multiprocess_mode="livemax",
                **kwargs,
            ),
            audit_violations=Gauge(
                "spotguard_audit_violations",
                "Objects in the cluster breaking a rule at the last audit, by rule, namespace "
                "and mode (0 on replicas that do not lead the audit: take the max).",
                ["rule", "namespace", "mode"],
                multiprocess_mode="livemax",
                **kwargs,
            ),
            audit_last_run=Gauge(
                "spotguard_audit_last_run_timestamp_seconds",
                "When the last complete audit of the cluster finished (Unix time).",
                multiprocess_mode="livemax",
                **kwargs,
            ),
            connections_open=Gauge(
                "spotguard_connections_open",
                "Client connections open (including those still in their TLS handshake).",
                multiprocess_mode="livesum",
                **kwargs,
            ),
            connections_closed=Counter(
                "spotguard_connections_closed",
                "Client connections closed, by reason (client_closed, served, idle_timeout, "
                "handshake_timeout, header_timeout, body_timeout, body_too_large, "
                "evicted_at_cap, refused_at_cap, worker_stopping, ...).",
                ["reason"],
                **kwargs,
            ),
            connections_lost=Counter(
                "spotguard_worker_connections_lost",
                "Connections open in a worker that died without finishing (SIGKILL, crash, "
                "timeout): each was reset.",
                **kwargs,
            ),
            requests_lost=Counter(
                "spotguard_worker_requests_lost",
                "Requests under way in a worker that died without finishing: never answered.",
                **kwargs,
            ),
            cache_relists=Counter(
                "spotguard_cache_relists",
                "Full relists of a watch cache, by resource (the first listing included).",
                ["resource"],
                **kwargs,
            ),
            registry=registry,
        )

    def count_changes(self, changes: tuple[Change, ...], mode: str) -> None:
        """Count the reviewed object once per kind it got (four tolerations are one pod)."""
        for kind in dict.fromkeys(change.kind for change in changes):
            self.injections.labels(kind, mode).inc()


_process_metrics: Metrics | None = None


def process_metrics() -> Metrics:
    """This process's metrics in the global registry, created on first use (after fork)."""
    global _process_metrics  # noqa: PLW0603 - one set of families per process, by design
    if _process_metrics is None:
        _process_metrics = Metrics.create()
    return _process_metrics


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def start_scrape_server(port: int, address: str) -> None:
    """Serve /metrics on its own port, merging every worker's samples (gunicorn master)."""
    from prometheus_client import CollectorRegistry, start_http_server  # noqa: PLC0415
    from prometheus_client.multiprocess import MultiProcessCollector  # noqa: PLC0415

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    start_http_server(port, addr=address, registry=registry)


def forget_worker(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters stay, as Prometheus expects)."""
    from prometheus_client import multiprocess  # noqa: PLC0415

    multiprocess.mark_process_dead(pid)
