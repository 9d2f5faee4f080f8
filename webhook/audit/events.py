"""A Warning Event on each object the audit finds breaking a rule, once per violation.

``kubectl describe deployment web`` then says what spotguard found, next to the events
users already read. Only objects users wrote get one: workloads without a controller and
bare pods (a Deployment's pods are told through the Deployment). The Event's name is
derived from the object's uid, the rule and the message, so the same violation found
again by the next run, or by another replica after a leader change, is the same Event:
its creation is refused (409) and nothing new is recorded. A changed violation is a new
Event. The API server expires Events after an hour (``--event-ttl``), after which a
violation still there is recorded again: at most once an hour, never once per run.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from datetime import UTC, datetime

from webhook.audit.scan import Finding
from webhook.kube_json import JSONObject, KubeJSON

log = logging.getLogger("spotguard.audit")

REASON = "SpotguardViolation"
COMPONENT = "spotguard-audit"


def event_name(finding: Finding) -> str:
    digest = hashlib.sha256(f"{finding.uid}|{finding.rule}|{finding.message}".encode())
    return f"{finding.name[:200]}.spotguard-{digest.hexdigest()[:12]}"


def violation_event(finding: Finding, now: datetime) -> JSONObject:
    stamp = now.isoformat(timespec="seconds").replace("+00:00", "Z")
    verdict = "denies" if finding.result == "fail" else "would deny (audit mode)"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": event_name(finding), "namespace": finding.namespace},
        "involvedObject": {
            "apiVersion": finding.api_version,
            "kind": finding.kind,
            "name": finding.name,
            "namespace": finding.namespace,
            "uid": finding.uid,
        },
        "reason": REASON,
        "type": "Warning",
        "message": f"spotguard {verdict} this object now: {finding.message}"[:1024],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


class ViolationEvents:
    """Records the Events; remembers what it recorded, to skip even the refused creates."""

    def __init__(self, kube: KubeJSON) -> None:
        self._kube = kube
        self._recorded: set[str] = set()

    def record(self, findings: Iterable[Finding]) -> int:
        """Record an Event for each new violation of an object users wrote; how many."""
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        now = datetime.now(UTC)
        current: set[str] = set()
        created = 0
        for finding in findings:
            if finding.controlled or finding.result == "error":
                continue
            key = f"{finding.namespace}/{event_name(finding)}"
            current.add(key)
            if key in self._recorded:
                continue
            try:
                self._kube.request(
                    "POST", f"/api/v1/namespaces/{finding.namespace}/events",
                    body=violation_event(finding, now),
                )  # fmt: skip
                created += 1
            except ApiException as error:
                if error.status != 409:  # 409: recorded before (another run or replica)
                    log.warning(
                        "cannot record an Event on %s %s/%s: %s %s", finding.kind,
                        finding.namespace, finding.name, error.status, error.reason,
                    )  # fmt: skip
                    current.discard(key)
        self._recorded = current
        return created
