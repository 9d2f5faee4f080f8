"""A Warning Event on each workload the audit finds breaking a rule, once per violation.

``kubectl describe deployment web`` then says what spotguard found, next to the events
users already read. The Event goes to the object users wrote: a bare pod, a workload, or,
for a pod a controller made, the topmost workload above it (a ReplicaSet's pod: its
Deployment), with how many of its pods break the rule.

One Event per object and rule: its name is derived from the object's uid and the rule, so
the same violation found again by the next run, or by another replica after a leader
change, is the same Event; creating it again is refused (409) and nothing new is
recorded. The API server expires Events after an hour (``--event-ttl``), after which a
violation still there is recorded again: at most once an hour, never once per run.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime

from webhook.audit.scan import ERROR, FAIL, AuditResult, Finding, ObjectRef
from webhook.kube_json import JSONObject, KubeJSON

log = logging.getLogger("spotguard.audit")

REASON = "SpotguardViolation"
COMPONENT = "spotguard-audit"


def event_name(subject: ObjectRef, rule: str) -> str:
    digest = hashlib.sha256(f"{subject.uid}|{rule}".encode()).hexdigest()[:12]
    return f"{subject.name[:200]}.spotguard-{digest}"


def event_message(subject: ObjectRef, findings: list[Finding]) -> str:
    first = findings[0]
    enforced = any(f.result == FAIL for f in findings)
    rule = "an enforced rule (it would be denied today)" if enforced else "a rule in audit mode"
    if (first.kind, first.uid) == (subject.kind, subject.uid):
        return f"spotguard audit: this {subject.kind} breaks {rule}: {first.message}"
    pods = f"{len(findings)} of its pods break" if len(findings) > 1 else "one of its pods breaks"
    return f"spotguard audit: {pods} {rule}; pod {first.name}: {first.message}"


def violation_event(subject: ObjectRef, findings: list[Finding], now: datetime) -> JSONObject:
    stamp = now.isoformat(timespec="seconds").replace("+00:00", "Z")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": event_name(subject, findings[0].rule), "namespace": subject.namespace},
        "involvedObject": {
            "apiVersion": subject.api_version,
            "kind": subject.kind,
            "name": subject.name,
            "namespace": subject.namespace,
            "uid": subject.uid,
        },
        "reason": REASON,
        "type": "Warning",
        "message": event_message(subject, findings)[:1024],
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

    def record(self, result: AuditResult) -> int:
        """An Event for each object and rule not recorded before; how many were created."""
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        grouped: dict[tuple[ObjectRef, str], list[Finding]] = {}
        for finding in result.findings:
            if finding.result != ERROR:
                grouped.setdefault((result.subject_of(finding), finding.rule), []).append(finding)
        now = datetime.now(UTC)
        current: set[str] = set()
        created = 0
        for (subject, rule), findings in grouped.items():
            key = f"{subject.namespace}/{event_name(subject, rule)}"
            current.add(key)
            if key in self._recorded:
                continue
            try:
                self._kube.request(
                    "POST", f"/api/v1/namespaces/{subject.namespace}/events",
                    body=violation_event(subject, findings, now),
                )  # fmt: skip
                created += 1
            except ApiException as error:
                if error.status != 409:  # 409: recorded before (another run or replica)
                    log.warning(
                        "cannot record an Event on %s %s/%s: %s %s", subject.kind,
                        subject.namespace, subject.name, error.status, error.reason,
                    )  # fmt: skip
                    current.discard(key)
        self._recorded = current
        return created
