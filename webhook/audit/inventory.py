"""What the audit reads from the cluster: the objects to judge, a page at a time, and the
facts to judge them by.

- Objects: pods, and every workload kind of the policy that the cluster serves (found by
  discovery; a CRD that is not installed is noted and skipped). Lists are paginated and
  each page is judged and dropped before the next is fetched, so memory stays that of a
  page whatever the size of the cluster.
- Facts (:class:`~policies.decisions.ClusterFacts`), from listings made first: node labels
  (is a pod's node spot?), node and DaemonSet uids (an exemption counts only where the
  owner a pod names exists with that uid), and the claims bound to a ``local``
  PersistentVolume. Only these small maps are held.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from policies.decisions import ClusterFacts
from policies.model import Policy, WorkloadKind
from webhook.kube_json import JSONObject, KubeJSON

log = logging.getLogger("spotguard.audit")

#: Namespaces labelled so are never reviewed by the webhooks (their namespaceSelector),
#: so the audit leaves them alone too.
IGNORE_LABEL = "spotguard.dev/ignore"
PAGE_SIZE = 500


@dataclass(frozen=True)
class Collection:
    """One kind to list: its apiVersion and kind (list items carry neither) and its path."""

    api_version: str
    kind: str
    resource: str

    def path(self, namespace: str | None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        scope = f"/namespaces/{namespace}" if namespace else ""
        return f"{base}{scope}/{self.resource}"


PODS = Collection("v1", "Pod", "pods")


class Inventory:
    """Lists for one audit run; ``namespace`` limits it to one namespace (None: all)."""

    def __init__(
        self, kube: KubeJSON, namespace: str | None = None, page_size: int = PAGE_SIZE
    ) -> None:
        self._kube = kube
        self._namespace = namespace
        self._page_size = page_size
        self._groups: dict[str, JSONObject] | None = None

    def pages(self, collection: Collection) -> Iterator[list[JSONObject]]:
        """The collection's objects, a page at a time, each with its apiVersion and kind."""
        for page in self._kube.pages(collection.path(self._namespace), self._page_size):
            for item in page:
                item["apiVersion"] = collection.api_version
                item["kind"] = collection.kind
            yield page

    def workload_collections(self, policy: Policy) -> tuple[list[Collection], list[str]]:
        """The policy's workload kinds this cluster serves, and the names of those it does
        not (CRDs not installed)."""
        found: list[Collection] = []
        missing: list[str] = []
        for workload in policy.workloads:
            if not workload.templates:
                continue
            version = self._served_version(workload)
            name = f"{workload.kind}.{workload.group}" if workload.group else workload.kind
            if version is None:
                missing.append(name)
                continue
            api_version = f"{workload.group}/{version}" if workload.group else version
            found.append(Collection(api_version, workload.kind, workload.resource))
        return found, missing

    def _served_version(self, workload: WorkloadKind) -> str | None:
        """The version to list a kind in: the group's preferred one if the kind serves it."""
        group = self._api_groups().get(workload.group)
        if group is None:
            return None
        preferred = (group.get("preferredVersion") or {}).get("version")
        versions = [v["version"] for v in group.get("versions") or []]
        ordered = [preferred, *versions] if preferred else versions
        for version in ordered:
            if workload.serves(version) and self._serves(workload, version):
                return str(version)
        return None

    def _api_groups(self) -> dict[str, JSONObject]:
        if self._groups is None:
            listing = self._kube.get("/apis")
            self._groups = {g["name"]: g for g in listing.get("groups") or []}
            self._groups[""] = {"versions": [{"version": "v1"}], "preferredVersion": {}}
        return self._groups

    def _serves(self, workload: WorkloadKind, version: str) -> bool:
        base = f"/apis/{workload.group}/{version}" if workload.group else f"/api/{version}"
        resources = self._kube.get(base).get("resources") or []
        return any(
            r.get("name") == workload.resource and r.get("kind") == workload.kind for r in resources
        )

    def ignored_namespaces(self) -> frozenset[str]:
        listing = self._kube.get("/api/v1/namespaces", labelSelector=IGNORE_LABEL)
        return frozenset(ns["metadata"]["name"] for ns in listing.get("items") or [])

    def facts(self) -> ClusterFacts:
        """Node labels, node and DaemonSet uids, and local claims, from the cluster now."""
        labels: dict[str, Mapping[str, str]] = {}
        node_uids: dict[str, str] = {}
        for page in self._kube.pages("/api/v1/nodes", self._page_size):
            for node in page:
                metadata = node.get("metadata") or {}
                labels[metadata["name"]] = metadata.get("labels") or {}
                node_uids[metadata["name"]] = metadata.get("uid") or ""
        daemon_sets: dict[tuple[str, str], str] = {}
        path = Collection("apps/v1", "DaemonSet", "daemonsets").path(self._namespace)
        for page in self._kube.pages(path, self._page_size):
            for daemon_set in page:
                metadata = daemon_set.get("metadata") or {}
                daemon_sets[(metadata.get("namespace", ""), metadata["name"])] = metadata["uid"]

        def owner_uid(kind: str, namespace: str, name: str) -> str | None:
            if kind == "Node":
                return node_uids.get(name)
            if kind == "DaemonSet":
                return daemon_sets.get((namespace, name))
            return None

        local = self._local_claims()
        return ClusterFacts(
            node_labels=labels.get,
            local_claims=lambda namespace, claim: (namespace, claim) in local,
            owner_uid=owner_uid,
        )

    def _local_claims(self) -> frozenset[tuple[str, str]]:
        """(namespace, name) of the claims bound to a ``local`` PersistentVolume; only
        those are kept, out of listings of volumes and claims."""
        local_volumes = {
            volume["metadata"]["name"]
            for page in self._kube.pages("/api/v1/persistentvolumes", self._page_size)
            for volume in page
            if (volume.get("spec") or {}).get("local") is not None
        }
        if not local_volumes:
            return frozenset()
        path = Collection("v1", "PersistentVolumeClaim", "persistentvolumeclaims").path(
            self._namespace
        )
        return frozenset(
            (claim["metadata"].get("namespace", ""), claim["metadata"]["name"])
            for page in self._kube.pages(path, self._page_size)
            for claim in page
            if (claim.get("spec") or {}).get("volumeName") in local_volumes
        )
