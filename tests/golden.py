"""Golden cases kept as data: ``tests/cases/<name>/`` holds one case.

Files of a case:
- ``case.yaml``: ``description``, ``webhook`` (mutate | validate | binding), optional
  ``namespace`` (default ``default``), ``operation`` (default ``CREATE``), ``userInfo``
  (``username``, ``groups``: who sends the request, as the API server authenticated them;
  absent: nobody in particular, so no identity exempts anything) and ``padding`` (a list of
  ``{path: [field, ...], bytes: N}``: a string of N bytes put at that path of the reviewed
  object before the review, for cases about size limits; expected files show it as
  ``<N bytes of padding>``);
- ``policy.yaml`` (optional): the policy document; absent means the built-in default;
- what is under review, one of:
  - ``pod.yaml`` (and ``old-pod.yaml`` for an UPDATE): a Pod;
  - ``object.yaml`` (and ``old-object.yaml``): a workload object (Deployment, PyTorchJob,
    ...), whose pod templates are reviewed;
  - ``binding.yaml`` (webhook ``binding``): a Binding; ``pod.yaml`` is then the stored pod
    it binds, as the cluster facts hold it (absent: the pod was not found);
- ``cluster.yaml`` (optional): what the transport knows of the cluster, ``nodes`` (node
  name to its labels; a node not listed is unknown), ``localVolumeClaims``
  (``namespace/name`` of PVCs bound to local PersistentVolumes) and ``owners``
  (``Kind/namespace/name`` to the uid of the object that exists there);
- ``expected.yaml``: for mutate, the pod or object as admitted; otherwise the decision;
- ``expected-decision.yaml`` (mutate): rule, mode, changes and warnings (per template for
  an object);
- ``expected-patch.json`` (optional, mutate): the exact JSON Patch;
- ``expected-response.yaml``: the webhook's answer as the API server receives it
  (``allowed``, ``status``, ``warnings``, ``auditAnnotations``, the decoded ``patch``), the
  outcome's labels, or the HTTP 400 a malformed request gets.

Every case goes through :func:`policies.review.review`, the one entry point, and is
phrased by the webhook's own functions. A new case needs files only.
``SPOTGUARD_REGENERATE_GOLDEN=1 pytest tests/test_golden_cases.py`` rewrites the expected
files from the current code: review the diff before committing.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from policies.decisions import ClusterFacts, MutationDecision
from policies.loader import default_policy, parse_policy_text
from policies.model import Policy
from policies.review import (
    BINDING_KIND,
    POD_KIND,
    GroupVersionKind,
    Malformed,
    Operation,
    Phase,
    Request,
    Verdict,
    requester_from_user_info,
    review,
)
from webhook.admission import respond
from webhook.review import BadReview

CASES_DIR = Path(__file__).parent / "cases"
REGENERATE = os.environ.get("SPOTGUARD_REGENERATE_GOLDEN") == "1"
#: Stands for the policy's revision (a content hash) in expected files, so a change to a
#: default rewrites only the cases whose decisions change, not every one that records it.
REVISION = "<revision>"


def without_revision(value: Any, revision: str) -> Any:
    """``value`` with every occurrence of ``revision`` in its strings replaced by REVISION,
    and each padding string (see ``padding`` in case.yaml) by its size."""
    if isinstance(value, str):
        if len(value) >= 1024 and value == PAD * len(value):
            return f"<{len(value)} bytes of padding>"
        return value.replace(revision, REVISION)
    if isinstance(value, dict):
        return {key: without_revision(item, revision) for key, item in value.items()}
    if isinstance(value, list):
        return [without_revision(item, revision) for item in value]
    return value


PAD = "x"


def _pad(obj: dict[str, Any], paddings: list[dict[str, Any]]) -> None:
    """Put each padding string at its path, creating the mappings on the way."""
    for padding in paddings:
        *parents, last = padding["path"]
        node: Any = obj
        for step in parents:
            node = node[step] if isinstance(step, int) else node.setdefault(step, {})
        node[last] = PAD * int(padding["bytes"])


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
    request: Request
    facts: ClusterFacts

    @property
    def reviewed(self) -> dict[str, Any]:
        """The Pod, workload object or Binding under review."""
        assert self.request.object is not None
        return self.request.object

    @property
    def malformed(self) -> bool:
        """The request cannot be interpreted: the webhook answers HTTP 400."""
        try:
            verdict_of(self)
        except Malformed:
            return True
        return False

    @property
    def phase(self) -> Phase:
        return Phase.MUTATE if self.webhook == "mutate" else Phase.VALIDATE

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
    namespace = meta.get("namespace", "default")
    cluster = _optional(directory / "cluster.yaml") or {}
    pods: dict[str, Any] = {}
    if meta["webhook"] == "binding":
        subject, kind, reviewed, old = (
            "binding",
            BINDING_KIND,
            _load(directory / "binding.yaml"),
            None,
        )
        bound = _optional(directory / "pod.yaml")
        name = str((reviewed.get("metadata") or {}).get("name") or "")
        if bound is not None:
            pods[f"{namespace}/{name}"] = bound
    elif (directory / "object.yaml").exists():
        subject, reviewed = "object", _load(directory / "object.yaml")
        kind, old = GroupVersionKind.of(reviewed), _optional(directory / "old-object.yaml")
    else:
        subject, kind, reviewed = "pod", POD_KIND, _load(directory / "pod.yaml")
        old = _optional(directory / "old-pod.yaml")
    _pad(reviewed, meta.get("padding") or [])
    request = Request(
        kind=kind,
        operation=Operation(meta.get("operation", "CREATE")),
        namespace=namespace,
        object=reviewed,
        old_object=old,
        sub_resource="binding" if subject == "binding" else "",
        name=str((reviewed.get("metadata") or {}).get("name") or "")
        if subject == "binding"
        else "",
        requester=requester_from_user_info(meta.get("userInfo")),
    )
    facts = ClusterFacts.from_data(
        nodes=cluster.get("nodes") or {},
        local_claims=cluster.get("localVolumeClaims") or [],
        pods=pods,
        owners=cluster.get("owners") or {},
    )
    return Case(directory.name, directory, meta["webhook"], subject, policy, request, facts)


def all_cases() -> list[Path]:
    return sorted(p for p in CASES_DIR.iterdir() if (p / "case.yaml").exists())


def verdict_of(case: Case) -> Verdict:
    return review(case.request, case.policy, case.facts, case.phase)


def run_mutate(case: Case) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """(admitted pod or object, decision summary, patch) as the mutating webhook gives them."""
    mutation = verdict_of(case).mutation
    admitted = mutation.patched if mutation and mutation.patched is not None else case.reviewed
    patch = mutation.patch() if mutation else []
    if case.subject == "object":
        templates = mutation.templates if mutation else ()
        summary: dict[str, Any] = {
            "templates": [
                {"path": template.path, **_mutation_summary(template.decision)}
                for template in templates
            ]
        }
        return admitted, summary, patch
    summary = {
        "rule": mutation.rules[0].value if mutation and mutation.rules else None,
        "mode": str(mutation.mode) if mutation else "off",
        "changes": [
            change.detail
            for change in (
                *(mutation.changes if mutation else ()),
                *(c for audited in (mutation.audited if mutation else ()) for c in audited.changes),
            )
        ],
        "warnings": list(mutation.warnings if mutation else ()),
    }
    return admitted, summary, patch


def _mutation_summary(decision: MutationDecision) -> dict[str, Any]:
    return {
        "rule": decision.rule.value if decision.rule else None,
        "mode": str(decision.mode),
        "changes": [change.detail for change in decision.changes],
        "warnings": list(decision.warnings),
    }


def run_validate(case: Case) -> dict[str, Any]:
    """The decision of the validating webhook (for a binding, of the binding check)."""
    verdict = verdict_of(case)
    return {
        "allowed": verdict.allowed,
        "violations": [
            {"rule": v.rule.value, "mode": str(v.mode), "field": v.field, "message": v.message()}
            for v in verdict.violations
        ],
        "warnings": list(verdict.validation_warnings),
    }


def run_response(case: Case) -> dict[str, Any]:
    """The webhook's answer as the API server receives it, with its outcome's labels."""
    try:
        verdict = verdict_of(case)
        response, outcome = respond(verdict, case.request, case.phase)
    except (Malformed, BadReview) as error:
        problems = error.problems if isinstance(error, Malformed) else [str(error)]
        return {"httpStatus": 400, "problems": problems}
    answer: dict[str, Any] = dict(response)
    if "patch" in answer:
        answer["patch"] = json.loads(base64.b64decode(answer["patch"]))
    answer["outcome"] = {
        "result": outcome.result.value,
        "mode": str(outcome.mode),
        "rule": outcome.rule,
        **({"exemption": outcome.exemption} if outcome.exemption else {}),
    }
    return answer


def expected_form(case: Case, value: Any) -> Any:
    """An output as the expected files hold it: the policy revision replaced by REVISION."""
    return without_revision(value, case.policy.revision)
