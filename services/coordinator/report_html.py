"""The run report for people: one self-contained HTML page written beside the JSON reports.

It shows the gate verdict, the per-stage funnel in DAG order (rows in, out, dropped, errored and
dead-lettered, with bars), a histogram of every score column (at the stage that adds it), each
stage's keep rate and metric-set rates, and the per-row latencies. Charts are inline SVG: no
plotting library, no script, no external resource, so the page opens anywhere (an archived run
folder, a dataset card) and renders the same bytes for the same reports. Every text that comes
from data (stage ids, reasons, run ids) is escaped.
"""

from __future__ import annotations

import html
from typing import Any

from services.coordinator.metrics import metric_set
from services.coordinator.run_state import RunState

_FUNNEL = (
    ("rows_in", "in", "#4c78a8"),
    ("rows_out", "out", "#54a24b"),
    ("rows_dropped", "dropped", "#bab0ac"),
    ("rows_errored", "errored", "#e45756"),
    ("dead_letters", "dead-lettered", "#b279a2"),
)
_BAR_W = 220
_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.25em .6em;border-bottom:1px solid #ddd;
text-align:right;vertical-align:middle}th:first-child,td:first-child{text-align:left}
.pass{color:#2b7a2b;font-weight:bold}.fail{color:#b22;font-weight:bold}.muted{color:#777}
figure{display:inline-block;margin:0 1.5em 1em 0}figcaption{font-size:.9em;color:#444}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: object, digits: int = 4) -> str:
    if value is None:
        return '<span class="muted">-</span>'
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e6 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else _e(value)


def _bar(value: int | None, scale: int, colour: str) -> str:
    width = 0 if not value or not scale else max(1, round(_BAR_W * value / scale))
    return (
        f'<svg width="{_BAR_W}" height="12" role="img" aria-label="{value or 0}">'
        f'<rect width="{width}" height="12" fill="{colour}"/></svg>'
    )


def _funnel(state: RunState) -> str:
    flows = {stage: state.flow(stage) for stage in state.stages}
    scale = max((int(v) for f in flows.values() for v in f.values() if isinstance(v, int)), default=0)
    head = "".join(f"<th>{label}</th>" for _, label, _ in _FUNNEL)
    rows = []
    for stage, flow in flows.items():
        cells = "".join(f"<td>{_num(flow[name])}</td>" for name, _, _ in _FUNNEL)
        bars = "<br>".join(
            _bar(value, scale, colour)
            for name, _, colour in _FUNNEL
            if isinstance(value := flow[name], int) and value
        )
        rows.append(f"<tr><td>{_e(stage)}</td>{cells}<td>{bars}</td></tr>")
    legend = " ".join(f'<span style="color:{colour}">■</span> {label}' for _, label, colour in _FUNNEL)
    return (
        f"<table><tr><th>stage</th>{head}<th>{legend}</th></tr>{''.join(rows)}</table>"
        '<p class="muted">Stages upstream first. Seeds: rows produced; their dead letters are the '
        "records `produce` refused. Dropped rows were filtered on purpose (dedup, filters); errored "
        "rows raised (dead-lettered under COLLECT).</p>"
    )


def _histogram(column: str, stage: str, bins: list[dict[str, Any]]) -> str:
    width, height, pad = 320, 140, 22
    top = max((int(b["count"]) for b in bins), default=0) or 1
    step = (width - 2 * pad) / max(1, len(bins))
    bars = []
    for i, entry in enumerate(bins):
        h = (height - 2 * pad) * int(entry["count"]) / top
        x = pad + i * step
        label = _num(entry["low"]) if entry["low"] == entry["high"] else f"{entry['low']:.3g}"
        bars.append(
            f'<rect x="{x + 1:.1f}" y="{height - pad - h:.1f}" width="{max(1.0, step - 2):.1f}" '
            f'height="{h:.1f}" fill="#4c78a8"><title>{_e(entry["low"])}..{_e(entry["high"])}: '
            f"{entry['count']}</title></rect>"
            f'<text x="{x + step / 2:.1f}" y="{height - pad + 12}" font-size="9" text-anchor="middle">'
            f"{label}</text>"
            f'<text x="{x + step / 2:.1f}" y="{max(10.0, height - pad - h - 3):.1f}" font-size="9" '
            f'text-anchor="middle">{entry["count"]}</text>'
        )
    return (
        f'<figure><svg width="{width}" height="{height}" role="img" aria-label="histogram of '
        f'{_e(column)}">{"".join(bars)}</svg><figcaption>{_e(column)} at {_e(stage)}</figcaption></figure>'
    )


def _scores(quality: list[dict[str, Any]]) -> str:
    figures = [
        _histogram(column, report["stage"], stats["histogram"])
        for report in quality
        for column, stats in report["columns"].items()
        if "histogram" in stats
    ]
    return "".join(figures) or '<p class="muted">No score column (quality.score_columns).</p>'


def _stage_metrics(quality: list[dict[str, Any]], state: RunState) -> str:
    rows = []
    for report in quality:
        layout = state.stages[report["stage"]].quality.layout
        named = [("p_keep", report["p_keep"])]
        for name in layout.sets:
            named += [(m, report.get(m)) for m in metric_set(name).metrics if m.endswith("_rate")]
        cells = ", ".join(f"{_e(m)} {_num(v)}" for m, v in named)
        reasons = ", ".join(f"{_e(k)}: {v}" for k, v in report["reject_reasons"].items())
        rows.append(
            f"<tr><td>{_e(report['stage'])}</td><td>{_num(report['total'])}</td>"
            f"<td>{_num(report['kept'])}</td><td style='text-align:left'>{cells}</td>"
            f"<td style='text-align:left'>{reasons}</td></tr>"
        )
    return (
        "<table><tr><th>stage</th><th>rows</th><th>kept</th><th>rates</th><th>reject reasons</th></tr>"
        f"{''.join(rows)}</table>"
    )


def _timing(timing: dict[str, Any]) -> str:
    def cells(report: dict[str, Any]) -> str:
        return "".join(f"<td>{_num(report[q])}</td>" for q in ("count", "p50", "p95", "p99"))

    rows = [
        f"<tr><td>{_e(stage)}</td>{cells(step['queue_ms'])}{cells(step['end_to_end_ms'])}</tr>"
        for stage, step in timing["steps"].items()
    ]
    head = "<th>rows</th><th>p50</th><th>p95</th><th>p99</th>"
    return (
        f"<p>End to end at the leaves (ms): p50 {_num(timing['end_to_end_ms']['p50'])}, p95 "
        f"{_num(timing['end_to_end_ms']['p95'])}, p99 {_num(timing['end_to_end_ms']['p99'])} over "
        f"{_num(timing['end_to_end_ms']['count'])} rows; wall {_num(timing['wall_seconds'])} s.</p>"
        f"<table><tr><th></th><th colspan=4>queue to commit (ms)</th><th colspan=4>end to end (ms)</th></tr>"
        f"<tr><th>stage</th>{head}{head}</tr>{''.join(rows)}</table>"
    )


def render_report(pipeline: str, state: RunState, reports: dict[str, Any]) -> str:
    verdict = state.verdict or {}
    if verdict.get("passed"):
        gate = '<span class="pass">gate passed</span>'
    else:
        gate = (
            '<span class="fail">gate failed</span><ul>'
            + "".join(f"<li>{_e(f)}</li>" for f in verdict.get("failures", []))
            + "</ul>"
        )
    title = f"{_e(pipeline)} / {_e(state.run_id)}"
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{_STYLE}</style></head><body><h1>Run {title}</h1><p>{gate}</p>"
        f"<h2>Funnel</h2>{_funnel(state)}"
        f"<h2>Scores</h2>{_scores(reports['quality'])}"
        f"<h2>Quality per stage</h2>{_stage_metrics(reports['quality'], state)}"
        f"<h2>Per-row latency</h2>{_timing(reports['timing'])}"
        '<p class="muted">Numbers: reports/quality.json and reports/timing.json beside this page.</p>'
        "</body></html>\n"
    )
