"""``spotguard validate``, ``mutate`` and ``policy check``: the webhooks' answers offline.

Each object in the input gets the answer ``kubectl apply`` would get with spotguard
installed (:mod:`webhook.judge`): the mutating webhook's patch, then the validating
webhook's decision on the patched object, with the same message and warnings. Output is
one line per object, like kubectl (``deployment.apps/web (web.yaml#2): denied: ...``), or
one record per object (``-o json``: JSON lines, ``-o yaml``: YAML documents).
Exit status: 0, 1 when an object would be refused (denied, or not a valid object), 2
when the command could not run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from policies.loader import PolicyError, parse_policy_text
from policies.model import Policy, Rule
from webhook.admission import validate_policy_configmap
from webhook.commands.common import (
    EXIT_DENIED,
    EXIT_OK,
    POLICY_LABEL,
    CLIError,
    add_policy_options,
    load_policy,
    mapping_at,
    policy_texts,
    read_text,
)
from webhook.commands.webhooks import add_webhooks_command
from webhook.judge import Judgement, Malformed, judge_new
from webhook.manifests import Document, ManifestError, read_manifests
from webhook.policy_sources import DEFAULT_CONFIGMAP_KEY
from webhook.review import Review

#: The namespace of the policy ConfigMap the policy webhook reviews (with POLICY_LABEL).
SPOTGUARD_NAMESPACE = "spotguard-system"
REFUSED = ("denied", "invalid")


@dataclass
class Record:
    """One object's answer, as printed."""

    source: str
    api_version: str
    kind: str
    name: str
    namespace: str
    result: str  # allowed | denied | skipped | invalid
    message: str = ""
    warnings: list[str] = field(default_factory=list)
    violations: list[dict[str, str]] = field(default_factory=list)
    changes: list[dict[str, str]] = field(default_factory=list)
    patch: list[dict[str, Any]] | None = None
    admitted: Any = None
    received: Any = None

    @property
    def resource(self) -> str:
        """kubectl's name for it: ``pod/web``, ``deployment.apps/web``."""
        group = self.api_version.rpartition("/")[0]
        kind = (self.kind or "object").lower()
        return f"{kind}.{group}/{self.name}" if group else f"{kind}/{self.name}"

    def line(self) -> str:
        text = f"{self.resource} ({self.source}): {self.result}"
        if self.message:
            text += f": {self.message}"
        elif self.changes and self.result == "allowed":
            kinds = ", ".join(dict.fromkeys(c["kind"] for c in self.changes))
            text += f" (spotguard injects {kinds})"
        return text

    def as_dict(self, with_object: bool) -> dict[str, Any]:
        record: dict[str, Any] = {
            "source": self.source,
            "resource": self.resource,
            "apiVersion": self.api_version,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "result": self.result,
        }
        for key, value in (
            ("message", self.message),
            ("warnings", self.warnings),
            ("violations", self.violations),
            ("changes", self.changes),
        ):
            if value:
                record[key] = value
        if with_object:
            record["patch"] = self.patch or []
            record["object"] = self.admitted if self.admitted is not None else self.received
        return record


def _identity(document: Document, namespace: str) -> Record:
    obj: dict[str, Any] = document.obj if isinstance(document.obj, dict) else {}
    metadata = mapping_at(obj, "metadata")
    name = metadata.get("name") or (
        f"{metadata['generateName']}*" if metadata.get("generateName") else "(unnamed)"
    )
    return Record(
        document.source, str(obj.get("apiVersion") or ""), str(obj.get("kind") or ""),
        str(name), namespace, "allowed", received=document.obj,
    )  # fmt: skip


def review_document(
    document: Document,
    policy: Policy,
    namespace_flag: str | None,
    policy_key: str = DEFAULT_CONFIGMAP_KEY,
) -> Record:
    """The answer for one document, as ``kubectl apply -n NAMESPACE`` would get it."""
    obj = document.obj
    own = mapping_at(obj, "metadata").get("namespace")
    namespace = str(own or namespace_flag or "default")
    record = _identity(document, namespace)
    if not isinstance(obj, dict) or not record.api_version or not record.kind:
        return _set(record, "invalid", "not a Kubernetes object: apiVersion and kind are required")
    if not isinstance(obj["apiVersion"], str) or not isinstance(obj["kind"], str):
        record.api_version = record.kind = ""  # no kubectl name for a list or a number
        return _set(record, "invalid", "not a Kubernetes object: apiVersion and kind are strings")
    if own and namespace_flag and own != namespace_flag:
        return _set(
            record, "invalid",
            f"its namespace {own!r} does not match --namespace {namespace_flag!r}",
        )  # fmt: skip
    if _is_policy_configmap(obj, namespace):
        return _policy_configmap(record, obj, namespace, policy, policy_key)
    try:
        judgement = judge_new(obj, policy, namespace)
    except Malformed as error:  # the webhook would answer HTTP 400: the object is refused
        return _set(record, "invalid", "; ".join(p.removeprefix("object.") for p in error.problems))
    if not judgement.reviewed:
        return _set(record, "skipped", judgement.exempt)
    return _from_judgement(record, judgement)


def _set(record: Record, result: str, message: str) -> Record:
    record.result, record.message = result, message
    return record


def _from_judgement(record: Record, judgement: Judgement) -> Record:
    record.warnings = list(judgement.warnings)
    record.violations = [
        {"rule": v.rule.value, "mode": str(v.mode), "field": v.field, "message": v.message()}
        for v in judgement.violations
    ]
    record.changes = [{"kind": c.kind, "detail": c.detail} for c in judgement.changes]
    record.patch = list(judgement.patch)
    record.admitted = judgement.admitted
    if judgement.denied:
        return _set(record, "denied", judgement.message)
    return record


def _is_policy_configmap(obj: dict[str, Any], namespace: str) -> bool:
    labels = mapping_at(mapping_at(obj, "metadata"), "labels")
    return (
        obj.get("apiVersion") == "v1"
        and obj.get("kind") == "ConfigMap"
        and namespace == SPOTGUARD_NAMESPACE
        and labels.get(POLICY_LABEL) == "true"
    )


def _policy_configmap(
    record: Record, obj: dict[str, Any], namespace: str, policy: Policy, key: str
) -> Record:
    """The policy webhook's own answer (the same function the server calls)."""
    request = {
        "uid": "offline",
        "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
        "namespace": namespace,
        "operation": "CREATE",
        "object": obj,
    }
    parsed = Review("admission.k8s.io/v1", request)  # type: ignore[arg-type]
    response, _ = validate_policy_configmap(parsed, policy, key)
    if response.get("allowed"):
        return record
    return _set(record, "denied", response.get("status", {}).get("message", "refused"))


def _records(args: argparse.Namespace, policy: Policy) -> Iterator[Record]:
    try:
        for document in read_manifests(args.filename, recursive=args.recursive):
            yield review_document(document, policy, args.namespace, args.policy_key)
    except ManifestError as error:
        raise CLIError(str(error)) from None


def _emit(records: Iterable[Record], args: argparse.Namespace, with_object: bool) -> list[Record]:
    """Print each record as it comes and keep only its verdict: the admitted objects of a
    long input are not held (each file, and stdin, is still read and parsed whole)."""
    seen: list[Record] = []
    patches: list[list[dict[str, Any]]] = []
    for record in records:
        if args.output == "json":
            print(json.dumps(record.as_dict(with_object)))
        elif args.output == "yaml":
            print("---\n" + yaml.safe_dump(record.as_dict(with_object), sort_keys=False), end="")
        else:
            for warning in record.warnings:
                print(f"Warning: {record.resource} ({record.source}): {warning}", file=sys.stderr)
            if args.output == "text":
                print(record.line())
            elif getattr(args, "patch", False):
                patches.append(record.patch or [])
            else:  # mutate: the objects as admitted, kinds it does not review unchanged
                admitted = record.admitted if record.admitted is not None else record.received
                print("---\n" + yaml.safe_dump(admitted, sort_keys=False), end="")
            if args.output is None and record.result in REFUSED:
                print(f"spotguard: {record.line()}", file=sys.stderr)
        record.admitted = record.received = None  # only the verdicts are kept
        seen.append(record)
    if patches:
        print(json.dumps(patches[0] if len(patches) == 1 else patches, indent=2))
    return seen


def _finish(records: list[Record], args: argparse.Namespace) -> int:
    if not records:
        raise CLIError("no objects found in the input")
    if args.output == "text":
        counts: dict[str, int] = {}
        for record in records:
            counts[record.result] = counts.get(record.result, 0) + 1
        summary = ", ".join(f"{n} {result}" for result, n in counts.items())
        print(f"spotguard: {summary}", file=sys.stderr)
    return EXIT_DENIED if any(r.result in REFUSED for r in records) else EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    policy = load_policy(args.policy, args.policy_key)
    return _finish(_emit(_records(args, policy), args, with_object=False), args)


def cmd_mutate(args: argparse.Namespace) -> int:
    """The admitted objects (default), their JSON Patches (--patch), or records (-o)."""
    policy = load_policy(args.policy, args.policy_key)
    return _finish(_emit(_records(args, policy), args, with_object=True), args)


def cmd_policy_check(args: argparse.Namespace) -> int:
    """Check a policy document, or each policy ConfigMap in a manifest (as deploy/ ships)."""
    texts = policy_texts(read_text(args.file), str(args.file), args.policy_key)
    for where, text in texts:
        try:
            policy = parse_policy_text(text)
        except PolicyError as error:
            raise CLIError(f"{error}" if len(texts) == 1 and where == str(args.file)
                           else f"{where}: {error}") from None  # fmt: skip
        prefix = "" if where == str(args.file) else f"{where}: "
        print(
            f"{prefix}policy OK: revision {policy.revision}, mode {policy.mode}, "
            f"{len(policy.spot_labels)} spot labels, {len(policy.spot_taints)} spot taints, "
            f"notice window {policy.notice_seconds}s"
        )
    return EXIT_OK


def cmd_policy_rules(args: argparse.Namespace) -> int:
    """The rule table (policies.model.Rule): each rule's key, built-in mode and job."""
    width = max(len(rule.key) for rule in Rule)
    for rule in Rule:
        print(f"{rule.key:<{width}}  {rule.default!s:<7}  [{rule}] {rule.summary}")
    return EXIT_OK


def add_offline_commands(commands: Any) -> None:
    for name, handler, text in (
        (
            "validate",
            cmd_validate,
            "the webhooks' decision for each object; exit 1 if one would be refused",
        ),
        ("mutate", cmd_mutate, "print each object as the mutating webhook would admit it"),
    ):
        command = commands.add_parser(name, help=text, description=_DESCRIPTION[name])
        command.add_argument(
            "-f", "--filename", action="append", required=True, metavar="PATH",
            help="manifest file, directory of .yaml/.yml/.json files, or - for stdin; "
            "repeatable. Multi-document files and kind: List are read item by item",
        )  # fmt: skip
        command.add_argument(
            "-R", "--recursive", action="store_true",
            help="read the directories given with -f recursively",
        )  # fmt: skip
        command.add_argument(
            "-n", "--namespace",
            help="namespace of objects that name none (default: default), as kubectl apply -n",
        )  # fmt: skip
        command.add_argument(
            "-o", "--output", choices=["text", "json", "yaml"],
            default="text" if name == "validate" else None,
            help="text: one line per object (validate's default); json: one JSON record "
            "per line; yaml: one YAML document per record"
            + ("" if name == "validate" else "; default: the admitted objects as YAML"),
        )  # fmt: skip
        add_policy_options(command)
        if name == "mutate":
            command.add_argument(
                "--patch", action="store_true", help="print the JSON Patch instead of the object"
            )
        command.set_defaults(handler=handler)

    policy = commands.add_parser("policy", help="work with policy documents")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")
    check = policy_commands.add_parser(
        "check",
        help="validate a policy document or policy ConfigMap manifest; exit 2 if invalid",
        description="Validate a policy document, or each policy ConfigMap in a manifest "
        "(a rendered install: kubectl kustomize deploy/overlays/eks | spotguard policy check -), "
        "and print its revision.",
    )
    check.add_argument("file", type=Path, help="policy document or manifest (YAML; - for stdin)")
    check.add_argument(
        "--policy-key",
        default=DEFAULT_CONFIGMAP_KEY,
        help="the ConfigMap's key holding the policy (default %(default)s)",
    )
    check.set_defaults(handler=cmd_policy_check)
    rules = policy_commands.add_parser(
        "rules",
        help="list the rules: their key in a policy's rules block, built-in mode and job",
        description="List every rule a policy can switch (rules.<key>.mode), with its "
        "built-in mode, the name messages give it, and what it does.",
    )
    rules.set_defaults(handler=cmd_policy_rules)
    add_webhooks_command(policy_commands)


_DESCRIPTION = {
    "validate": "Give each object the answer `kubectl apply` would get with spotguard "
    "installed: the mutating webhook's patch, then the validating webhook's decision on "
    "the patched object, with its message and warnings. Every kind the webhooks review "
    "(Pod, Binding, the policy's workload kinds, the policy ConfigMap); other kinds are "
    "reported as skipped. Exit status: 0 all admitted, 1 something refused (denied or "
    "invalid), 2 could not run.",
    "mutate": "Print each object as the mutating webhook would admit it (objects it does "
    "not change, and kinds it does not review, unchanged), or its JSON Patch (--patch), "
    "or one record per object with the whole answer (-o json|yaml). Exit status as for "
    "validate: 0 all admitted, 1 something refused, 2 could not run.",
}
