"""bench.batch on a few rows: the same rows cost the same tokens in both modes, a handful of Batch
API calls instead of one request per row, and nothing billed twice (no timing asserted)."""

from __future__ import annotations

from bench.batch import compare, line


def test_batch_and_online_bill_the_same_tokens_in_far_fewer_requests() -> None:
    online, batch = compare(rows=60, latency="fixed:0", batch_delay_s=0.1)
    assert online.http_requests == 60 and batch.http_requests < 15
    assert (batch.prompt_tokens, batch.completion_tokens) == (online.prompt_tokens, online.completion_tokens)
    assert online.billed_twice == batch.billed_twice == 0
    assert batch.cost_tokens == online.cost_tokens / 2
    assert line(online, batch).startswith("batch vs online, 60 rows: online 60 HTTP requests")
