"""Ask the API server's own code whether it would call spotguard: the webhook-match tool.

:func:`decide` hands registrations and admission requests to ``webhook-match`` (a Go
program built from this repository's control-plane module, see controlplane/tools.py),
which runs kube-apiserver's namespace/object selector, rules and matchConditions
matchers on each request and says, per webhook, whether it would be called. Tests use
it to prove the match conditions never skip a review that matters; nothing here
evaluates CEL itself.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from controlplane.webhook_match import ensure_webhook_match

JSONObject = dict[str, Any]
_ids = itertools.count()


@dataclass(frozen=True)
class Decision:
    """What the API server would do with one request: per webhook, call or not, and why."""

    id: str
    calls: Mapping[str, bool]
    reasons: Mapping[str, str]
    errors: Mapping[str, str]
    decode_error: str
    object: JSONObject | None
    old_object: JSONObject | None

    def called(self, webhook: str) -> bool:
        return bool(self.calls.get(webhook))


def request(
    obj: JSONObject | None,
    *,
    group: str = "",
    version: str = "v1",
    kind: str = "Pod",
    resource: str = "pods",
    sub_resource: str = "",
    operation: str = "CREATE",
    old: JSONObject | None = None,
    namespace: str = "team",
    namespace_labels: Mapping[str, str] | None = None,
    username: str = "alice",
    groups: Iterable[str] = ("system:authenticated",),
    name: str = "",
    registrations: Path | None = None,
) -> JSONObject:
    """One admission request as the tool reads it (a pod CREATE by default).
    ``registrations``: a file of configurations to decide it by (:func:`write_registrations`)
    instead of the matcher's own."""
    return {
        "registrations": str(registrations) if registrations else "",
        "id": str(next(_ids)),
        "operation": operation,
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": resource},
        "subResource": sub_resource,
        "namespace": namespace,
        "name": name,
        "namespaceLabels": dict(namespace_labels or {}),
        "userInfo": {"username": username, "groups": list(groups)},
        "object": obj,
        "oldObject": old,
    }


def write_registrations(registrations: Iterable[JSONObject], path: Path) -> Path:
    """Write configurations where the tool reads them (a request may name the file)."""
    path.write_text("\n---\n".join(json.dumps(item) for item in registrations))
    return path


class Matcher:
    """A running webhook-match; use as a context manager.

    Starting the tool compiles every match condition (seconds on a busy machine), so a
    test keeps one running and sends it batch after batch: decided by ``registrations``,
    or by the file each request names (each compiled once).
    """

    def __init__(
        self, registrations: Iterable[JSONObject] | None = None, *, echo: bool = False
    ) -> None:
        binary = ensure_webhook_match()
        self._tmp = tempfile.TemporaryDirectory(prefix="webhook-match-")
        command = [str(binary)] + (["-echo"] if echo else [])
        if registrations is not None:
            path = write_registrations(registrations, Path(self._tmp.name) / "registrations.yaml")
            command += ["-registrations", str(path)]
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def __enter__(self) -> Matcher:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        for stream in (self._process.stdin, self._process.stdout, self._process.stderr):
            if stream is not None:
                stream.close()
        self._process.wait(timeout=30)
        self._tmp.cleanup()

    def decide(self, requests: list[JSONObject]) -> list[Decision]:
        """The API server's call decisions for ``requests``, in order."""
        stdin, stdout = self._process.stdin, self._process.stdout
        assert stdin is not None and stdout is not None
        writer = threading.Thread(target=_write_lines, args=(stdin, requests), daemon=True)
        writer.start()
        decisions = []
        for _ in requests:
            line = stdout.readline()
            if not line:
                self._process.wait(timeout=30)
                error = self._process.stderr.read() if self._process.stderr else ""
                raise RuntimeError(f"webhook-match stopped: {error.strip()}")
            decisions.append(_decision(json.loads(line)))
        writer.join()
        return decisions


def _write_lines(stream: IO[str], requests: list[JSONObject]) -> None:
    for item in requests:
        stream.write(json.dumps(item) + "\n")
    stream.flush()


def _decision(data: JSONObject) -> Decision:
    hooks = data.get("webhooks") or {}
    return Decision(
        id=data["id"],
        calls={name: bool(d.get("call")) for name, d in hooks.items()},
        reasons={name: d.get("reason", "") for name, d in hooks.items()},
        errors={name: d["error"] for name, d in hooks.items() if d.get("error")},
        decode_error=data.get("decodeError", ""),
        object=data.get("object"),
        old_object=data.get("oldObject"),
    )


def decide(
    registrations: Iterable[JSONObject], requests: list[JSONObject], *, echo: bool = False
) -> list[Decision]:
    """The API server's call decisions for ``requests`` (one tool run)."""
    with Matcher(registrations, echo=echo) as matcher:
        return matcher.decide(requests)


def compile_errors(registrations: Iterable[JSONObject]) -> str:
    """Compile every match condition as the API server does for a new configuration and
    for a stored one; the errors, or '' when every expression compiles."""
    binary = ensure_webhook_match()
    with tempfile.TemporaryDirectory(prefix="webhook-match-") as tmp:
        path = Path(tmp) / "registrations.yaml"
        path.write_text("\n---\n".join(json.dumps(item) for item in registrations))
        result = subprocess.run(
            [str(binary), "-registrations", str(path), "-compile-only"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    if result.returncode not in (0, 1):
        raise RuntimeError(f"webhook-match failed: {result.stderr.strip()}")
    return result.stdout.strip()
