"""Where policy revisions come from: a local file, or a ConfigMap watched through the API.

Both feed a :class:`PolicyStore`, which validates each revision and keeps the last good
one. Both run in one background thread of the gunicorn master (see policy_publish).
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from webhook.kube_watch import run_watch
from webhook.policy_store import PolicyStore

log = logging.getLogger("spotguard.policy")

DEFAULT_CONFIGMAP_KEY = "policy.yaml"


class FilePolicySource:
    """Polls a policy file once a second; a changed file is a new revision."""

    def __init__(self, path: Path, store: PolicyStore, interval: float = 1.0) -> None:
        self._path = path
        self._store = store
        self._interval = interval
        self._stop = threading.Event()
        self._seen = self._stamp()

    def _stamp(self) -> tuple[int, int] | None:
        try:
            stat = self._path.stat()
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    def check(self) -> None:
        """Load the file if it changed since the last look (a missing file keeps the policy)."""
        stamp = self._stamp()
        if stamp is None or stamp == self._seen:
            return
        self._seen = stamp
        try:
            text = self._path.read_text("utf-8")
        except OSError as error:
            self._store.refuse(
                [f"(document): cannot read {self._path}: {error.strerror}"], str(self._path)
            )
            return
        self._store.load_text(text, str(self._path))

    def start(self) -> None:
        threading.Thread(target=self._run, name="policy-file", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.check()


class ConfigMapPolicySource:
    """Watches one ConfigMap with the kubernetes client and loads each revision's key.

    A refused revision is also recorded as a Warning Event on the ConfigMap, so
    ``kubectl describe configmap`` shows why the edit did not take effect. The Event's
    name is derived from the ConfigMap's resourceVersion, so several replicas refusing
    the same revision create it once.
    """

    def __init__(
        self,
        namespace: str,
        name: str,
        store: PolicyStore,
        api: Any,
        *,
        key: str = DEFAULT_CONFIGMAP_KEY,
        component: str = "spotguard",
    ) -> None:
        self._namespace = namespace
        self._name = name
        self._store = store
        self._api = api
        self._key = key
        self._component = component
        self._stop = threading.Event()
        self._last_version: str | None = None

    @property
    def description(self) -> str:
        return f"configmap {self._namespace}/{self._name}"

    def apply(self, configmap: dict[str, Any]) -> None:
        """Load one ConfigMap revision (the object as the API serves it, as JSON)."""
        version = (configmap.get("metadata") or {}).get("resourceVersion")
        if version == self._last_version:
            return
        self._last_version = version
        source = f"{self.description} (resourceVersion {version})"
        text = (configmap.get("data") or {}).get(self._key)
        if text is None:
            problems = [f"(document): the ConfigMap has no key {self._key!r}"]
            self._store.refuse(problems, source)
            self._record_refusal(configmap, problems)
        elif not self._store.load_text(text, source):
            error = self._store.snapshot().error
            self._record_refusal(configmap, list(error.problems) if error else [])

    def load_initial(self) -> None:
        """Read the ConfigMap once, synchronously, before serving (a missing one is logged)."""
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        try:
            response = self._api.read_namespaced_config_map(
                self._name, self._namespace, _preload_content=False
            )
            self.apply(json.loads(response.data))
        except ApiException as error:
            log.error("cannot read %s: %s %s", self.description, error.status, error.reason)

    def start(self) -> None:
        threading.Thread(target=self._run, name="policy-configmap", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    # The watch's target (webhook.kube_watch.WatchTarget): a listing holds this ConfigMap
    # or nothing; an event is a revision of it.
    def replace(self, items: list[dict[str, Any]]) -> None:
        if items:
            self.apply(items[0])
        else:
            log.warning("%s not found; keeping the policy in force", self.description)

    def apply_event(self, kind: str, configmap: dict[str, Any]) -> None:
        if kind in ("ADDED", "MODIFIED"):
            self.apply(configmap)
        elif kind == "DELETED":
            log.warning("%s deleted; keeping the policy in force", self.description)

    def _run(self) -> None:
        run_watch(
            self.description,
            self._api.list_namespaced_config_map,
            _Target(self),
            self._stop,
            namespace=self._namespace,
            field_selector=f"metadata.name={self._name}",
        )

    def _record_refusal(self, configmap: Any, problems: list[str]) -> None:
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        metadata = configmap.get("metadata") or {}
        version = metadata.get("resourceVersion")
        now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{self._name}.policy-refused.{version}",
                "namespace": self._namespace,
            },
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": self._name,
                "namespace": self._namespace,
                "uid": metadata.get("uid"),
                "resourceVersion": version,
            },
            "reason": "PolicyRefused",
            "type": "Warning",
            "message": ("spotguard kept the previous policy: " + "; ".join(problems))[:1024],
            "source": {"component": self._component},
            "reportingComponent": self._component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self._api.create_namespaced_event(self._namespace, event)
        except ApiException as error:
            if error.status != 409:  # 409: another replica recorded it already
                log.warning(
                    "cannot record the refusal as an Event: %s %s", error.status, error.reason
                )


class _Target:
    """Adapts the source to the watch loop's ``replace``/``apply`` (its own ``apply``
    takes one ConfigMap)."""

    def __init__(self, source: ConfigMapPolicySource) -> None:
        self._source = source

    def replace(self, items: list[dict[str, Any]]) -> None:
        self._source.replace(items)

    def apply(self, kind: str, obj: dict[str, Any]) -> None:
        self._source.apply_event(kind, obj)
