"""The shipped webhook registrations, and the policy ConfigMap check they route."""

from __future__ import annotations

from typing import Any

import yaml
from flask.testing import FlaskClient

from policies.loader import default_policy
from policies.workloads import webhook_rules
from testsupport.registration import WEBHOOKS_FILE
from testsupport.reviews import review
from webhook.policy_sources import DEFAULT_CONFIGMAP_KEY


def registrations() -> dict[str, dict[str, object]]:
    return {
        webhook["name"]: webhook
        for document in yaml.safe_load_all(WEBHOOKS_FILE.read_text())
        if document
        for webhook in document["webhooks"]
    }


def test_shipped_rules_match_what_the_default_policy_reviews() -> None:
    hooks = registrations()
    assert hooks["mutate.spotguard.dev"]["rules"] == webhook_rules(default_policy(), "mutate")
    assert hooks["validate.spotguard.dev"]["rules"] == webhook_rules(default_policy(), "validate")


def test_every_webhook_is_fail_open_side_effect_free_and_bounded() -> None:
    for name, hook in registrations().items():
        assert hook["failurePolicy"] == "Ignore", name
        assert hook["sideEffects"] == "None", name
        assert hook["timeoutSeconds"] == 5, name
        assert hook["admissionReviewVersions"] == ["v1"], name
    assert registrations()["mutate.spotguard.dev"]["reinvocationPolicy"] == "IfNeeded"


def test_only_ignore_true_opts_a_namespace_out() -> None:
    for name in ("mutate.spotguard.dev", "validate.spotguard.dev"):
        selector = registrations()[name]["namespaceSelector"]
        assert isinstance(selector, dict)
        [ignore] = [e for e in selector["matchExpressions"] if e["key"] == "spotguard.dev/ignore"]
        # NotIn selects namespaces without the label too; "false" or "yes" never opt out.
        assert ignore == {"key": "spotguard.dev/ignore", "operator": "NotIn", "values": ["true"]}


def configmap_review(text: str | None) -> dict[str, Any]:
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "spotguard-policy", "namespace": "spotguard-system"},
        "data": {} if text is None else {DEFAULT_CONFIGMAP_KEY: text},
    }
    body = review(configmap, namespace="spotguard-system")
    body["request"]["kind"] = {"group": "", "version": "v1", "kind": "ConfigMap"}
    return body


def test_a_bad_policy_configmap_is_refused_with_the_field_path(client: FlaskClient) -> None:
    bad = client.post("/validate-policy", json=configmap_review("mode: loud\n")).get_json()
    assert bad["response"]["allowed"] is False
    assert "mode: must be one of enforce, audit, off" in bad["response"]["status"]["message"]
    good = client.post("/validate-policy", json=configmap_review("mode: audit\n")).get_json()
    assert good["response"]["allowed"] is True
    empty = client.post("/validate-policy", json=configmap_review(None)).get_json()
    assert "has no key policy.yaml" in empty["response"]["status"]["message"]
