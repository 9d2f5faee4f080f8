"""The webhook registrations: rendered from the policy, shipped as rendered, and the
coverage check the server runs against the live ones; and the policy ConfigMap check
they route."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask.testing import FlaskClient

from policies.loader import default_policy, parse_policy_text
from policies.relevance import Relevance, missing_coverage, relevance_of
from policies.workloads import webhook_rules
from testsupport.reviews import review
from testsupport.server import REPO
from testsupport.shipped_registrations import (
    BASE_WEBHOOKS,
    PROVIDER_OVERLAYS,
    overlay_policy_text,
    stale,
)
from webhook.policy_sources import DEFAULT_CONFIGMAP_KEY
from webhook.registration import (
    MUTATING_WEBHOOK,
    RELEVANCE_ANNOTATION,
    VALIDATING_WEBHOOK,
    WORKLOADS_WEBHOOK,
    Endpoint,
    coverage_problems,
    render,
)


def registrations() -> dict[str, dict[str, Any]]:
    return {
        webhook["name"]: webhook
        for document in yaml.safe_load_all(BASE_WEBHOOKS.read_text())
        if document
        for webhook in document["webhooks"]
    }


def _overlay_policy(overlay: str) -> str:
    return overlay_policy_text(overlay)


def test_shipped_registrations_are_what_the_shipped_policies_render() -> None:
    assert stale() == [], "run: python -m testsupport.shipped_registrations"


def test_shipped_rules_match_what_the_default_policy_reviews() -> None:
    hooks = registrations()
    assert hooks[MUTATING_WEBHOOK]["rules"] == webhook_rules(default_policy(), "mutate")
    assert hooks[VALIDATING_WEBHOOK]["rules"] == webhook_rules(default_policy(), "validate")
    assert hooks[WORKLOADS_WEBHOOK]["rules"] == webhook_rules(default_policy(), "workloads")


def test_every_webhook_is_fail_open_side_effect_free_and_bounded() -> None:
    for name, hook in registrations().items():
        assert hook["failurePolicy"] == "Ignore", name
        assert hook["sideEffects"] == "None", name
        assert hook["timeoutSeconds"] == 5, name
        assert hook["admissionReviewVersions"] == ["v1"], name
    assert registrations()[MUTATING_WEBHOOK]["reinvocationPolicy"] == "IfNeeded"


def test_namespaces_opt_out_only_with_ignore_true() -> None:
    selector = registrations()[MUTATING_WEBHOOK]["namespaceSelector"]
    assert {"key": "spotguard.dev/ignore", "operator": "NotIn", "values": ["true"]} in (
        selector["matchExpressions"]
    )
    included = render(parse_policy_text("namespaces: {include: [ml]}"))[0]["webhooks"][0]
    assert {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["ml"]} in (
        included["namespaceSelector"]["matchExpressions"]
    )


def test_rules_follow_the_policy() -> None:
    extra = parse_policy_text(
        "workloads: {extraKinds: [{group: example.com, kind: TrainingRun,"
        " versions: [v1], templatePaths: [spec.worker.template]}]}"
    )
    validating = render(extra)[1]["webhooks"][1]
    assert {
        "apiGroups": ["example.com"],
        "apiVersions": ["v1"],
        "operations": ["CREATE", "UPDATE"],
        "resources": ["trainingruns"],
        "scope": "Namespaced",
    } in validating["rules"]
    assert "templates-trainingruns.example.com" in {
        c["name"] for c in validating["matchConditions"]
    }
    no_bindings = render(parse_policy_text("rules: {spotNodeBinding: {mode: off}}"))[1]
    resources = {r for rule in no_bindings["webhooks"][0]["rules"] for r in rule["resources"]}
    assert "pods/binding" not in resources
    off = render(parse_policy_text("mode: off"))
    assert off[0]["webhooks"][0]["rules"] == [] and off[1]["webhooks"][0]["rules"] == []
    assert off[1]["webhooks"][1]["rules"] == []
    assert off[1]["webhooks"][2]["rules"]  # the policy ConfigMap check stays


def spotguard(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webhook", *args],
        input=stdin, capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.processes
def test_cli_prints_the_registrations_of_a_policy_file_or_configmap(tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(_overlay_policy("aks"))
    expected = render(parse_policy_text(_overlay_policy("aks")))
    from_file = spotguard("policy", "webhooks", "--policy", str(policy_file))
    assert from_file.returncode == 0, from_file.stderr
    assert list(yaml.safe_load_all(from_file.stdout)) == expected
    configmap = tmp_path / "configmap.yaml"
    configmap.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "data": {"policy.yaml": _overlay_policy("aks")},
            }
        )
    )
    from_configmap = spotguard("policy", "webhooks", "--policy", str(configmap))
    assert list(yaml.safe_load_all(from_configmap.stdout)) == expected
    assert from_file.stdout.startswith("# spotguard's webhook registrations for policy revision")


@pytest.mark.processes
def test_cli_points_at_a_url_with_a_ca_bundle_or_drops_the_conditions(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")
    result = spotguard(
        "policy", "webhooks", "--url", "https://127.0.0.1:8443", "--ca-bundle", str(ca)
    )
    assert result.returncode == 0, result.stderr
    mutating, _ = yaml.safe_load_all(result.stdout)
    client = mutating["webhooks"][0]["clientConfig"]
    assert client["url"] == "https://127.0.0.1:8443/mutate"
    assert base64.b64decode(client["caBundle"]) == ca.read_bytes()
    plain = list(yaml.safe_load_all(spotguard("policy", "webhooks", "--no-conditions").stdout))
    for config in plain:
        assert "annotations" not in config["metadata"]
        assert all("matchConditions" not in w for w in config["webhooks"])
    bad = spotguard("policy", "webhooks", "--policy", "/nonexistent.yaml")
    assert bad.returncode == 2 and "/nonexistent.yaml: no such file" in bad.stderr


# -- coverage --------------------------------------------------------------------------------


def _live(documents: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """As the API server returns them: defaulted fields and a caBundle added."""
    mutating, validating = copy.deepcopy(documents)
    for config in (mutating, validating):
        for webhook in config["webhooks"]:
            webhook["clientConfig"]["caBundle"] = "Y2E="
            webhook.setdefault("objectSelector", {})
    return mutating, validating


def test_a_registration_covers_the_policy_it_was_rendered_from() -> None:
    for text in ("", "mode: audit", "spotNodes: {presets: [aks]}", _overlay_policy("eks")):
        policy = parse_policy_text(text)
        assert coverage_problems(*_live(render(policy)), policy) == []


def test_the_base_registration_covers_every_overlay() -> None:
    base = list(yaml.safe_load_all(BASE_WEBHOOKS.read_text()))
    for overlay in PROVIDER_OVERLAYS:
        for mode in ("enforce", "audit"):  # the audit component changes the mode line
            text = _overlay_policy(overlay).replace("mode: enforce", f"mode: {mode}")
            assert coverage_problems(*_live(base), parse_policy_text(text)) == [], overlay


def test_a_narrower_registration_does_not_cover_and_says_what_is_missing() -> None:
    aks = _live(render(parse_policy_text("spotNodes: {presets: [aks]}")))
    problems = coverage_problems(*aks, default_policy())
    assert any(p.startswith("validating: spot taint keys: also") for p in problems)
    assert any(p.startswith("validating: spot labels: also") for p in problems)
    selector = parse_policy_text("faultTolerant: {matchLabels: {team: ml}}")
    assert coverage_problems(*_live(render(default_policy())), selector) == [
        "mutating: faultTolerant selector (and operator presets): differ",
        "validating: faultTolerant selector (and operator presets): differ",
    ]
    kinds = parse_policy_text(
        "workloads: {extraKinds: [{group: example.com, kind: TrainingRun,"
        " templatePaths: [spec.worker.template]}]}"
    )
    assert "validating: kind TrainingRun.example.com: not sent" in coverage_problems(
        *_live(render(default_policy())), kinds
    )


def test_an_edited_or_unreadable_registration_is_not_trusted() -> None:
    mutating, validating = _live(render(default_policy()))
    edited = copy.deepcopy(validating)
    edited["webhooks"][0]["matchConditions"][0]["expression"] = "false"
    assert coverage_problems(mutating, edited, default_policy()) == [
        "validating: edited after it was rendered: render it again (spotguard policy webhooks)"
    ]
    unreadable = copy.deepcopy(mutating)
    unreadable["metadata"]["annotations"][RELEVANCE_ANNOTATION] = "{"
    (problem,) = coverage_problems(unreadable, validating, default_policy())
    assert problem.startswith("mutating: spotguard.dev/relevance: not a spotguard relevance")
    unrecorded = copy.deepcopy(mutating)
    del unrecorded["metadata"]["annotations"]
    assert coverage_problems(unrecorded, validating, default_policy()) == [
        "mutating: has match conditions but no record of what they test: render it again"
    ]
    assert coverage_problems(None, validating, default_policy()) == [
        "mutating: no webhook configuration spotguard"
    ]


def test_a_mutating_webhook_that_needs_only_labels_selects_pods_by_label() -> None:
    """All spot tainted and the placement check enforced: the mutating webhook needs only
    the fault-tolerant pods, an objectSelector (the server still notices an edit)."""
    text = (
        "spotNodes: {presets: [aks]}\nfaultTolerant: {matchExpressions: "
        "[{key: team, operator: In, values: [ml]}, {key: app, operator: DoesNotExist}]}\n"
    )
    policy = parse_policy_text(text)
    mutating, validating = render(policy)
    (webhook,) = mutating["webhooks"]
    assert "matchConditions" not in webhook
    assert webhook["objectSelector"] == {
        "matchExpressions": [
            {"key": "app", "operator": "DoesNotExist"},
            {"key": "team", "operator": "In", "values": ["ml"]},
        ]
    }
    assert coverage_problems(mutating, validating, policy) == []
    edited = copy.deepcopy(mutating)
    edited["webhooks"][0]["objectSelector"]["matchExpressions"][1]["values"] = ["other"]
    (problem,) = coverage_problems(edited, validating, policy)
    assert "edited after it was rendered" in problem
    # A key no label can have (the policy allows it; it matches no pod) stays a condition,
    # as does every pod where spot is untainted.
    odd = 'spotNodes: {presets: [aks]}\nfaultTolerant: {matchLabels: {"bad key!": x}}\n'
    for other in (odd, "spotNodes: {presets: [eks]}\n"):
        (webhook,) = render(parse_policy_text(other))[0]["webhooks"]
        assert "objectSelector" not in webhook and webhook["matchConditions"]


def test_an_unconditioned_registration_covers_when_its_rules_do() -> None:
    plain = _live(render(default_policy(), conditions=False))
    assert coverage_problems(*plain, default_policy()) == []
    mutating, validating = plain
    validating["webhooks"][0]["rules"] = validating["webhooks"][0]["rules"][:1]
    problems = coverage_problems(mutating, validating, default_policy())
    assert any(
        p.startswith("validating: webhook validate.spotguard.dev: no rule for")
        and "pods/binding" in p
        for p in problems
    )


def test_nothing_is_needed_in_mode_off() -> None:
    assert coverage_problems(None, None, parse_policy_text("mode: off")) == []


def test_relevance_order() -> None:
    base = relevance_of(default_policy())
    assert missing_coverage(base, base) == []
    assert Relevance.from_json(base.to_json()) == base
    narrower = dataclasses.replace(base, mutate_others="tolerating", grace_above_seconds=30)
    assert missing_coverage(base, narrower) == []
    assert missing_coverage(narrower, base) == [
        "mutation of other pods: all, not tolerating",
        "grace periods above 15s",
    ]
    trusting = dataclasses.replace(base, trusted_schedulers=("system:kube-scheduler", "x"))
    assert missing_coverage(trusting, base) == ["bindings by x"]
    assert missing_coverage(dataclasses.replace(base, format=0), base)[0].startswith(
        "registration format 0"
    )


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


def test_endpoint_client_config() -> None:
    service = Endpoint().client_config("/mutate")
    assert service == {
        "service": {
            "name": "spotguard",
            "namespace": "spotguard-system",
            "path": "/mutate",
            "port": 443,
        }
    }
    assert (
        json.dumps(Endpoint(url="https://h:1/").client_config("/v")) == '{"url": "https://h:1/v"}'
    )
