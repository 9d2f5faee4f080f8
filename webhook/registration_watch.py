"""Following the live webhook registration, so the server knows what it will be sent.

The gunicorn master watches spotguard's MutatingWebhookConfiguration and
ValidatingWebhookConfiguration (by name) and checks them against the policy
(:func:`webhook.registration.coverage_problems`) through the policy store's gate:

- a policy revision that needs reviews the live registration does not send is refused
  like an invalid one (last good policy kept, ``/readyz`` shows ``policyStale`` and the
  reason, a ``PolicyRefused`` Event, the reload metric), and tried again as soon as the
  registration changes, so applying the registration rendered for it lets it in;
- if the policy in force is not covered (the registration was narrowed, or the server
  started that way), it keeps serving and says so: ``/readyz`` keeps answering 200 with
  ``registrationCoversPolicy: false`` and the gaps, the log has an error and
  ``spotguard_registration_covers_policy`` is 0. Failing readiness or refusing to start
  would not help: with failurePolicy Ignore an unready webhook is skipped for every
  review, not only for those the registration misses.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from policies.model import Policy
from webhook.kube_watch import run_watch
from webhook.policy_store import PolicyStore
from webhook.registration import coverage_problems

log = logging.getLogger("spotguard.registration")

KINDS = ("mutating", "validating")


class RegistrationWatch:
    """Both webhook configurations called ``name``, as the API server has them (plain JSON,
    in the API's own field names)."""

    def __init__(self, name: str, store: PolicyStore, api: Any) -> None:
        self._name = name
        self._store = store
        self._api = api
        self._configs: dict[str, dict[str, Any] | None] = dict.fromkeys(KINDS)
        self._known: set[str] = set()
        self._stop = threading.Event()

    def gate(self, policy: Policy) -> list[str] | None:
        """What the live registration misses for ``policy``; None while it is unknown."""
        if self._known != set(KINDS):
            return None
        return coverage_problems(self._configs["mutating"], self._configs["validating"], policy)

    def _list_function(self, kind: str) -> Any:
        return getattr(self._api, f"list_{kind}_webhook_configuration")

    def update(self, kind: str, config: dict[str, Any] | None) -> None:
        """Take a new state of one configuration (None: it does not exist); tell the store."""
        self._configs[kind] = config
        self._known.add(kind)
        self._store.gate_changed()

    def load_initial(self) -> None:
        """Read both configurations once and start judging policies by them (call before
        the first policy loads, so it is judged too). A list by name, like the watch: the
        server's RBAC grants list and watch of these two objects, and no get."""
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        for kind in KINDS:
            try:
                response = self._list_function(kind)(
                    field_selector=f"metadata.name={self._name}",
                    _preload_content=False,
                    _request_timeout=(5, 30),
                )
                items = json.loads(response.data).get("items") or []
            except ApiException as error:
                log.warning(
                    "cannot read %s webhook configuration %s: %s %s",
                    kind, self._name, error.status, error.reason,
                )  # fmt: skip
                continue
            self._configs[kind] = items[0] if items else None
            self._known.add(kind)
        self._store.set_gate(self.gate)

    def start(self) -> None:
        for kind in KINDS:
            threading.Thread(
                target=self._run, args=(kind,), name=f"registration-{kind}", daemon=True
            ).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self, kind: str) -> None:
        run_watch(
            f"{kind} webhook configuration {self._name}",
            self._list_function(kind),
            _Target(self, kind),
            self._stop,
            field_selector=f"metadata.name={self._name}",
        )


class _Target:
    """A watch target for one configuration: its listing and events, as updates."""

    def __init__(self, watch: RegistrationWatch, kind: str) -> None:
        self._watch = watch
        self._kind = kind

    def replace(self, items: list[dict[str, Any]]) -> None:
        self._watch.update(self._kind, items[0] if items else None)

    def apply(self, kind: str, obj: dict[str, Any]) -> None:
        self._watch.update(self._kind, None if kind == "DELETED" else obj)


class Sources:
    """Several background sources started together by the gunicorn master."""

    def __init__(self, *sources: Any) -> None:
        self._sources = [s for s in sources if s is not None]

    def start(self) -> None:
        for source in self._sources:
            source.start()
