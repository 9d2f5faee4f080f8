"""Questions tests and demos ask a running control plane about its pods."""

from __future__ import annotations

import json
from typing import Any

from controlplane.harness import ControlPlane
from controlplane.polling import wait_for


def pods(cluster: ControlPlane, namespace: str, selector: str) -> list[dict[str, Any]]:
    """The pods in ``namespace`` matching label ``selector``, as the API returns them."""
    result = cluster.kubectl(
        "get", "pods", "-n", namespace, "-l", selector, "-o", "json", check=True
    )
    items: list[dict[str, Any]] = json.loads(result.stdout)["items"]
    return items


def wait_scheduled(
    cluster: ControlPlane, namespace: str, selector: str, count: int, timeout: float = 60
) -> list[dict[str, Any]]:
    """The pods matching ``selector`` once ``count`` of them are bound to a node
    (:class:`controlplane.polling.WaitTimeout` after ``timeout`` s)."""

    def bound_enough() -> list[dict[str, Any]] | None:
        found = pods(cluster, namespace, selector)
        return found if sum(bool(p["spec"].get("nodeName")) for p in found) >= count else None

    return wait_for(bound_enough, timeout, f"{count} pods {selector} scheduled", 0.3)
