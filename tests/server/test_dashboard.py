"""dashboards/feedback-service.json: a Grafana 10 dashboard whose every expression names only
metrics a running server exports, and that shows every feedback_* family."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from server.config import Settings
from tests.e2e.metrics_support import Samples, parse
from tests.server_harness import ServerThread

DASHBOARD = Path(__file__).parents[2] / "dashboards" / "feedback-service.json"
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or"}
PROMQL_WORDS |= {"unless", "bool", "offset", "inf", "nan"}
"""PromQL keywords that look like names (aggregations and functions are followed by "(")."""


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)  # label values, legend strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges
    text = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", " ", text)  # grouping labels
    names = set()
    for found in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[found.end() :].lstrip()
        if rest.startswith("(") or found.group() in PROMQL_WORDS:
            continue
        names.add(found.group())
    return names


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _expressions(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Samples:
    """One scrape of a running server with metrics on."""
    directory = tmp_path_factory.mktemp("dashboard")
    settings = Settings(
        database_url=f"sqlite:///{directory / 'feedback.sqlite3'}",
        storage_threads=2,
        log_level="WARNING",
        metrics_address="127.0.0.1:0",
    )
    with ServerThread(settings) as running:
        port = running.feedback_server.metrics_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            return parse(answer.read().decode())


def test_the_expression_parser_finds_metric_names() -> None:
    expression = (
        'sum by (grpc_method, le) (rate(grpc_server_handling_seconds_bucket{grpc_code!="OK", '
        'instance=~"$instance"}[$__rate_interval])) / on (job) feedback_write_queue_depth'
    )
    assert metric_names(expression) == {
        "grpc_server_handling_seconds_bucket",
        "feedback_write_queue_depth",
    }


def test_every_expression_names_only_exported_metrics(exported: Samples) -> None:
    dashboard = _dashboard()
    expressions = _expressions(dashboard)
    names = {sample for sample, _ in exported.values}

    used = set().union(*(metric_names(expression) for expression in expressions))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":  # label_values(METRIC, LABEL)
            found = re.fullmatch(r"label_values\((\w+), *\w+\)", variable["definition"])
            assert found is not None, variable["definition"]
            used.add(found.group(1))

    assert used, "no metric found in the dashboard"
    assert used - names == set()


def test_the_dashboard_shows_every_feedback_family(exported: Samples) -> None:
    used = set().union(*(metric_names(expression) for expression in _expressions(_dashboard())))
    families = {name for name in exported.types if name.startswith("feedback_")}
    assert len(families) >= 13

    shown = {family for family in families if any(name.startswith(family) for name in used)}

    assert shown == families
    assert {"grpc_server_handled_total", "grpc_server_handling_seconds_bucket"} <= used


def test_it_is_a_grafana_10_dashboard_over_a_prometheus_datasource_variable() -> None:
    dashboard = _dashboard()
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}

    assert dashboard["schemaVersion"] >= 38  # Grafana 10.0
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        assert all(target["datasource"]["uid"] == "${datasource}" for target in panel["targets"])
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for shown in ("request rate", "error rate", "p50", "p99", "queue", "batch", "commit"):
        assert shown in titles
    for shown in ("refusal", "database", "stored", "watchers", "webhook", "cache hit"):
        assert shown in titles
