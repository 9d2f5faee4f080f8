"""PolicyReports (``wgpolicyk8s.io/v1alpha2``): the audit's findings where dashboards read.

One report per namespace with judged objects, named ``spotguard``: a result per object
and broken rule (``fail`` for an enforced rule, ``warn`` for an audited one) naming the
resource, and a summary. Objects that pass are counted in ``summary.pass`` (exempt ones,
a verified DaemonSet or static pod, in ``summary.skip``) rather than
listed, so a namespace of thousands of pods stays far below the API server's object size
limit; for the same reason at most :data:`MAX_RESULTS` results are listed (fail first),
the summary still counting them all.

Publishing is server-side apply (one PATCH per namespace, whoever created the report
before); reports of namespaces that no longer have judged objects are deleted. The CRD
is an optional part of the install: without it the first attempt is logged once and
reports are skipped, and each run tries again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from webhook.audit.scan import ERROR, FAIL, WARN, AuditResult, Finding
from webhook.kube_json import APPLY_PATCH, JSONObject, KubeJSON

log = logging.getLogger("spotguard.audit")

GROUP_VERSION = "wgpolicyk8s.io/v1alpha2"
REPORT_NAME = "spotguard"
POLICY_NAME = "spotguard"
MANAGED_BY = ("app.kubernetes.io/managed-by", "spotguard")
FIELD_MANAGER = "spotguard-audit"
MAX_RESULTS = 1000
_ORDER = {FAIL: 0, ERROR: 1, WARN: 2}


def _result(finding: Finding, policy_revision: str, seconds: int) -> JSONObject:
    return {
        "policy": POLICY_NAME,
        "rule": finding.rule,
        "result": finding.result,
        "severity": "medium",
        "category": "Spot placement",
        "source": "spotguard",
        "message": finding.message[:1024],
        "scored": True,
        "timestamp": {"seconds": seconds, "nanos": 0},
        "properties": {"mode": finding.mode, "policyRevision": policy_revision},
        "resources": [
            {
                "apiVersion": finding.api_version,
                "kind": finding.kind,
                "name": finding.name,
                "namespace": finding.namespace,
                "uid": finding.uid,
            }
        ],
    }


def build_reports(result: AuditResult, now: float | None = None) -> list[JSONObject]:
    """The PolicyReport of each namespace the audit judged objects in."""
    seconds = int(now if now is not None else time.time())
    by_namespace: dict[str, list[Finding]] = {ns: [] for ns in result.namespaces}
    for finding in result.findings:
        by_namespace.setdefault(finding.namespace, []).append(finding)
    reports = []
    for namespace, findings in sorted(by_namespace.items()):
        findings.sort(key=lambda f: (_ORDER[f.result], f.kind, f.name, f.rule))
        reports.append(
            {
                "apiVersion": GROUP_VERSION,
                "kind": "PolicyReport",
                "metadata": {
                    "name": REPORT_NAME,
                    "namespace": namespace,
                    "labels": {MANAGED_BY[0]: MANAGED_BY[1]},
                },
                "summary": {
                    "pass": result.passed.get(namespace, 0),
                    "fail": sum(f.result == FAIL for f in findings),
                    "warn": sum(f.result == WARN for f in findings),
                    "error": sum(f.result == ERROR for f in findings),
                    "skip": result.skipped.get(namespace, 0),
                },
                "results": [
                    _result(f, result.policy_revision, seconds) for f in findings[:MAX_RESULTS]
                ],
            }
        )
    return reports


class ReportPublisher:
    """Writes the reports into the cluster; never raises for a missing CRD."""

    def __init__(self, kube: KubeJSON) -> None:
        self._kube = kube
        self._missing_logged = False

    def publish(self, reports: Iterable[JSONObject]) -> int:
        """Apply each report, delete stale ones; the number written (0 without the CRD)."""
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        written: set[str] = set()
        try:
            for report in reports:
                namespace = report["metadata"]["namespace"]
                self._kube.request(
                    "PATCH", f"{_collection(namespace)}/{REPORT_NAME}",
                    query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
                    body=report, content_type=APPLY_PATCH,
                )  # fmt: skip
                written.add(namespace)
            self._delete_stale(written)
        except ApiException as error:
            if error.status != 404:  # a report itself cannot be missing: apply creates it
                raise
            if not self._missing_logged:
                log.warning(
                    "PolicyReports skipped: the cluster does not serve %s policyreports "
                    "(install the CRD to get them)",
                    GROUP_VERSION,
                )
                self._missing_logged = True
            return 0
        self._missing_logged = False
        return len(written)

    def _delete_stale(self, written: set[str]) -> None:
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        selector = f"{MANAGED_BY[0]}={MANAGED_BY[1]}"
        path = f"/apis/{GROUP_VERSION}/policyreports"
        for page in self._kube.pages(path, labelSelector=selector):
            for report in page:
                metadata = report.get("metadata") or {}
                namespace = metadata.get("namespace", "")
                if metadata.get("name") == REPORT_NAME and namespace not in written:
                    try:
                        self._kube.request("DELETE", f"{_collection(namespace)}/{REPORT_NAME}")
                    except ApiException as error:
                        if error.status != 404:
                            raise


def _collection(namespace: str) -> str:
    return f"/apis/{GROUP_VERSION}/namespaces/{namespace}/policyreports"
