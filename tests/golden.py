"""Golden cases kept as data: ``tests/cases/<name>/`` holds one case.

Files of a case:
- ``case.yaml``: ``description``, ``webhook`` (mutate | validate), optional ``namespace``
  (default ``default``) and ``operation`` (default ``CREATE``);
- ``policy.yaml`` (optional): the policy document; absent means the built-in default;
- ``pod.yaml``: the pod under review; ``old-pod.yaml`` for an UPDATE;
- ``expected.yaml``: for mutate, the pod as admitted; for validate, the decision;
- ``expected-decision.yaml`` (mutate): mode, changes and warnings;
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

from policies.decisions import PodContext
from policies.loader import default_policy, parse_policy_text
from policies.model import Mode, Policy
from policies.mutate import mutate_pod
from policies.patch import make_patch
from policies.validate import validate_pod

CASES_DIR = Path(__file__).parent / "cases"
REGENERATE = os.environ.get("SPOTGUARD_REGENERATE_GOLDEN") == "1"


class _ReadableDumper(yaml.SafeDumper):
    """Multi-line strings (the hook script) as literal blocks, so diffs stay readable."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ReadableDumper.add_representer(str, _string)


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text("utf-8"))


@dataclass(frozen=True)
class Case:
    name: str
    directory: Path
    webhook: str
    policy: Policy
    pod: dict[str, Any]
    old_pod: dict[str, Any] | None
    context: PodContext

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


def load_case(directory: Path) -> Case:
    meta = _load(directory / "case.yaml")
    policy_file = directory / "policy.yaml"
    policy = (
        parse_policy_text(policy_file.read_text()) if policy_file.exists() else default_policy()
    )
    old_file = directory / "old-pod.yaml"
    return Case(
        name=directory.name,
        directory=directory,
        webhook=meta["webhook"],
        policy=policy,
        pod=_load(directory / "pod.yaml"),
        old_pod=_load(old_file) if old_file.exists() else None,
        context=PodContext(
            namespace=meta.get("namespace", "default"), operation=meta.get("operation", "CREATE")
        ),
    )


def all_cases() -> list[Path]:
    return sorted(p for p in CASES_DIR.iterdir() if (p / "case.yaml").exists())


def run_mutate(case: Case) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """(admitted pod, decision summary, patch) exactly as the webhook would produce them."""
    decision = mutate_pod(case.pod, case.context, case.policy)
    admitted = decision.mutated if decision.mode is Mode.ENFORCE and decision.mutated else case.pod
    summary = {
        "rule": decision.rule.value if decision.rule else None,
        "mode": str(decision.mode),
        "changes": [change.detail for change in decision.changes],
        "warnings": list(decision.warnings),
    }
    return admitted, summary, make_patch(case.pod, admitted)


def run_validate(case: Case) -> dict[str, Any]:
    decision = validate_pod(case.pod, case.context, case.policy, case.old_pod)
    return {
        "allowed": not decision.denials,
        "violations": [
            {"rule": v.rule.value, "mode": str(v.mode), "field": v.field, "message": v.message()}
            for v in decision.violations
        ],
        "warnings": [v.short() for v in decision.audited],
    }
