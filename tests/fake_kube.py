"""An in-memory stand-in for the Kubernetes API, behind :class:`webhook.kube_json.KubeJSON`.

For unit tests of the audit's logic (what is listed, judged, written, and when), with the
API's own rules where the code depends on them: list pagination with ``limit`` and
``continue`` (and a 410 for an expired token), optimistic concurrency on ``PUT``
(resourceVersion, 409 on a stale one), 409 on creating what exists, 404 on what does not,
server-side apply creating or replacing, label selectors by key or ``key=value``. List
items carry no apiVersion or kind, as the real API's do not. The end-to-end tests run the
same code against a real kube-apiserver.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Iterable
from typing import Any

from kubernetes.client.exceptions import ApiException

from webhook.kube_json import APPLY_PATCH, JSONObject, KubeJSON

GROUPS = {
    "apps": ["v1"],
    "batch": ["v1"],
    "coordination.k8s.io": ["v1"],
    "wgpolicyk8s.io": ["v1alpha2"],
}
RESOURCES = {
    ("apps", "v1"): [("deployments", "Deployment"), ("statefulsets", "StatefulSet"),
                     ("replicasets", "ReplicaSet"), ("daemonsets", "DaemonSet")],
    ("batch", "v1"): [("jobs", "Job"), ("cronjobs", "CronJob")],
    ("coordination.k8s.io", "v1"): [("leases", "Lease")],
    ("wgpolicyk8s.io", "v1alpha2"): [("policyreports", "PolicyReport")],
}  # fmt: skip
CLUSTER_SCOPED = {"nodes", "namespaces", "persistentvolumes"}


def _error(status: int, reason: str) -> ApiException:
    return ApiException(status=status, reason=reason)


class FakeKube(KubeJSON):
    """Objects by (base, resource, namespace, name); ``calls`` records every request."""

    def __init__(self, *, policy_reports: bool = True) -> None:
        self.objects: dict[tuple[str, str, str, str], JSONObject] = {}
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.policy_reports = policy_reports
        self.expire_continue_once = False
        self.offer_continue = True
        self._versions = itertools.count(1)
        self._uids = itertools.count(1)

    # -- populating ------------------------------------------------------------------

    def add(self, api_version: str, resource: str, obj: JSONObject) -> JSONObject:
        metadata = obj.setdefault("metadata", {})
        metadata.setdefault("uid", f"uid-{next(self._uids)}")
        metadata["resourceVersion"] = str(next(self._versions))
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        key = (base, resource, metadata.get("namespace", ""), metadata["name"])
        self.objects[key] = copy.deepcopy(obj)
        return obj

    def add_all(self, api_version: str, resource: str, objs: Iterable[JSONObject]) -> None:
        for obj in objs:
            self.add(api_version, resource, obj)

    def stored(self, api_version: str, resource: str, namespace: str, name: str) -> JSONObject:
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        return self.objects[(base, resource, namespace, name)]

    # -- the API ---------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, Any]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        params = dict(query or [])
        self.calls.append((method, path, params))
        if path == "/apis":
            return {"groups": [self._group(name) for name in GROUPS
                               if self.policy_reports or name != "wgpolicyk8s.io"]}  # fmt: skip
        parts = path.strip("/").split("/")
        base_length = 2 if parts[0] == "api" else 3
        base = "/" + "/".join(parts[:base_length])
        rest = parts[base_length:]
        if not rest:
            return self._discovery(base)
        if base == "/apis/wgpolicyk8s.io/v1alpha2" and not self.policy_reports:
            raise _error(404, "Not Found")
        namespace = ""
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        resource = rest[0]
        name = rest[1] if len(rest) > 1 else None
        if name is None:
            if method == "GET":
                return self._list(base, resource, namespace, params)
            if method == "POST":
                return self._create(base, resource, namespace, body)
            raise _error(405, "Method Not Allowed")
        key = (base, resource, namespace, name)
        if method == "GET":
            if key not in self.objects:
                raise _error(404, "Not Found")
            return copy.deepcopy(self.objects[key])
        if method == "PUT":
            return self._replace(key, body)
        if method == "PATCH" and content_type == APPLY_PATCH:
            return self._apply(key, body)
        if method == "DELETE":
            if self.objects.pop(key, None) is None:
                raise _error(404, "Not Found")
            return {}
        raise _error(405, "Method Not Allowed")

    def _group(self, name: str) -> JSONObject:
        versions = [{"groupVersion": f"{name}/{v}", "version": v} for v in GROUPS[name]]
        return {"name": name, "versions": versions, "preferredVersion": versions[0]}

    def _discovery(self, base: str) -> JSONObject:
        group, _, version = base.removeprefix("/apis/").partition("/")
        found = RESOURCES.get((group, version))
        if found is None:
            raise _error(404, "Not Found")
        return {"resources": [{"name": r, "kind": k, "namespaced": True} for r, k in found]}

    def _list(self, base: str, resource: str, namespace: str, params: dict[str, Any]) -> Any:
        items = [
            obj
            for (b, r, ns, _), obj in sorted(self.objects.items())
            if (b, r) == (base, resource) and (not namespace or ns == namespace)
            and _selected(obj, params.get("labelSelector"))
        ]  # fmt: skip
        limit = int(params.get("limit") or 0) or len(items) or 1
        token = params.get("continue")
        if token and self.expire_continue_once:
            self.expire_continue_once = False
            expired = _error(410, "Gone")
            offered = {"metadata": {"continue": f"{token}"}} if self.offer_continue else {}
            expired.body = json.dumps({"kind": "Status", "code": 410, **offered})
            raise expired
        start = int(token or 0)
        page = [_as_listed(obj) for obj in items[start : start + limit]]
        more = start + limit < len(items)
        return {"items": page, "metadata": {"continue": str(start + limit) if more else ""}}

    def _create(self, base: str, resource: str, namespace: str, body: JSONObject) -> JSONObject:
        key = (base, resource, namespace, body["metadata"]["name"])
        if key in self.objects:
            raise _error(409, "Conflict")
        stored = copy.deepcopy(body)
        if namespace:
            stored["metadata"].setdefault("namespace", namespace)
        stored["metadata"]["uid"] = f"uid-{next(self._uids)}"
        stored["metadata"]["resourceVersion"] = str(next(self._versions))
        self.objects[key] = stored
        return copy.deepcopy(stored)

    def _replace(self, key: tuple[str, str, str, str], body: JSONObject) -> JSONObject:
        current = self.objects.get(key)
        if current is None:
            raise _error(404, "Not Found")
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise _error(409, "Conflict")
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(next(self._versions))
        self.objects[key] = stored
        return copy.deepcopy(stored)

    def _apply(self, key: tuple[str, str, str, str], body: JSONObject) -> JSONObject:
        stored = copy.deepcopy(body)
        previous = self.objects.get(key)
        stored["metadata"]["uid"] = (
            previous["metadata"]["uid"] if previous else f"uid-{next(self._uids)}"
        )
        stored["metadata"]["resourceVersion"] = str(next(self._versions))
        self.objects[key] = stored
        return copy.deepcopy(stored)


def _selected(obj: JSONObject, selector: str | None) -> bool:
    if not selector:
        return True
    labels = (obj.get("metadata") or {}).get("labels") or {}
    key, _, value = selector.partition("=")
    return key in labels and (not value or labels[key] == value)


def _as_listed(obj: JSONObject) -> JSONObject:
    listed = copy.deepcopy(obj)
    listed.pop("apiVersion", None)
    listed.pop("kind", None)
    return listed
