"""The Grafana dashboards, without Grafana or Prometheus: every metric a panel queries is one the
services register, every label value it filters on exists, and the provisioning finds them."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import fastdistill.services.coordinator
import services.llm.metrics
import shared.metrics
from services.coordinator.quality import QUALITY_METRICS
from tests.deploy.support import (
    REPO,
    dashboards,
    exprs,
    grafana_vars,
    label_matchers,
    metric_names,
    panels,
    pipeline,
)

# Imported for what they register in prometheus_client's default REGISTRY.
METRIC_MODULES = (shared.metrics, services.llm.metrics, fastdistill.services.coordinator)
PROVISIONING = REPO / "deploy/grafana/provisioning"
#: Grafana's own variables; anything else a query uses must be a template variable of its dashboard.
BUILTIN_VARS = {"__rate_interval", "__interval", "__range", "__range_s", "__interval_ms"}
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
}


def _exported_names() -> dict[str, str]:
    """Series name as Prometheus stores it -> family, for every metric the services register."""
    names = {}
    for family in REGISTRY.collect():
        for suffix in SUFFIXES.get(family.type, ("",)):
            names[family.name + suffix] = family.name
    return names


def _project_names() -> dict[str, str]:
    return {n: f for n, f in _exported_names().items() if n.startswith("fd_")}


def test_the_metric_modules_register_what_the_dashboards_need() -> None:
    names = _project_names()
    for expected in (
        "fd_rows_in_total",
        "fd_batch_seconds_bucket",
        "fd_teacher_requests_total",
        "fd_run_quality",
    ):
        assert expected in names


@pytest.mark.parametrize(("board", "panel", "expr"), exprs())
def test_every_queried_metric_exists_in_the_services(board: str, panel: str, expr: str) -> None:
    names = metric_names(expr)
    assert names, f"{board} / {panel}: no metric found in {expr!r}"
    missing = names - set(_exported_names())
    assert not missing, f"{board} / {panel}: {sorted(missing)} are registered by no service"


def test_label_values_the_panels_filter_on_exist() -> None:
    steps = {s.id for s in pipeline().steps}
    for board, panel, expr in exprs():
        for metric, label, op, value in label_matchers(expr):
            if "$" in value or op in ("=~", "!~"):
                continue
            where = f"{board} / {panel}: {metric}{{{label}{op}{value!r}}}"
            if label == "step":
                assert value in steps, f"{where}: no such step in the example pipeline"
            elif metric == "fd_run_quality" and label == "metric":
                assert value in QUALITY_METRICS, f"{where}: the quality report has no such metric"
            elif metric == "fd_teacher_requests_total" and label == "outcome":
                assert value == "ok", f"{where}: filter outcomes other than `ok` with a regex"


def test_every_variable_a_query_uses_is_defined() -> None:
    for name, board in dashboards().items():
        defined = {v["name"] for v in board.get("templating", {}).get("list", [])} | BUILTIN_VARS
        for panel in panels(board):
            for target in panel["targets"]:
                unknown = grafana_vars(target["expr"]) - defined
                assert not unknown, f"{name} / {panel['title']}: undefined variables {unknown}"


def test_dashboards_are_well_formed() -> None:
    boards = dashboards()
    assert set(boards) == {"pipeline-overview.json", "teacher.json", "quality.json"}
    uids = [b["uid"] for b in boards.values()]
    assert len(uids) == len(set(uids))
    datasource = _provisioned_datasource()
    for name, board in boards.items():
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for panel in panels(board):
            assert panel["title"] and panel.get("description"), f"{name}: a panel lacks title or description"
            assert panel["targets"], f"{name} / {panel['title']}: no query"
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == datasource["uid"], f"{name} / {panel['title']}"
                assert target["expr"].strip()


def _uses(board: dict[str, Any]) -> str:
    return "\n".join(t["expr"] for p in panels(board) for t in p["targets"])


def test_each_dashboard_shows_what_the_issue_asks_for() -> None:
    boards = dashboards()
    overview = _uses(boards["pipeline-overview.json"])
    for needle in (
        "rate(fd_rows_in_total",
        "histogram_quantile(0.5, sum by (step, le) (rate(fd_batch_seconds_bucket",
        "histogram_quantile(0.95, sum by (step, le) (rate(fd_batch_seconds_bucket",
        "fd_consumer_lag",
        "fd_inflight_rows",
        "rate(fd_dlq_records_total",
    ):
        assert needle in overview, f"pipeline overview lacks {needle}"
    teacher = _uses(boards["teacher.json"])
    for needle in (
        "sum by (outcome) (rate(fd_teacher_requests_total[",
        'fd_teacher_requests_total{outcome!="ok"}',
        "fd_teacher_retries_total",
        "fd_teacher_request_seconds_bucket",
        "fd_teacher_tokens_total",
        "fd_teacher_concurrency_limit",
    ):
        assert needle in teacher, f"teacher dashboard lacks {needle}"
    quality = _uses(boards["quality.json"])
    for needle in (
        'metric="exec_pass_rate"',
        'metric="gold_match_rate"',
        'metric="p_keep"',
        'fd_rows_dropped_total{step="dedup"}) / sum(fd_rows_in_total{step="dedup"}',
        'metric="teacher_score_mean"',
        "fd_gate_passed",
        "fd_gate_verdicts_total",
    ):
        assert needle in quality, f"quality dashboard lacks {needle}"


def _provisioned_datasource() -> dict[str, Any]:
    (datasource,) = yaml.safe_load((PROVISIONING / "datasources/prometheus.yml").read_text())["datasources"]
    return datasource


def test_provisioning_points_at_the_compose_services_and_mounts() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    datasource = _provisioned_datasource()
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert "9090:9090" in compose["prometheus"]["ports"]
    (provider,) = yaml.safe_load((PROVISIONING / "dashboards/fastdistill.yml").read_text())["providers"]
    mounts = dict(v.rsplit(":", 2)[:2] for v in compose["grafana"]["volumes"] if v.startswith("./"))
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    home = next(
        e
        for k, e in compose["grafana"]["environment"].items()
        if k == "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"
    )
    assert home.startswith(provider["options"]["path"] + "/")
    assert (REPO / "deploy/grafana/dashboards" / home.rsplit("/", 1)[1]).exists()
