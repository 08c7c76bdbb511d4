"""The Grafana dashboards, without Grafana or Prometheus: every metric a panel queries is one the
services register, every label value it filters on exists, and the provisioning finds them."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import fastdistill.services.coordinator
import services.llm.metrics
import shared.metrics
from fastdistill.plan import PipelinePlan
from services.coordinator.export import QUANTILES, ROW_KINDS, SCORE_STATS
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


#: Values the coordinator's per-run series take, by (metric, label).
RUN_LABELS = {
    ("fd_run_stage_rows", "kind"): set(ROW_KINDS),
    ("fd_run_latency_ms", "kind"): {"queue", "end_to_end"},
    ("fd_run_latency_ms", "quantile"): {q for q, _ in QUANTILES},
    ("fd_run_end_to_end_ms", "quantile"): {q for q, _ in QUANTILES},
    ("fd_run_score", "stat"): set(SCORE_STATS),
    ("fd_run_quality", "final"): {"true", "false"},
}


def test_label_values_the_panels_filter_on_exist() -> None:
    spec = pipeline()
    steps = {s.id for s in spec.steps}
    layouts = PipelinePlan.build(spec).quality_layouts().values()
    metrics = {name for layout in layouts for name in layout.metrics()}
    for board, panel, expr in exprs():
        for metric, label, op, value in label_matchers(expr):
            where = f"{board} / {panel}: {metric}{{{label}{op}{value!r}}}"
            if op == "=~" and (metric, label) in RUN_LABELS and "$" not in value:
                assert set(value.split("|")) <= RUN_LABELS[metric, label], f"{where}: no such value"
            if "$" in value or op in ("=~", "!~"):
                continue
            if label == "step":
                assert value in steps, f"{where}: no such step in the example pipeline"
            elif label == "stage":
                assert value in spec.stages, f"{where}: no such stage in the example pipeline"
            elif metric == "fd_run_quality" and label == "metric":
                assert value in metrics, f"{where}: no stage of the example reports such a metric"
            elif (metric, label) in RUN_LABELS:
                assert value in RUN_LABELS[metric, label], f"{where}: the coordinator exports no such value"
            elif metric == "fd_teacher_requests_total" and label == "outcome":
                assert value == "ok", f"{where}: filter outcomes other than `ok` with a regex"


def test_every_dashboard_filters_by_pipeline_and_its_run_series_by_run() -> None:
    """Pipeline and run variables on every board; every selector keeps to the chosen pipeline, and
    the coordinator's per-run series to the chosen runs (never a sum over every run)."""
    for name, board in dashboards().items():
        variables = [v["name"] for v in board["templating"]["list"]]
        assert variables[:2] == ["pipeline", "run_id"], name
        for panel in panels(board):
            for target in panel["targets"]:
                selectors = re.findall(r"(fd_\w+)(\{[^{}]*\})?", target["expr"])
                assert selectors, f"{name} / {panel['title']}"
                for metric, labels in selectors:
                    where = f"{name} / {panel['title']}: {metric}"
                    assert 'pipeline=~"$pipeline"' in labels, f"{where} does not filter by pipeline"
                    if metric.startswith(("fd_run_", "fd_gate_passed")):
                        assert 'run_id=~"$run_id"' in labels, f"{where} does not filter by run"
                        summed = r"sum(\s+by\s*\((?![^)]*run_id)[^)]*\))?\s*\(" + metric
                        assert not re.search(summed, target["expr"]), f"{where} is summed over runs"


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
        'sum by (outcome) (rate(fd_teacher_requests_total{pipeline=~"$pipeline"}[',
        'fd_teacher_requests_total{pipeline=~"$pipeline", outcome!="ok"}',
        "fd_teacher_retries_total",
        "fd_teacher_request_seconds_bucket",
        "fd_teacher_tokens_total",
        "fd_teacher_concurrency_limit",
    ):
        assert needle in teacher, f"teacher dashboard lacks {needle}"
    quality = _uses(boards["quality.json"])
    runs = 'pipeline=~"$pipeline", run_id=~"$run_id"'
    for needle in (
        f'fd_run_quality{{{runs}, final="true", metric="exec_pass_rate"}}',
        f'fd_run_quality{{{runs}, final="true", metric="gold_match_rate"}}',
        f'fd_run_quality{{{runs}, final="true", metric="p_keep"}}',
        # dedup per run, from that run's progress sums
        f'fd_run_stage_rows{{{runs}, stage="dedup", kind="dropped"}} / ignoring(kind) '
        f'fd_run_stage_rows{{{runs}, stage="dedup", kind="in"}}',
        # whatever score column the pipeline declares, its own values or bins
        f"fd_run_score_rows{{{runs}}}",
        f'fd_run_score{{{runs}, stat="mean"}}',
        f'fd_run_stage_rows{{{runs}, kind="out"}}',
        "fd_run_end_to_end_ms",
        "fd_gate_passed",
        "fd_gate_verdicts_total",
    ):
        assert needle in quality, f"quality dashboard lacks {needle}"
    # no lifetime counters and no hard-coded score values on the quality board
    assert "fd_rows_" not in quality and "1.0" not in quality and "0.5" not in quality.replace('"0.5"', "")
    assert "fd_run_latency_ms" in overview and "fd_run_end_to_end_ms" in overview
    assert "fd_run_stage_rows" in teacher


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
