"""Prometheus metrics of every LLM step, labelled by step, endpoint and model (the names are the
teacher's, which the dashboards query: an LLM step is a teacher of the dataset it writes)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from shared.metrics import LATENCY_BUCKETS

LABELS = ["step", "endpoint", "model"]

#: outcome ∈ ok, http_429, http_5xx, http_4xx, timeout, connection, malformed, empty, invalid
REQUESTS = Counter("fd_teacher_requests", "LLM HTTP attempts by outcome", [*LABELS, "outcome"])
RETRIES = Counter("fd_teacher_retries", "LLM attempts that were retries", LABELS)
REQUEST_SECONDS = Histogram(
    "fd_teacher_request_seconds", "Duration of one LLM HTTP attempt", LABELS, buckets=LATENCY_BUCKETS
)
TOKENS = Counter("fd_teacher_tokens", "Tokens reported by the endpoint", [*LABELS, "kind"])
CONCURRENCY_LIMIT = Gauge("fd_teacher_concurrency_limit", "Current AIMD concurrency limit", LABELS)
INFLIGHT = Gauge("fd_teacher_inflight", "LLM HTTP requests in flight", LABELS)
CACHE_HITS = Counter("fd_teacher_cache_hits", "Rows answered from the generation cache", LABELS)
#: 1 while the endpoint answers, 0 while it is unreachable (the step holds its input meanwhile)
ENDPOINT_UP = Gauge("fd_teacher_endpoint_up", "Whether the LLM endpoint answers", LABELS)
#: batch mode: jobs by event (submitted, resumed, completed, failed) and rows by outcome (ok, failed)
BATCH_JOBS = Counter("fd_teacher_batch_jobs", "Batch API jobs by event", [*LABELS, "event"])
BATCH_ROWS = Counter("fd_teacher_batch_rows", "Rows of Batch API jobs by outcome", [*LABELS, "outcome"])
BATCH_ROWS_WAITING = Gauge("fd_teacher_batch_rows_waiting", "Rows waiting on a batch job", LABELS)
