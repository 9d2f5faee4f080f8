"""Leader election on a ``coordination.k8s.io/v1`` Lease: one replica audits at a time.

Why not ``kubernetes.leaderelection``: it exits the process (``sys.exit``) on a bad
setting, its loop cannot be stopped or its lease released on shutdown, it campaigns only
once (a replica that lost the lease never tries again), and the work it guards keeps
running after the lease is lost. This one is a single step, called periodically:

- the holder renews (an update carrying the resourceVersion it read, so two writers
  cannot both win: the loser gets 409);
- another candidate takes the Lease over only once the holder has not renewed it for
  ``leaseDurationSeconds``, measured on the candidate's own clock from the moment it
  last saw the Lease change (clocks of different machines are never compared), or at
  once when the holder released it;
- the holder counts itself leader only until ``renew_deadline`` after its last
  successful renewal, which is shorter than the lease duration: it stops acting before
  anyone else may start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from webhook.kube_json import JSONObject, KubeJSON

log = logging.getLogger("spotguard.lease")


def _micro_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    """Campaign for (and hold) one Lease with :meth:`step`; ask :meth:`leading`."""

    def __init__(
        self,
        kube: KubeJSON,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_seconds: int = 15,
        renew_deadline: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < renew_deadline < lease_seconds:
            raise ValueError("renew_deadline must be positive and shorter than lease_seconds")
        self._kube = kube
        self._path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
        self._collection = self._path.rpartition("/")[0]
        self._name = name
        self.identity = identity
        self._lease_seconds = lease_seconds
        self._renew_deadline = renew_deadline
        self._clock = clock
        self._renewed_at: float | None = None
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0

    def leading(self) -> bool:
        """Whether this candidate holds the Lease, renewed recently enough to act on it."""
        renewed = self._renewed_at
        return renewed is not None and self._clock() - renewed < self._renew_deadline

    def step(self) -> bool:
        """Try once to acquire or renew; whether this candidate leads now."""
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415
        from urllib3.exceptions import HTTPError  # noqa: PLC0415

        try:
            self._try()
        except ApiException as error:
            if error.status != 409:  # 409: another candidate wrote first; not an error
                log.warning("lease %s: %s %s", self._name, error.status, error.reason)
        except (HTTPError, OSError) as error:  # unreachable: retry; lead until the deadline
            log.warning("lease %s: %s", self._name, error)
        return self.leading()

    def _try(self) -> None:
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        now = self._clock()
        try:
            lease: JSONObject = self._kube.get(self._path)
        except ApiException as error:
            if error.status != 404:
                raise
            self._create(now)
            return
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        seen = (holder, spec.get("renewTime"), lease["metadata"].get("resourceVersion"))
        if seen != self._observed:
            self._observed, self._observed_at = seen, now
        if holder == self.identity:
            self._write(lease, spec, now, transition=False)
            return
        self._renewed_at = None
        duration = spec.get("leaseDurationSeconds") or self._lease_seconds
        if holder and now - self._observed_at < duration:
            return  # held by someone who renewed it within its duration
        log.info("lease %s: taking over from %r", self._name, holder or "(released)")
        self._write(lease, spec, now, transition=True)

    def _create(self, now: float) -> None:
        stamp = _micro_time()
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self._name},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self._lease_seconds,
                "acquireTime": stamp,
                "renewTime": stamp,
                "leaseTransitions": 0,
            },
        }
        self._kube.request("POST", self._collection, body=body)
        self._renewed_at = now
        log.info("lease %s: created, %s leads", self._name, self.identity)

    def _write(self, lease: JSONObject, spec: JSONObject, now: float, *, transition: bool) -> None:
        stamp = _micro_time()
        new_spec = {
            **spec,
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self._lease_seconds,
            "renewTime": stamp,
        }
        if transition:
            new_spec["acquireTime"] = stamp
            new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        self._kube.request("PUT", self._path, body={**lease, "spec": new_spec})
        if transition:
            log.info("lease %s: %s leads", self._name, self.identity)
        self._renewed_at = now

    def release(self) -> None:
        """Give the Lease up (on shutdown) so another replica need not wait for it to expire."""
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415
        from urllib3.exceptions import HTTPError  # noqa: PLC0415

        if self._renewed_at is None:
            return
        self._renewed_at = None
        try:
            lease: JSONObject = self._kube.get(self._path)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") == self.identity:
                released = {**spec, "holderIdentity": "", "leaseDurationSeconds": 1}
                self._kube.request("PUT", self._path, body={**lease, "spec": released})
                log.info("lease %s: released by %s", self._name, self.identity)
        except (ApiException, HTTPError, OSError) as error:
            log.warning("lease %s: not released: %s", self._name, error)
