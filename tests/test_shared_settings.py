"""Settings shared by several parts, each defined once: the policy ConfigMap key (the
server's --policy-key reaches /validate-policy), and the rule table from which the
loader's keys, the schema's ``rules`` block and the built-in modes come."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from policies.loader import PolicyError, default_document, parse_policy_text
from policies.model import Mode, Rule
from policies.schema import POLICY_SCHEMA
from testsupport.reviews import configmap_review
from testsupport.server import start_server
from webhook.app import WebhookSettings, create_app
from webhook.cli import main
from webhook.policy_sources import DEFAULT_CONFIGMAP_KEY
from webhook.policy_store import PolicyStore

KEY = "spotguard.yaml"


def answer(settings: WebhookSettings, data: dict[str, str]) -> dict[str, Any]:
    reply = create_app(settings).test_client().post("/validate-policy", json=configmap_review(data))
    assert reply.status_code == 200, reply.get_data(as_text=True)
    response: dict[str, Any] = reply.get_json()["response"]
    return response


def test_validate_policy_reads_the_key_the_server_reads() -> None:
    settings = WebhookSettings(policies=PolicyStore.from_file(None), policy_key=KEY)
    assert answer(settings, {KEY: "mode: audit\n"})["allowed"] is True
    refused = answer(settings, {DEFAULT_CONFIGMAP_KEY: "mode: audit\n"})
    assert (
        refused["status"]["message"]
        == f"spotguard policy ConfigMap spotguard-policy has no key {KEY}"
    )
    bad = answer(settings, {KEY: "mode: sometimes\n"})
    assert "mode: must be one of" in bad["status"]["message"]
    default = WebhookSettings(policies=PolicyStore.from_file(None))
    assert answer(default, {DEFAULT_CONFIGMAP_KEY: "mode: audit\n"})["allowed"] is True


@pytest.mark.processes
def test_serve_policy_key_reaches_the_workers(tmp_path: Path) -> None:
    """Before, --policy-key other than policy.yaml made /validate-policy refuse every
    revision of the policy the server itself reads."""
    server = start_server(tmp_path, "--policy-key", KEY)
    try:
        with server.session() as session:
            for data, allowed in (({KEY: "mode: audit\n"}, True),
                                  ({DEFAULT_CONFIGMAP_KEY: "mode: audit\n"}, False)):  # fmt: skip
                reply = session.post(
                    server.url + "/validate-policy", json=configmap_review(data), timeout=10
                )
                assert reply.json()["response"]["allowed"] is allowed, reply.text
    finally:
        server.stop()


def test_every_rule_comes_from_the_table() -> None:
    keys = [rule.key for rule in Rule]
    assert keys == [
        "inject", "keepOffSpot", "spotRequiresFaultTolerance", "gracePeriodFitsNotice",
        "checkpointFitsNotice", "statefulWorkload", "latencyCritical", "localStorage",
        "spotNodeBinding",
    ]  # fmt: skip
    assert list(POLICY_SCHEMA["properties"]["rules"]["properties"]) == keys
    assert default_document()["rules"] == {r.key: {"mode": str(r.default)} for r in Rule}
    shipped = Path(__file__).parent.parent / "policies" / "default_policy.yaml"
    assert "\nrules:" not in shipped.read_text()  # no second definition of the defaults
    for rule in Rule:
        assert rule.summary and rule.default in (Mode.ENFORCE, Mode.AUDIT)
        flipped = "off" if rule.default is Mode.ENFORCE else "enforce"
        policy = parse_policy_text(f"rules: {{{rule.key}: {{mode: {flipped}}}}}\n")
        assert policy.mode_of(rule) is Mode.parse(flipped)
        assert all(policy.mode_of(r) is r.default for r in Rule if r is not rule)


def test_a_rule_key_that_is_not_in_the_table_is_refused() -> None:
    with pytest.raises(PolicyError, match=r"rules\.keepOfSpot: unknown field"):
        parse_policy_text("rules: {keepOfSpot: {mode: off}}\n")


def test_policy_rules_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "rules"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [[r.key, str(r.default)] for r in Rule]
