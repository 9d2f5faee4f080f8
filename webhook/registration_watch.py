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
    """Both webhook configurations called ``name``, as the API server has them."""

    def __init__(self, name: str, store: PolicyStore, api: Any, api_client: Any) -> None:
        self._name = name
        self._store = store
        self._api = api
        self._client = api_client
        self._configs: dict[str, dict[str, Any] | None] = dict.fromkeys(KINDS)
        self._known: set[str] = set()
        self._stop = threading.Event()

    def gate(self, policy: Policy) -> list[str] | None:
        """What the live registration misses for ``policy``; None while it is unknown."""
        if self._known != set(KINDS):
            return None
        return coverage_problems(self._configs["mutating"], self._configs["validating"], policy)

    def _function(self, verb: str, kind: str) -> Any:
        return getattr(self._api, f"{verb}_{kind}_webhook_configuration")

    def update(self, kind: str, config: Any) -> None:
        """Take a new state of one configuration (None: it does not exist); tell the store."""
        self._set(kind, config)
        self._store.gate_changed()

    def _set(self, kind: str, config: Any) -> None:
        self._configs[kind] = (
            None if config is None else self._client.sanitize_for_serialization(config)
        )
        self._known.add(kind)

    def load_initial(self) -> None:
        """Read both configurations once and start judging policies by them (call before
        the first policy loads, so it is judged too)."""
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        for kind in KINDS:
            try:
                self._set(kind, self._function("read", kind)(self._name))
            except ApiException as error:
                if error.status == 404:
                    self._set(kind, None)
                else:
                    log.warning(
                        "cannot read %s webhook configuration %s: %s %s",
                        kind, self._name, error.status, error.reason,
                    )  # fmt: skip
        self._store.set_gate(self.gate)

    def start(self) -> None:
        for kind in KINDS:
            threading.Thread(
                target=self._run, args=(kind,), name=f"registration-{kind}", daemon=True
            ).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self, kind: str) -> None:
        def on_event(event: str, config: Any) -> None:
            self.update(kind, None if event == "DELETED" else config)

        def on_relist() -> None:
            self._set(kind, None)  # the listing says whether it exists

        run_watch(
            f"{kind} webhook configuration {self._name}",
            self._function("list", kind),
            on_event,
            self._stop,
            on_relist=on_relist,
            field_selector=f"metadata.name={self._name}",
        )


class Sources:
    """Several background sources started together by the gunicorn master."""

    def __init__(self, *sources: Any) -> None:
        self._sources = [s for s in sources if s is not None]

    def start(self) -> None:
        for source in self._sources:
            source.start()
