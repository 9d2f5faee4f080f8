"""The cluster audit inside ``spotguard serve``: one replica at a time, every interval.

It runs in two daemon threads of the gunicorn master, away from the review path (the
workers are other processes, and the audit reads its policy from the master's store):

- the campaign thread steps the Lease every ``retry`` seconds (:mod:`webhook.audit.lease`);
- the audit thread, while this replica leads, judges the cluster every ``interval``
  seconds and publishes: PolicyReports, a Warning Event per new violation, and the gauge
  ``spotguard_audit_violations{rule,namespace,mode}``. A run that loses the lease midway
  stops without publishing; a replica that stops leading sets its gauge to zero, so
  ``max`` over the replicas is the leader's count.

A failed run is logged and retried at the next interval; nothing here can stop serving.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from webhook.audit.events import ViolationEvents
from webhook.audit.inventory import Inventory
from webhook.audit.lease import LeaseElector
from webhook.audit.reports import ReportPublisher, build_reports
from webhook.audit.scan import ERROR, AuditAborted, AuditResult, run_audit
from webhook.kube_json import KubeJSON
from webhook.policy_store import PolicyStore

log = logging.getLogger("spotguard.audit")

LEASE_NAME = "spotguard-audit"


def default_identity() -> str:
    """The pod's name (its hostname) and a nonce: a restarted container is a new candidate."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


class BackgroundAudit:
    """Start with :meth:`start` in the gunicorn master; :meth:`stop` releases the Lease."""

    def __init__(
        self,
        store: PolicyStore,
        kube: KubeJSON,
        namespace: str,
        interval: float,
        *,
        metrics: Callable[[], Any] | None = None,
        retry: float = 2.0,
        lease_seconds: int = 15,
        identity: str | None = None,
    ) -> None:
        self._store = store
        self._kube = kube
        self._interval = interval
        self._metrics = metrics
        self._retry = retry
        self.elector = LeaseElector(
            kube, namespace, LEASE_NAME, identity or default_identity(),
            lease_seconds=lease_seconds, renew_deadline=lease_seconds * 2 / 3,
        )  # fmt: skip
        self._publisher = ReportPublisher(kube)
        self._events = ViolationEvents(kube)
        self._stop = threading.Event()
        self._gauged: set[tuple[str, str, str]] = set()
        self.last: AuditResult | None = None

    def start(self) -> None:
        for target, name in ((self._campaign, "audit-lease"), (self._audit_loop, "audit")):
            threading.Thread(target=target, name=name, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self.elector.release()

    def _campaign(self) -> None:
        while not self._stop.is_set():
            self.elector.step()
            self._stop.wait(self._retry)

    def _audit_loop(self) -> None:
        due = 0.0
        was_leading = False
        while not self._stop.wait(0.5):
            leading = self.elector.leading()
            if was_leading and not leading:
                log.info("audit: no longer the leader; %s stops auditing", self.elector.identity)
                self._set_gauge(None)
            was_leading = leading
            if not leading or time.monotonic() < due:
                continue
            due = time.monotonic() + self._interval
            self.run_once(self.elector.leading)

    def run_once(self, keep_going: Callable[[], bool] = lambda: True) -> AuditResult | None:
        """One audit and its publication; None when there is no policy or it was cut short."""
        policy = self._store.snapshot().policy
        if policy is None:
            return None
        try:
            result = run_audit(Inventory(self._kube), policy, keep_going)
            if not keep_going():
                raise AuditAborted
            reports = self._publisher.publish(build_reports(result))
            events = self._events.record(result)
        except AuditAborted:
            log.info("audit: cut short, this replica lost the lease")
            return None
        except Exception:
            log.exception("audit failed; retrying at the next interval")
            return None
        self._set_gauge(result)
        self.last = result
        log.info(
            "audit: %s", result.summary(),
            extra={"fields": {"event": "audit", "reports": reports, "events": events,
                              "seconds": round(result.seconds, 3), "notServed": result.not_served}},
        )  # fmt: skip
        return result

    def _set_gauge(self, result: AuditResult | None) -> None:
        if self._metrics is None:
            return
        metrics = self._metrics()  # created in this process, after gunicorn forked
        counts: Counter[tuple[str, str, str]] = Counter()
        for finding in result.findings if result else ():
            if finding.result != ERROR:
                counts[(finding.rule, finding.namespace, finding.mode)] += 1
        for labels in self._gauged | set(counts):  # a violation fixed since: back to 0
            metrics.audit_violations.labels(*labels).set(counts.get(labels, 0))
        self._gauged = set(counts)
        if result is not None:
            metrics.audit_last_run.set(time.time())
