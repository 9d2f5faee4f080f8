"""Golden cases kept as data: ``tests/cases/<name>/`` holds one case.

Files of a case:
- ``case.yaml``: ``description``, ``webhook`` (mutate | validate | binding), optional
  ``namespace`` (default ``default``) and ``operation`` (default ``CREATE``);
- ``policy.yaml`` (optional): the policy document; absent means the built-in default;
- what is under review, one of:
  - ``pod.yaml`` (and ``old-pod.yaml`` for an UPDATE): a Pod;
  - ``object.yaml`` (and ``old-object.yaml``): a workload object (Deployment, PyTorchJob,
    ...), whose pod templates are reviewed;
  - ``binding.yaml`` (webhook ``binding``): a Binding; ``pod.yaml`` is then the pod it
    binds, as the transport would look it up (absent: the pod was not found);
- ``cluster.yaml`` (optional): what the transport knows of the cluster, ``nodes`` (node
  name to its labels; a node not listed is unknown) and ``localVolumeClaims``
  (``namespace/name`` of PVCs bound to local PersistentVolumes);
- ``expected.yaml``: for mutate, the pod or object as admitted; otherwise the decision;
- ``expected-decision.yaml`` (mutate): rule, mode, changes and warnings (per template for
  an object);
- ``expected-patch.json`` (optional, mutate): the exact JSON Patch.

A new case needs files only. ``SPOTGUARD_REGENERATE_GOLDEN=1 pytest tests/test_golden_cases.py``
rewrites the expected files from the current code: review the diff before committing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from policies.binding import validate_binding
from policies.decisions import ClusterFacts, PodContext, ValidationDecision
from policies.loader import default_policy, parse_policy_text
from policies.model import Mode, Policy
from policies.mutate import mutate_pod
from policies.objects import mutate_object, validate_object
from policies.patch import make_patch
from policies.validate import validate_pod

CASES_DIR = Path(__file__).parent / "cases"
REGENERATE = os.environ.get("SPOTGUARD_REGENERATE_GOLDEN") == "1"
#: Stands for the policy's revision (a content hash) in expected files, so a change to a
#: default rewrites only the cases whose decisions change, not every one that records it.
REVISION = "<revision>"


def without_revision(value: Any, revision: str) -> Any:
    """``value`` with every occurrence of ``revision`` in its strings replaced by REVISION."""
    if isinstance(value, str):
        return value.replace(revision, REVISION)
    if isinstance(value, dict):
        return {key: without_revision(item, revision) for key, item in value.items()}
    if isinstance(value, list):
        return [without_revision(item, revision) for item in value]
    return value


class _ReadableDumper(yaml.SafeDumper):
    """Multi-line strings (the hook script) as literal blocks, so diffs stay readable."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ReadableDumper.add_representer(str, _string)


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text("utf-8"))


def _optional(path: Path) -> Any:
    return _load(path) if path.exists() else None


@dataclass(frozen=True)
class Case:
    name: str
    directory: Path
    webhook: str
    #: pod, object or binding: what kind of request the case is
    subject: str
    policy: Policy
    #: the Pod, workload object or Binding under review
    reviewed: dict[str, Any]
    old: dict[str, Any] | None
    #: for a binding: the pod it binds (None: not found)
    bound_pod: dict[str, Any] | None
    context: PodContext

    @property
    def pod(self) -> dict[str, Any]:
        return self.reviewed

    def expected(self, name: str) -> Any:
        path = self.directory / name
        return json.loads(path.read_text()) if name.endswith(".json") else _load(path)

    def has(self, name: str) -> bool:
        return (self.directory / name).exists()

    def write(self, name: str, value: Any) -> None:
        path = self.directory / name
        if name.endswith(".json"):
            path.write_text(json.dumps(value, indent=2) + "\n")
        else:
            path.write_text(yaml.dump(value, Dumper=_ReadableDumper, sort_keys=False, width=100))


def _cluster(directory: Path) -> ClusterFacts:
    data = _optional(directory / "cluster.yaml") or {}
    return ClusterFacts.from_data(
        nodes=data.get("nodes") or {}, local_claims=data.get("localVolumeClaims") or []
    )


def load_case(directory: Path) -> Case:
    meta = _load(directory / "case.yaml")
    policy_file = directory / "policy.yaml"
    policy = (
        parse_policy_text(policy_file.read_text()) if policy_file.exists() else default_policy()
    )
    if meta["webhook"] == "binding":
        subject, reviewed, old = "binding", _load(directory / "binding.yaml"), None
        bound_pod = _optional(directory / "pod.yaml")
    elif (directory / "object.yaml").exists():
        subject, reviewed = "object", _load(directory / "object.yaml")
        old, bound_pod = _optional(directory / "old-object.yaml"), None
    else:
        subject, reviewed = "pod", _load(directory / "pod.yaml")
        old, bound_pod = _optional(directory / "old-pod.yaml"), None
    return Case(
        name=directory.name,
        directory=directory,
        webhook=meta["webhook"],
        subject=subject,
        policy=policy,
        reviewed=reviewed,
        old=old,
        bound_pod=bound_pod,
        context=PodContext(
            namespace=meta.get("namespace", "default"),
            operation=meta.get("operation", "CREATE"),
            cluster=_cluster(directory),
        ),
    )


def all_cases() -> list[Path]:
    return sorted(p for p in CASES_DIR.iterdir() if (p / "case.yaml").exists())


def run_mutate(case: Case) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """(admitted pod or object, decision summary, patch) as the webhook would produce them."""
    if case.subject == "object":
        result = mutate_object(case.reviewed, case.context, case.policy, case.old)
        admitted = result.mutated or case.reviewed
        summary: dict[str, Any] = {
            "templates": [
                {"path": template.path, **_mutation_summary(template.decision)}
                for template in result.templates
            ]
        }
        return admitted, summary, make_patch(case.reviewed, admitted)
    decision = mutate_pod(case.pod, case.context, case.policy)
    admitted = decision.mutated if decision.mode is Mode.ENFORCE and decision.mutated else case.pod
    return admitted, _mutation_summary(decision), make_patch(case.pod, admitted)


def expected_form(case: Case, value: Any) -> Any:
    """An output as the expected files hold it: the policy revision replaced by REVISION."""
    return without_revision(value, case.policy.revision)


def _mutation_summary(decision: Any) -> dict[str, Any]:
    return {
        "rule": decision.rule.value if decision.rule else None,
        "mode": str(decision.mode),
        "changes": [change.detail for change in decision.changes],
        "warnings": list(decision.warnings),
    }


def run_validate(case: Case) -> dict[str, Any]:
    """The decision of the validating webhook (for a binding, of the binding check)."""
    decision: ValidationDecision
    if case.subject == "binding":
        decision = validate_binding(case.reviewed, case.bound_pod, case.context, case.policy)
    elif case.subject == "object":
        decision = validate_object(case.reviewed, case.context, case.policy, case.old)
    else:
        decision = validate_pod(case.pod, case.context, case.policy, case.old)
    return {
        "allowed": not decision.denials,
        "violations": [
            {"rule": v.rule.value, "mode": str(v.mode), "field": v.field, "message": v.message()}
            for v in decision.violations
        ],
        "warnings": list(decision.warnings) + [v.short() for v in decision.audited],
    }
