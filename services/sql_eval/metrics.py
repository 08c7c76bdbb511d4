"""Prometheus metrics of the SQL worker pool."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

#: cause ∈ timeout (wall clock, killed), memory (recycled after a memory verdict), died (crashed)
WORKERS_REPLACED = Counter(
    "fd_sql_eval_workers_replaced", "SQL worker processes replaced, by cause", ["cause"]
)
WORKER_PEAK_RSS = Gauge("fd_sql_eval_worker_peak_rss_bytes", "Highest peak RSS of any SQL worker so far")
