"""Register spotguard's webhooks with a local API server, and wait until they are live.

The registrations are what ``spotguard policy webhooks`` renders for the policy served
(the shipped ones for the shipped policy), with only the clientConfig different: a
``url`` on 127.0.0.1 instead of the in-cluster Service. A stored configuration does not
prove the API server already calls it, so :func:`wait_until_called` sends a canary pod
(dry run) until it comes back mutated.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

from controlplane.harness import ControlPlane
from policies.annotations import INJECTED
from policies.loader import default_policy
from policies.model import Policy
from testsupport.server import REPO
from webhook.registration import Endpoint, render

WEBHOOKS_FILE = REPO / "deploy" / "base" / "webhooks.yaml"


def local_registrations(
    webhook_url: str,
    ca_file: Path | None,
    policy: Policy | None = None,
    *,
    conditions: bool = True,
) -> list[dict[str, Any]]:
    """The registrations for ``policy`` (default: the built-in one), pointed at
    ``webhook_url``, trusting ``ca_file`` (None: no caBundle yet, as before ``spotguard
    certs ensure`` has run). ``conditions=False``: without match conditions, as shipped
    before they existed."""
    ca_bundle = base64.b64encode(ca_file.read_bytes()).decode() if ca_file else None
    endpoint = Endpoint(url=webhook_url, ca_bundle=ca_bundle)
    return render(policy or default_policy(), endpoint, conditions=conditions)


def register(
    cluster: ControlPlane,
    webhook_url: str,
    ca_file: Path | None,
    policy: Policy | None = None,
    *,
    conditions: bool = True,
) -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "List",
        "items": local_registrations(webhook_url, ca_file, policy, conditions=conditions),
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=True)


def unregister(cluster: ControlPlane) -> None:
    cluster.kubectl(
        "delete", "mutatingwebhookconfiguration,validatingwebhookconfiguration", "spotguard",
        "--ignore-not-found",
    )  # fmt: skip


def canary_pod(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "spotguard-canary-",
            "namespace": namespace,
            "labels": {"spotguard.dev/fault-tolerant": "true"},
        },
        "spec": {"containers": [{"name": "c", "image": "registry.example/canary:1"}]},
    }


def wait_until_called(cluster: ControlPlane, namespace: str, timeout: float = 30.0) -> float:
    """Seconds until a dry-run canary pod comes back mutated by the webhook."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        result = cluster.kubectl(
            "create", "--dry-run=server", "-o", "json", "-f", "-",
            input=json.dumps(canary_pod(namespace)),
        )  # fmt: skip
        if result.returncode == 0:
            annotations = json.loads(result.stdout)["metadata"].get("annotations") or {}
            if INJECTED in annotations:
                return time.monotonic() - started
        time.sleep(0.2)
    raise TimeoutError(f"the API server did not call the webhook within {timeout:.0f} s")
