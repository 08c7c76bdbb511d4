"""Batches larger than a Kafka message are split, and a row too large for any message is a dead
letter: before, such a batch aborted its transaction forever and stalled the partition."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import KafkaSettings
from tests.runtime.harness import markers_of, produce_rows, read_all, rows_of
from tests.runtime.test_step_service import _run_in_background, _service, _setup

pytestmark = pytest.mark.kafka

#: Shout adds an upper-cased copy of `text`: 100 rows of 6,000 characters come in as one 600 KB
#: message and go out as 1.2 MB, over the 1 MB default.
ROWS, CHARS = 100, 6_000
HUGE_OUT = 7  # 600,000 characters: fits as input, twice that as output fits in no message
HUGE_IN = 42  # 1,100,000 characters: fits in no message even as a seed


def test_oversized_batches_are_split_and_oversized_rows_dead_lettered(
    tmp_path: Path, kafka_bootstrap: str, fresh_topic_prefix: str
) -> None:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, session_timeout_ms=6000)
    plan = _setup(tmp_path, f"size-{fresh_topic_prefix}", kafka, error_policy="COLLECT")
    sizes = {HUGE_OUT: 600_000, HUGE_IN: 1_100_000}
    rows = [{"source_index": i, "text": "x" * sizes.get(i, CHARS), "fail": False} for i in range(ROWS)]
    produce_rows(kafka, plan, "run-1", rows)
    serde, spec = plan.serde(), plan.spec

    def check() -> tuple[list, list]:
        out = read_all(kafka, serde, spec.topic("shout"), until=lambda r: markers_of(r) >= 16, timeout_s=90)
        dlq = read_all(kafka, serde, spec.dlq_topic, until=lambda r: len(r) >= 2)
        return out, dlq

    out, dlq = _run_in_background(_service(plan, kafka), check)
    assert sorted(r["source_index"] for r in rows_of(out)) == sorted(set(range(ROWS)) - {HUGE_OUT, HUGE_IN})
    assert all(len(rec["rows"]) < ROWS for _, rec in out)  # the output batch was split
    letters = {(rec["step"], rec["row_index"], rec["error_type"]) for _, rec in dlq}
    assert letters == {("produce", HUGE_IN, "MessageTooLarge"), ("shout", HUGE_OUT, "MessageTooLarge")}
    assert all("more than a message may hold" in rec["error_message"] for _, rec in dlq)
