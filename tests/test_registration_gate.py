"""The policy store's gate: revisions the live registration does not cover are refused
while a covered policy is in force, and let in once the registration covers them."""

from __future__ import annotations

import json
from typing import Any

from flask.testing import FlaskClient

from policies.loader import parse_policy_text
from webhook.app import WebhookSettings, create_app
from webhook.policy_publish import PublishedPolicy, publish
from webhook.policy_store import PolicyState, PolicyStore
from webhook.registration import render
from webhook.registration_watch import RegistrationWatch

DEFAULT = ""
AKS = "spotNodes: {presets: [aks]}\n"
CUSTOM = "spotNodes: {presets: [aks], labels: [{key: pool, values: [cheap]}]}\n"


class _Response:
    def __init__(self, items: list[Any]) -> None:
        self.data = json.dumps({"items": items}).encode()


class Api:
    """The two listings the watch makes at start, from a dict of configurations."""

    def __init__(self, configs: dict[str, Any]) -> None:
        self.configs = configs

    def list_mutating_webhook_configuration(self, **_: Any) -> _Response:
        return _Response([self.configs["mutating"]])

    def list_validating_webhook_configuration(self, **_: Any) -> _Response:
        return _Response([self.configs["validating"]])


def _watch(store: PolicyStore, policy_text: str) -> tuple[RegistrationWatch, Api]:
    mutating, validating = render(parse_policy_text(policy_text))
    api = Api({"mutating": mutating, "validating": validating})
    watch = RegistrationWatch("spotguard", store, api)
    watch.load_initial()
    return watch, api


def _register(watch: RegistrationWatch, policy_text: str) -> None:
    """What the watch does on an event: take the new configurations, tell the store."""
    mutating, validating = render(parse_policy_text(policy_text))
    watch.update("mutating", mutating)
    watch.update("validating", validating)


def _revision(text: str) -> str:
    return parse_policy_text(text).revision


def test_a_revision_the_registration_does_not_cover_is_refused_until_it_does() -> None:
    store = PolicyStore(PolicyState(None, "test"))
    watch, _ = _watch(store, AKS)
    assert store.load_text(AKS, "v1")
    assert store.snapshot().registration == ()

    assert not store.load_text(CUSTOM, "v2")  # a spot label the registration does not test
    state = store.snapshot()
    assert state.policy is not None and state.policy.revision == _revision(AKS)
    assert state.stale and state.error is not None
    expected = "webhook registration: validating: spot labels: also ('pool', 'cheap')"
    assert expected in state.error.problems

    _register(watch, CUSTOM)  # the registration rendered for it is applied
    state = store.snapshot()
    assert state.policy is not None and state.policy.revision == _revision(CUSTOM)
    assert not state.stale and state.registration == ()


def test_a_narrowed_registration_is_reported_and_the_policy_keeps_serving() -> None:
    store = PolicyStore(PolicyState(None, "test"))
    watch, _ = _watch(store, DEFAULT)
    assert store.load_text(DEFAULT, "v1")
    _register(watch, AKS)  # someone applied a narrower registration
    state = store.snapshot()
    assert state.policy is not None and state.policy.revision == _revision(DEFAULT)
    assert state.registration and any("spot taint keys" in p for p in state.registration)
    # A revision is not refused for it while the policy in force is not covered either.
    assert store.load_text("mode: audit\n", "v2")
    assert store.snapshot().registration


def test_the_first_policy_is_served_even_when_not_covered() -> None:
    store = PolicyStore(PolicyState(None, "test"))
    _watch(store, AKS)
    assert store.load_text(DEFAULT, "v1")
    assert store.snapshot().registration


def test_unknown_registration_judges_nothing() -> None:
    store = PolicyStore(PolicyState(None, "test"))
    assert store.load_text(CUSTOM, "v1")
    assert store.snapshot().registration is None


def _readyz(store: PolicyStore, tmp_path: Any) -> tuple[int, dict[str, Any]]:
    publish(store.snapshot(), tmp_path)
    app = create_app(WebhookSettings(policies=PublishedPolicy(tmp_path)))
    client: FlaskClient = app.test_client()
    response = client.get("/readyz")
    return response.status_code, response.get_json()


def test_readyz_reports_coverage_without_failing(tmp_path: Any) -> None:
    store = PolicyStore(PolicyState(None, "test"))
    watch, _ = _watch(store, DEFAULT)
    store.load_text(DEFAULT, "v1")
    status, body = _readyz(store, tmp_path)
    assert status == 200
    assert body["registrationCoversPolicy"] is True and body["registrationProblems"] == []
    _register(watch, AKS)
    status, body = _readyz(store, tmp_path)
    assert status == 200  # an unready webhook would be skipped for every review
    assert body["registrationCoversPolicy"] is False and body["registrationProblems"]
