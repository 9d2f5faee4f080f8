"""The simulated nodes on a running API server: create the Node objects of
:data:`controlplane.nodegroups.NODE_GROUPS` (kwok then keeps them Ready) and wait until
each is Ready and tainted as its group says."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from controlplane.nodegroups import NODE_GROUPS, node_manifest, simulated_node
from controlplane.polling import WaitTimeout, wait_for

#: An authenticated API call: (method, path, body) -> (HTTP status, decoded JSON).
Request = Callable[[str, str, Any], tuple[int, Any]]
Taints = set[tuple[str, str, str]]


class SimulatedNodeError(RuntimeError):
    """A node could not be created, or did not become Ready and tainted in time."""


def create_simulated_nodes(request: Request) -> None:
    version = _server_version(request)
    for group in NODE_GROUPS:
        for node in group.nodes:
            status, body = request("POST", "/api/v1/nodes", node_manifest(group, node, version))
            if status not in (201, 409):
                raise SimulatedNodeError(f"creating node {node.name}: HTTP {status} {body}")


def wait_simulated_nodes_ready(
    request: Request, timeout: float, *, fix_taints: bool, alive: Callable[[], None]
) -> None:
    """Wait until every simulated node is Ready with exactly its group's taints.

    ``fix_taints``: without the node-lifecycle controller nobody removes the not-ready
    taint that admission put on a new node, so put the expected taints back ourselves.
    """
    wanted = {
        node.name: {(t.key, t.value, t.effect) for t in node.taints}
        for group in NODE_GROUPS
        for node in group.nodes
    }
    last: list[str] = []

    def done() -> bool:
        nonlocal last
        last = _not_ready(request, wanted, fix_taints)
        return not last

    try:
        wait_for(done, timeout, "simulated nodes", 0.2, alive=alive)
    except WaitTimeout as err:
        raise SimulatedNodeError(f"{err}: not Ready or tainted as expected: {last}") from None


def _not_ready(request: Request, wanted: dict[str, Taints], fix_taints: bool) -> list[str]:
    status, body = request("GET", "/api/v1/nodes", None)
    if status != 200 or not isinstance(body, dict):
        return list(wanted)
    left = set(wanted)
    for item in body.get("items", []):
        name = item["metadata"]["name"]
        if name not in wanted:
            continue
        conditions = item.get("status", {}).get("conditions") or []
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        taints = {
            (t["key"], t.get("value", ""), t["effect"])
            for t in item.get("spec", {}).get("taints") or []
        }
        if ready and taints != wanted[name] and fix_taints:
            request(
                "PATCH",
                f"/api/v1/nodes/{name}",
                {"spec": {"taints": [t.to_api() for t in simulated_node(name).taints]}},
            )
        if ready and taints == wanted[name]:
            left.discard(name)
    return sorted(left)


def _server_version(request: Request) -> str:
    status, body = request("GET", "/version", None)
    if status == 200 and isinstance(body, dict):
        return str(body.get("gitVersion", "v0.0.0"))
    return "v0.0.0"
