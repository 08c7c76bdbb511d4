"""Prometheus metrics every service exports (names are what the Grafana dashboards query)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

ROWS_IN = Counter("fd_rows_in_total", "Rows consumed", ["step"])
ROWS_OUT = Counter("fd_rows_out_total", "Rows produced downstream", ["step"])
ROWS_DROPPED = Counter("fd_rows_dropped_total", "Rows the step dropped on purpose", ["step"])
ROWS_STOPPED = Counter(
    "fd_rows_stopped_total", "Rows dropped unprocessed because their run reached its limit", ["step"]
)
ROWS_ERRORED = Counter("fd_rows_errored_total", "Rows whose processing raised", ["step", "policy"])
DLQ_RECORDS = Counter("fd_dlq_records_total", "Dead-letter records written", ["step", "error_type"])
BATCH_SECONDS = Histogram(
    "fd_batch_seconds",
    "Time from consuming a batch to its rows being ready",
    ["step"],
    buckets=LATENCY_BUCKETS,
)
ROW_SECONDS = Histogram("fd_row_seconds", "Per-row processing time", ["step"], buckets=LATENCY_BUCKETS)
TRANSACTIONS = Counter("fd_transactions_total", "Kafka transactions by outcome", ["step", "outcome"])
COMMIT_SECONDS = Histogram(
    "fd_commit_seconds", "Kafka transaction commit time", ["step"], buckets=LATENCY_BUCKETS
)
IN_FLIGHT = Gauge("fd_inflight_rows", "Rows being processed right now", ["step"])
BUFFERED = Gauge("fd_buffered_rows", "Rows consumed and not yet committed downstream", ["step"])
BUFFERED_MAX = Gauge("fd_buffered_rows_max", "Highest fd_buffered_rows seen", ["step"])
PAUSED = Gauge("fd_partitions_paused", "Input partitions paused by backpressure", ["step"])
#: 1 while the step asks to take no rows (Step.ready(): e.g. its endpoint is unreachable)
HELD = Gauge("fd_step_held", "Whether the step holds its input (not ready)", ["step"])
CONSUMER_LAG = Gauge("fd_consumer_lag", "High watermark minus position", ["step", "topic", "partition"])
RUNS_ENDED = Counter("fd_runs_drained_total", "Input partitions drained for a run", ["step"])
