"""spotguard's webhook registrations, rendered from the policy they serve.

``spotguard policy webhooks`` prints the MutatingWebhookConfiguration and the
ValidatingWebhookConfiguration for a policy: rules for every kind it reviews, the
namespaceSelector of its namespaces, and match conditions (CEL, :mod:`policies.conditions`)
that keep the API server from calling spotguard for reviews that cannot matter. The
shipped manifests are this output (a test keeps them equal).

Each configuration carries, as the annotation :data:`RELEVANCE_ANNOTATION`, the
relevance it was rendered from. The server reads the live configurations and checks
that they still send every review its policy needs (:func:`coverage_problems`): the
annotation says what they promise, and rendering it again must give the webhooks found,
so a hand-edited registration is not trusted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from policies.conditions import (
    mutating_conditions,
    mutating_object_selector,
    validating_conditions,
    webhook_rules_for,
    workload_conditions,
)
from policies.model import Policy
from policies.relevance import Relevance, for_webhook, missing_coverage, relevance_of

CONFIGURATION_NAME = "spotguard"
MUTATING_WEBHOOK = "mutate.spotguard.dev"
VALIDATING_WEBHOOK = "validate.spotguard.dev"
WORKLOADS_WEBHOOK = "workloads.spotguard.dev"
POLICY_WEBHOOK = "policy.spotguard.dev"
RELEVANCE_ANNOTATION = "spotguard.dev/relevance"
IGNORE_LABEL = "spotguard.dev/ignore"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
TIMEOUT_SECONDS = 5

JSONObject = dict[str, Any]


@dataclass(frozen=True)
class Endpoint:
    """Where the API server reaches spotguard: the in-cluster Service, or a URL."""

    service: str = "spotguard"
    namespace: str = "spotguard-system"
    port: int = 443
    url: str | None = None
    ca_bundle: str | None = None  # base64 PEM

    def client_config(self, path: str) -> JSONObject:
        config: JSONObject
        if self.url is not None:
            config = {"url": self.url.rstrip("/") + path}
        else:
            config = {
                "service": {
                    "name": self.service,
                    "namespace": self.namespace,
                    "path": path,
                    "port": self.port,
                }
            }
        if self.ca_bundle:
            config["caBundle"] = self.ca_bundle
        return config


def namespace_selector(relevance: Relevance) -> JSONObject:
    """Excluded namespaces, the included ones (if the policy names any), the opt-out label."""
    expressions: list[JSONObject] = []
    if relevance.exclude_namespaces:
        expressions.append(
            {
                "key": NAMESPACE_NAME_LABEL,
                "operator": "NotIn",
                "values": list(relevance.exclude_namespaces),
            }
        )
    if relevance.include_namespaces:
        expressions.append(
            {
                "key": NAMESPACE_NAME_LABEL,
                "operator": "In",
                "values": list(relevance.include_namespaces),
            }
        )
    expressions.append({"key": IGNORE_LABEL, "operator": "NotIn", "values": ["true"]})
    return {"matchExpressions": expressions}


def _common(name: str, endpoint: Endpoint, path: str) -> JSONObject:
    return {
        "name": name,
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": "Ignore",
        "timeoutSeconds": TIMEOUT_SECONDS,
        "matchPolicy": "Equivalent",
        "clientConfig": endpoint.client_config(path),
    }


def _metadata(relevance: Relevance, conditions: bool) -> JSONObject:
    metadata: JSONObject = {
        "name": CONFIGURATION_NAME,
        "labels": {"app.kubernetes.io/name": "spotguard"},
    }
    # Without conditions the registration sends everything its rules match; it promises
    # nothing narrower, so it needs no record of what it was rendered from.
    if conditions:
        metadata["annotations"] = {RELEVANCE_ANNOTATION: relevance.to_json()}
    return metadata


def render_relevance(
    relevance: Relevance, endpoint: Endpoint = Endpoint(), *, conditions: bool = True
) -> list[JSONObject]:
    """Both configurations for ``relevance``; ``conditions=False`` leaves out the CEL."""
    mutate = {
        **_common(MUTATING_WEBHOOK, endpoint, "/mutate"),
        "reinvocationPolicy": "IfNeeded",
        "rules": webhook_rules_for(relevance, "mutate"),
        "namespaceSelector": namespace_selector(relevance),
    }
    validate = {
        **_common(VALIDATING_WEBHOOK, endpoint, "/validate"),
        "rules": webhook_rules_for(relevance, "validate"),
        "namespaceSelector": namespace_selector(relevance),
    }
    workloads = {
        **_common(WORKLOADS_WEBHOOK, endpoint, "/validate"),
        "rules": webhook_rules_for(relevance, "workloads"),
        "namespaceSelector": namespace_selector(relevance),
    }
    if conditions:
        selector = mutating_object_selector(relevance)
        if selector is not None:
            mutate["objectSelector"] = selector
        else:
            mutate["matchConditions"] = [c.to_api() for c in mutating_conditions(relevance)]
        validate["matchConditions"] = [c.to_api() for c in validating_conditions(relevance)]
        workloads["matchConditions"] = [c.to_api() for c in workload_conditions(relevance)]
    policy_check = {
        **_common(POLICY_WEBHOOK, endpoint, "/validate-policy"),
        "rules": [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["configmaps"],
                "scope": "Namespaced",
            }
        ],
        "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: endpoint.namespace}},
        "objectSelector": {"matchLabels": {"spotguard.dev/policy": "true"}},
    }
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": _metadata(relevance, conditions),
            "webhooks": [mutate],
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": _metadata(relevance, conditions),
            "webhooks": [validate, workloads, policy_check],
        },
    ]


def registration_header(policy: Policy) -> str:
    """The comment ``spotguard policy webhooks`` puts above the configurations."""
    return (
        f"# spotguard's webhook registrations for policy revision {policy.revision}, rendered by\n"
        "# `spotguard policy webhooks`; render them again rather than editing them (the\n"
        f"# server checks them against its policy through the {RELEVANCE_ANNOTATION} annotation).\n"
    )


def render(
    policy: Policy, endpoint: Endpoint = Endpoint(), *, conditions: bool = True
) -> list[JSONObject]:
    """Both configurations for ``policy`` (see :func:`render_relevance`)."""
    return render_relevance(relevance_of(policy), endpoint, conditions=conditions)


# -- the live registration -----------------------------------------------------------------

#: The webhook fields a registration's relevance decides; the rest (clientConfig,
#: timeouts, failurePolicy) are the installation's business.
_DECIDED_FIELDS = ("rules", "namespaceSelector", "objectSelector", "matchConditions")


def _decided(webhooks: Any) -> dict[str, JSONObject]:
    return {
        str(w.get("name")): {k: w.get(k) for k in _DECIDED_FIELDS if w.get(k) not in (None, {}, [])}
        for w in webhooks or []
        if isinstance(w, Mapping) and w.get("name") != POLICY_WEBHOOK
    }


def coverage_problems(
    mutating: Mapping[str, Any] | None, validating: Mapping[str, Any] | None, policy: Policy
) -> list[str]:
    """Why the live configurations may not send every review ``policy`` needs; [] if they do.

    Each configuration is judged on its own, for its own webhook (they are separate objects,
    applied one after the other). One without match conditions and object selector sends
    everything its rules and namespace selector match. One with conditions is trusted to
    send what the relevance in its annotation needs, once rendering that relevance gives
    its webhooks (so a hand-edited registration is not trusted).
    """
    needed = relevance_of(policy)
    problems: list[str] = []
    for index, (webhook, config) in enumerate((("mutate", mutating), ("validate", validating))):
        part = for_webhook(needed, webhook)
        if not part.anything:
            continue
        prefix = ("mutating", "validating")[index] + ": "
        if config is None:
            problems.append(f"{prefix}no webhook configuration {CONFIGURATION_NAME}")
            continue
        live = _live_relevance(config)
        if isinstance(live, str):
            problems.append(prefix + live)
        elif live is None:  # unconditioned: compare with the unconditioned rendering
            expected = render_relevance(part, conditions=False)[index]
            problems += [prefix + gap for gap in _unconditioned_gaps(config, expected)]
        elif _decided(config.get("webhooks")) != _decided(
            render_relevance(live)[index]["webhooks"]
        ):
            problems.append(
                f"{prefix}edited after it was rendered: render it again (spotguard policy webhooks)"
            )
        else:
            problems += [prefix + gap for gap in missing_coverage(live, part)]
    return problems


def _live_relevance(config: Mapping[str, Any]) -> Relevance | str | None:
    """The relevance a configuration was rendered from; None if it has no conditions at
    all; a problem (str) if its record cannot be read."""
    record = ((config.get("metadata") or {}).get("annotations") or {}).get(RELEVANCE_ANNOTATION)
    conditioned = any(
        w.get("matchConditions") or w.get("objectSelector")
        for w in (config.get("webhooks") or [])
        if isinstance(w, Mapping) and w.get("name") != POLICY_WEBHOOK
    )
    if record is None:
        return (
            "has match conditions but no record of what they test: render it again"
            if (conditioned)
            else None
        )
    try:
        return Relevance.from_json(str(record))
    except ValueError as error:
        return f"{RELEVANCE_ANNOTATION}: {error}"


def _unconditioned_gaps(found: Mapping[str, Any], wanted: JSONObject) -> list[str]:
    """What a configuration without conditions misses: webhooks, rules, namespaces."""
    gaps: list[str] = []
    have = _decided(found.get("webhooks"))
    for name, fields in _decided(wanted["webhooks"]).items():
        if name not in have:
            gaps.append(f"webhook {name}: missing")
            continue
        for rule in fields.get("rules", []):
            if not any(_rule_covers(r, rule) for r in have[name].get("rules", [])):
                gaps.append(f"webhook {name}: no rule for {json.dumps(rule, sort_keys=True)}")
        if have[name].get("namespaceSelector") != fields.get("namespaceSelector"):
            gaps.append(f"webhook {name}: namespaceSelector differs")
    return gaps


def _rule_covers(have: Mapping[str, Any], want: Mapping[str, Any]) -> bool:
    def covers(key: str) -> bool:
        present = set(have.get(key) or [])
        return "*" in present or set(want.get(key) or []) <= present

    return all(covers(k) for k in ("apiGroups", "apiVersions", "operations", "resources"))
