"""``spotguard audit``: what already in the cluster breaks the policy; and the serve
options that run the same audit in the background (:mod:`webhook.audit.background`).

The policy is the live one (the ConfigMap the servers watch) unless ``--policy FILE``
names another, e.g. the revision about to be applied. Output: one line per object and
broken rule (``-o text``), one JSON record per line (``json``), YAML documents
(``yaml``), or the PolicyReports the in-cluster audit would publish (``policyreport``,
ready for ``kubectl apply -f -``). Exit status: 0 nothing would be denied, 1 something
breaks an enforced rule, 2 the audit could not run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from policies.loader import PolicyError, parse_policy_text
from policies.model import Policy
from webhook.audit.background import BackgroundAudit
from webhook.audit.inventory import Inventory
from webhook.audit.reports import build_reports
from webhook.audit.scan import ERROR, FAIL, AuditResult, run_audit
from webhook.commands.common import (
    EXIT_DENIED,
    EXIT_OK,
    CLIError,
    add_policy_options,
    load_kube_config,
    load_policy,
)
from webhook.kube_json import KubeJSON
from webhook.policy_store import PolicyStore

DEFAULT_POLICY_CONFIGMAP = "spotguard-system/spotguard-policy"


def _live_policy(kube: KubeJSON, reference: str, key: str) -> Policy:
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    namespace, _, name = reference.partition("/")
    if not namespace or not name:
        raise CLIError("--policy-configmap must be NAMESPACE/NAME")
    try:
        configmap = kube.get(f"/api/v1/namespaces/{namespace}/configmaps/{name}")
    except ApiException as error:
        if error.status != 404:
            raise
        raise CLIError(
            f"no ConfigMap {reference} (is spotguard installed? name another with "
            "--policy-configmap, or give --policy FILE)"
        ) from None
    text = (configmap.get("data") or {}).get(key)
    if not isinstance(text, str):
        raise CLIError(f"ConfigMap {reference} has no key {key!r} (name it with --policy-key)")
    try:
        return parse_policy_text(text)
    except PolicyError as error:
        raise CLIError(f"ConfigMap {reference}: {error}") from None


def cmd_audit(args: argparse.Namespace) -> int:
    load_kube_config(args.kubeconfig, in_cluster_fallback=True)
    kube = KubeJSON()
    if args.policy is not None:
        policy = load_policy(args.policy, args.policy_key)
    else:
        policy = _live_policy(kube, args.policy_configmap, args.policy_key)
    result = run_audit(Inventory(kube, args.namespace), policy)
    _print(result, args.output)
    if result.not_served:
        kinds = ", ".join(result.not_served)
        print(f"spotguard audit: kinds this cluster does not serve: {kinds}", file=sys.stderr)
    print(f"spotguard audit: {result.summary()}", file=sys.stderr)
    refused = any(f.result in (FAIL, ERROR) for f in result.findings)
    return EXIT_DENIED if refused else EXIT_OK


def _print(result: AuditResult, output: str) -> None:
    if output == "policyreport":
        print(yaml.safe_dump_all(build_reports(result), sort_keys=False), end="")
        return
    for finding in result.findings:
        if output == "json":
            print(json.dumps(finding.as_dict()))
        elif output == "yaml":
            print("---\n" + yaml.safe_dump(finding.as_dict(), sort_keys=False), end="")
        else:
            print(f"{finding.resource} (namespace {finding.namespace}): {finding.result}: "
                  f"{finding.message}")  # fmt: skip


def add_audit_command(commands: Any) -> None:
    audit = commands.add_parser(
        "audit",
        help="judge the pods and workloads already in a cluster; exit 1 if one breaks an "
        "enforced rule",
        description="Judge the pods (where they run now included) and the reviewed "
        "workloads already in the cluster with the live policy, or --policy FILE. Exit "
        "status: 0 nothing breaks an enforced rule, 1 something does, 2 could not run.",
    )
    audit.add_argument(
        "--kubeconfig", type=Path,
        help="default: $KUBECONFIG or ~/.kube/config, else the in-cluster configuration",
    )  # fmt: skip
    audit.add_argument("-n", "--namespace", help="audit this namespace only (default: all)")
    audit.add_argument(
        "-o", "--output", choices=["text", "json", "yaml", "policyreport"], default="text",
        help="text: a line per object and rule; json: a JSON record per line; yaml: YAML "
        "documents; policyreport: the wgpolicyk8s.io/v1alpha2 PolicyReports (default text)",
    )  # fmt: skip
    add_policy_options(audit, default="the live one, from --policy-configmap")
    audit.add_argument(
        "--policy-configmap", default=DEFAULT_POLICY_CONFIGMAP, metavar="NAMESPACE/NAME",
        help="the live policy, used unless --policy is given (default %(default)s)",
    )  # fmt: skip
    audit.set_defaults(handler=cmd_audit)


def _interval(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if seconds != 0 and not 1 <= seconds <= 86400:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give seconds between 1 and 86400, or 0 to turn the audit off"
        )
    return seconds


def add_audit_serve_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--audit-interval", type=_interval, default=0.0, metavar="SECONDS",
        help="audit the cluster every SECONDS in the background (one replica at a time, "
        "chosen by a Lease in --namespace) and publish PolicyReports, Events and the "
        "spotguard_audit_violations gauge; 0: off (default %(default)s)",
    )  # fmt: skip


def background_audit(args: argparse.Namespace, store: PolicyStore) -> BackgroundAudit | None:
    """The background audit ``serve`` asked for, or None; needs cluster access."""
    if args.audit_interval <= 0:
        return None
    load_kube_config(args.kubeconfig)
    from webhook.metrics import multiprocess_enabled, process_metrics  # noqa: PLC0415

    return BackgroundAudit(
        store, KubeJSON(), args.namespace, args.audit_interval,
        metrics=process_metrics if multiprocess_enabled() else None,
    )  # fmt: skip
