"""Prometheus metrics of the teacher step (names are what the dashboards query)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from shared.metrics import LATENCY_BUCKETS

#: outcome ∈ ok, http_429, http_5xx, http_4xx, timeout, connection, malformed, empty
REQUESTS = Counter("fd_teacher_requests", "Teacher HTTP attempts by outcome", ["model", "outcome"])
RETRIES = Counter("fd_teacher_retries", "Teacher attempts that were retries", ["model"])
REQUEST_SECONDS = Histogram(
    "fd_teacher_request_seconds", "Duration of one teacher HTTP attempt", ["model"], buckets=LATENCY_BUCKETS
)
TOKENS = Counter("fd_teacher_tokens", "Tokens reported by the teacher", ["model", "kind"])
CONCURRENCY_LIMIT = Gauge("fd_teacher_concurrency_limit", "Current AIMD concurrency limit", ["model"])
INFLIGHT = Gauge("fd_teacher_inflight", "Teacher HTTP requests in flight", ["model"])
CACHE_HITS = Counter("fd_teacher_cache_hits", "Rows answered from the generation cache", ["model"])
