"""The alert rules and the Grafana dashboard shipped with spotguard.

- Every alert is unit-tested with the real ``promtool test rules`` (tests/monitoring/):
  each fires when it should, with its exact labels and text, and stays quiet otherwise.
- Every expression, in the alerts and in each dashboard panel, parses as PromQL
  (``promtool check rules``) and names only metrics the server really exports, with
  labels those metrics really have. What "exported" means is read from the server's own
  code: the families ``webhook.metrics.Metrics`` registers, plus any ``spotguard_`` family
  a webhook module registers elsewhere, so a new metric only needs to exist to be usable.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import pkgutil
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import webhook
from devtools.server import REPO
from webhook.metrics import Metrics

MONITORING = REPO / "deploy" / "helm" / "spotguard" / "files" / "monitoring"
RULES_FILE = MONITORING / "prometheusrule.yaml"
DASHBOARD_FILE = MONITORING / "dashboard.json"
PROMTOOL_TESTS = REPO / "tests" / "monitoring" / "alerts_test.yaml"

#: Labels Prometheus or the Prometheus Operator put on every scraped series.
TARGET_LABELS = frozenset(
    {"job", "instance", "namespace", "pod", "container", "service", "endpoint"}
)
#: Series names each metric type exposes, from its family name.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
    "unknown": ("",),
}
#: Grafana's variables, replaced by something PromQL accepts before promtool parses.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__range": "1h", "$__interval": "1m",
                     "$namespace": ".*"}  # fmt: skip
METRIC = re.compile(r"\b(spotguard_[A-Za-z0-9_:]*|up)\b(\s*\{([^}]*)\})?")
MATCHER_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


# -- what the server exports ----------------------------------------------------------------


def exported_series() -> dict[str, frozenset[str] | None]:
    """Series name -> its label names (None: not known, only the name is checked).

    Read from a fresh registry filled by ``Metrics.create`` (the families the server
    registers in every process), plus any ``spotguard_`` family that importing the
    webhook package's modules registers in the default registry.
    """
    from prometheus_client import REGISTRY, CollectorRegistry  # noqa: PLC0415

    registry = CollectorRegistry()
    metrics = Metrics.create(registry)
    labels_by_family: dict[str, frozenset[str] | None] = {}
    for field in dataclasses.fields(metrics):
        collector = getattr(metrics, field.name)
        names = getattr(collector, "_labelnames", None)
        family = getattr(collector, "_name", None)
        if isinstance(family, str) and names is not None:
            labels_by_family[family] = frozenset(names)
    for module in pkgutil.iter_modules(webhook.__path__):
        if module.name != "__main__":
            importlib.import_module(f"webhook.{module.name}")
    series: dict[str, frozenset[str] | None] = {"up": frozenset()}
    for source in (registry, REGISTRY):
        for family in source.collect():
            if source is REGISTRY and not family.name.startswith("spotguard_"):
                continue
            labels = labels_by_family.get(family.name)
            for suffix in SUFFIXES.get(family.type, ("",)):
                name = family.name + suffix
                extra = {"le"} if suffix == "_bucket" else set()
                series[name] = None if labels is None else labels | extra
    return series


@pytest.fixture(scope="module")
def exported() -> dict[str, frozenset[str] | None]:
    return exported_series()


def unknown_names(expr: str, exported: dict[str, frozenset[str] | None]) -> list[str]:
    """Problems with the metrics and labels one PromQL expression uses ([] if none)."""
    problems: list[str] = []
    used_labels: set[str] = set(TARGET_LABELS)
    for match in METRIC.finditer(expr):
        name, matchers = match.group(1), match.group(3)
        if name not in exported:
            problems.append(f"{name}: no such metric")
            continue
        labels = exported[name]
        if labels is None:
            used_labels.add("*")
            continue
        used_labels |= labels
        for label in MATCHER_LABEL.findall(matchers or ""):
            if label not in labels | TARGET_LABELS:
                problems.append(f"{name}: no label {label!r}")
    for grouping in GROUPING.findall(expr):
        for label in (part.strip() for part in grouping.split(",")):
            if label and "*" not in used_labels and label not in used_labels:
                problems.append(f"by/without ({label}): no metric here has that label")
    if not METRIC.search(expr):
        problems.append("names no spotguard metric")
    return problems


def test_the_check_catches_names_that_do_not_exist(
    exported: dict[str, frozenset[str] | None],
) -> None:
    """The checker itself: a typo in a metric or a label fails it; real ones pass."""
    good = 'sum by (rule) (rate(spotguard_violations_total{job="spotguard", mode="audit"}[5m]))'
    assert unknown_names(good, exported) == []
    assert unknown_names("rate(spotguard_violation_total[5m])", exported) == [
        "spotguard_violation_total: no such metric"
    ]
    assert unknown_names('spotguard_reviews_total{verdict="denied"}', exported) == [
        "spotguard_reviews_total: no label 'verdict'"
    ]
    assert unknown_names("sum by (rules) (spotguard_violations_total)", exported) == [
        "by/without (rules): no metric here has that label"
    ]
    assert unknown_names("vector(1)", exported) == ["names no spotguard metric"]


def test_the_server_exports_what_the_dashboard_is_about(
    exported: dict[str, frozenset[str] | None],
) -> None:
    for name in (
        "spotguard_reviews_total",
        "spotguard_review_duration_seconds_bucket",
        "spotguard_violations_total",
        "spotguard_policy_stale",
        "spotguard_certificate_expiry_timestamp_seconds",
    ):
        assert name in exported, name
    assert exported["spotguard_violations_total"] == frozenset({"rule", "mode"})


# -- the alerts ---------------------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    spec = yaml.safe_load(RULES_FILE.read_text())["spec"]
    return [rule for group in spec["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def promtool() -> Path:
    if shutil.which("go") is None:
        pytest.skip("promtool is built from Go modules (make tools); no go command here")
    from tools.build import ensure_tools  # noqa: PLC0415

    return ensure_tools() / "promtool"


def rules_dir(tmp_path: Path) -> Path:
    """The PrometheusRule's spec as a Prometheus rule file, beside the promtool tests."""
    spec = yaml.safe_load(RULES_FILE.read_text())["spec"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    shutil.copy(PROMTOOL_TESTS, tmp_path / PROMTOOL_TESTS.name)
    return tmp_path


def test_the_alerts_the_platform_team_needs_exist() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert {
        "SpotguardWebhookDown",
        "SpotguardReviewErrors",
        "SpotguardReviewsSlow",
        "SpotguardPolicyStale",
        "SpotguardCertificateExpiringSoon",
    } <= names
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


def test_alert_expressions_name_exported_metrics(
    exported: dict[str, frozenset[str] | None],
) -> None:
    for rule in alert_rules():
        assert unknown_names(rule["expr"], exported) == [], rule["alert"]


def test_promtool_checks_and_lints_the_rules(promtool: Path, tmp_path: Path) -> None:
    directory = rules_dir(tmp_path)
    result = subprocess.run(
        [str(promtool), "check", "rules", "--lint=all", "--lint-fatal", "rules.yaml"],
        cwd=directory, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_unit_tests_of_every_alert(promtool: Path, tmp_path: Path) -> None:
    tested = {
        case["alertname"]
        for test in yaml.safe_load(PROMTOOL_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert tested == {rule["alert"] for rule in alert_rules()}, "an alert without a firing test"
    directory = rules_dir(tmp_path)
    result = subprocess.run(
        [str(promtool), "test", "rules", PROMTOOL_TESTS.name],
        cwd=directory, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


# -- the dashboard ------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
    return document


def panels(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in document["panels"]:
        yield panel
        yield from panel.get("panels", [])


def expressions(document: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, expression) of every query, the template variables' included."""
    for panel in panels(document):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for variable in document["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", text)
            yield f"variable {variable['name']}", inner.group(1) if inner else text


def test_every_panel_queries_exported_metrics(exported: dict[str, frozenset[str] | None]) -> None:
    document = dashboard()
    for panel in panels(document):
        if panel["type"] != "row":
            assert panel.get("targets"), f"panel {panel['title']!r} has no query"
    problems = [
        f"{title}: {problem}"
        for title, expr in expressions(document)
        for problem in unknown_names(expr, exported)
    ]
    assert problems == []


def test_the_dashboard_covers_reviews_latency_rules_policy_and_certificates() -> None:
    queries = "\n".join(expr for _, expr in expressions(dashboard()))
    for needle in (
        "spotguard_reviews_total",
        "spotguard_review_duration_seconds_bucket",
        'mode="enforce"',  # denials by rule
        'mode="audit"',  # audit violations by rule
        "by (rule)",
        "spotguard_policy_stale",
        "spotguard_policy_reloads_total",
        "spotguard_certificate_expiry_timestamp_seconds",
    ):
        assert needle in queries, needle


def test_dashboard_is_well_formed_for_grafana() -> None:
    document = dashboard()
    assert document["uid"] == "spotguard"
    ids = [panel["id"] for panel in panels(document)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(document):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    variables = {v["name"] for v in document["templating"]["list"]}
    assert {"datasource", "namespace"} <= variables


def test_dashboard_queries_are_valid_promql(promtool: Path, tmp_path: Path) -> None:
    """promtool parses each query, as a recording rule, with Grafana's variables filled in."""
    rules = []
    for index, (_, query) in enumerate(expressions(dashboard())):
        expr = query
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:query_{index}", "expr": expr})
    (tmp_path / "dashboard-rules.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})
    )
    result = subprocess.run(
        [str(promtool), "check", "rules", "--lint=none", "dashboard-rules.yaml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
