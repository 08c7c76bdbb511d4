"""A seed row too large for any Kafka message is dead-lettered by `produce` with its file bytes
and line, like every other rejected record (real broker)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastdistill.ingest import read_seeds
from fastdistill.plan import PipelinePlan
from shared.config import KafkaSettings
from shared.kafka.run_producer import produce_run
from shared.kafka.topic_end import read_to_end
from shared.pipeline import SEEDS_STAGE, PipelineSpec
from shared.runtime.dead_letter import MAX_RAW_BYTES
from tests.runtime.harness import create_topics, write_pipeline

pytestmark = pytest.mark.kafka


def test_a_row_too_large_to_send_keeps_its_file_bytes_and_line(
    tmp_path: Path, kafka_bootstrap: str, fresh_topic_prefix: str
) -> None:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, max_message_bytes=100_000)
    steps = [{"id": "shout", "step": "tests.runtime.steps:Shout"}]
    spec = PipelineSpec.load(write_pipeline(tmp_path, f"large-{fresh_topic_prefix}", steps))
    create_topics(kafka, spec)
    plan = PipelinePlan.build(spec)
    huge = json.dumps({"text": "x" * 150_000}).encode()  # valid, but fits in no 100 KB message
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_bytes(b'{"text": "a"}\r\n\r\n' + huge + b'\r\n{"text": "b"}\r\n')

    batch = read_seeds(seeds, plan.seed_model(), "run-1")
    assert [r["source_index"] for r in batch.rows] == [0, 1, 2] and not batch.dead_letters
    summary = produce_run(
        kafka,
        plan.serde(),
        run_id="run-1",
        topic=spec.topic(SEEDS_STAGE),
        schema=plan.schema_name(SEEDS_STAGE),
        dlq_topic=spec.dlq_topic,
        rows=batch.rows,
        control_topic=spec.control_topic,
        origins=batch.origins,
    )
    assert (summary.rows, summary.dead_letters) == (2, 1)

    serde = plan.serde()
    letters = [serde.decode(m.value())[1] for m in read_to_end(kafka, spec.dlq_topic)]
    (letter,) = letters
    assert letter["error_type"] == "MessageTooLarge" and letter["row_index"] == 1
    assert letter["error_message"].startswith("seeds.jsonl:3: ")
    assert (letter["source_file"], letter["source_line"]) == ("seeds.jsonl", 3)
    assert letter["raw"] == huge[:MAX_RAW_BYTES] and letter["raw_truncated"] is True
