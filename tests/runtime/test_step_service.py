"""The step runtime in-process against the real broker: error policies, garbage input,
backpressure."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from fastdistill.plan import PipelinePlan
from fastdistill.services.step import StepService
from shared.config import KafkaSettings, ServiceSettings
from shared.kafka import clients
from shared.pipeline import SEEDS_STAGE, PipelineSpec
from shared.runtime.dead_letter import dead_letter
from shared.runtime.runner import StepFailed
from tests.runtime.harness import create_topics, markers_of, produce_rows, read_all, rows_of, write_pipeline

pytestmark = pytest.mark.kafka

N = 1000
FAILING = {7, 500, 999}


def _rows(n: int = N, failing: set[int] = FAILING) -> list[dict]:
    return [{"source_index": i, "text": f"row {i}", "fail": i in failing} for i in range(n)]


def _setup(tmp_path: Path, name: str, kafka: KafkaSettings, **step: object) -> PipelinePlan:
    spec = PipelineSpec.load(
        write_pipeline(tmp_path, name, [{"id": "shout", "step": "tests.runtime.steps:Shout", **step}])
    )
    create_topics(kafka, spec)
    return PipelinePlan.build(spec)


def _service(
    plan: PipelinePlan, kafka: KafkaSettings, step_id: str = "shout", pause_after_full_s: float = 5.0
) -> StepService:
    settings = ServiceSettings(metrics_port=0, instance_id="test", pause_after_full_s=pause_after_full_s)
    return StepService(plan.service_steps(step_id), plan.wiring(step_id), plan.serde(), kafka, settings)


def _run_in_background(service: StepService, check: Callable[[], Any]) -> Any:
    async def main() -> object:
        task = asyncio.create_task(service.run())
        try:
            return await asyncio.to_thread(check)
        finally:
            service.stop()
            await task

    return asyncio.run(main())


@pytest.fixture
def kafka(kafka_bootstrap: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=kafka_bootstrap, session_timeout_ms=6000)


def test_collect_sends_failing_rows_to_the_dlq_and_the_rest_flow(
    tmp_path: Path, kafka: KafkaSettings, fresh_topic_prefix: str
) -> None:
    plan = _setup(tmp_path, f"collect-{fresh_topic_prefix}", kafka, error_policy="COLLECT")
    produce_rows(kafka, plan, "run-1", _rows())
    service = _service(plan, kafka)
    serde = plan.serde()
    spec = plan.spec

    def check() -> tuple[list, list]:
        out = read_all(kafka, serde, spec.topic("shout"), until=lambda r: markers_of(r) >= 16)
        dlq = read_all(kafka, serde, spec.dlq_topic, until=lambda r: len(r) >= len(FAILING))
        return out, dlq

    out, dlq = _run_in_background(service, check)
    rows = rows_of(out)
    assert sorted(r["source_index"] for r in rows) == sorted(set(range(N)) - FAILING)
    assert all(r["shout"] == r["text"].upper() for r in rows)
    letters = [rec for _, rec in dlq]
    assert sorted(rec["row_index"] for rec in letters) == sorted(FAILING)
    for rec in letters:
        assert rec["step"] == "shout"
        assert rec["run_id"] == "run-1"
        assert rec["error_type"] == "ValueError"
        assert rec["error_message"] == f"row {rec['row_index']} asked to fail"


def test_ignore_drops_failing_rows(tmp_path: Path, kafka: KafkaSettings, fresh_topic_prefix: str) -> None:
    plan = _setup(tmp_path, f"ignore-{fresh_topic_prefix}", kafka, error_policy="IGNORE")
    produce_rows(kafka, plan, "run-1", _rows())
    serde, spec = plan.serde(), plan.spec
    out = _run_in_background(
        _service(plan, kafka),
        lambda: read_all(kafka, serde, spec.topic("shout"), until=lambda r: markers_of(r) >= 16),
    )
    assert sorted(r["source_index"] for r in rows_of(out)) == sorted(set(range(N)) - FAILING)
    # Nothing of it went to the DLQ: the topic holds no record at all.
    consumer = clients.consumer(kafka, "wm")
    assert all(
        consumer.get_watermark_offsets(TopicPartition(spec.dlq_topic, p), timeout=10)[1] == 0
        for p in range(spec.partitions)
    )
    consumer.close()


def test_fail_fast_stops_with_a_clear_error(
    tmp_path: Path, kafka: KafkaSettings, fresh_topic_prefix: str
) -> None:
    plan = _setup(tmp_path, f"failfast-{fresh_topic_prefix}", kafka, error_policy="FAIL_FAST")
    produce_rows(kafka, plan, "run-1", _rows())
    service = _service(plan, kafka)
    with pytest.raises(
        StepFailed, match=r"step shout failed on row source_index=\d+ .*ValueError: row \d+ asked"
    ):
        asyncio.run(asyncio.wait_for(service.run(), 60))


def test_garbage_and_wrong_schema_bytes_go_to_the_dlq(
    tmp_path: Path, kafka: KafkaSettings, fresh_topic_prefix: str
) -> None:
    plan = _setup(tmp_path, f"garbage-{fresh_topic_prefix}", kafka)
    spec, serde = plan.spec, plan.serde()
    producer = clients.producer(kafka)
    seeds = spec.topic(SEEDS_STAGE)
    # Garbage, a valid record of the wrong schema (a dead letter), then valid rows.
    producer.produce(seeds, value=b"\x00garbage", partition=0)
    wrong = serde.encode("dead_letter", dead_letter(step="s", error_type="E", error_message="m"))
    producer.produce(seeds, value=wrong, partition=1)
    producer.produce(
        seeds,
        value=serde.encode(
            plan.schema_name("shout"),
            {
                "run_id": "x",
                "stage": "shout",
                "producer": "p",
                "batch_seq": 0,
                "lineage": [],
                "rows": [],
                "end_of_run": None,
                "origin_ms": 0,
            },
        ),
        partition=2,
    )
    producer.flush(10)
    produce_rows(kafka, plan, "run-1", _rows(100, set()))

    def check() -> tuple[list, list]:
        out = read_all(kafka, serde, spec.topic("shout"), until=lambda r: markers_of(r) >= 16)
        dlq = read_all(kafka, serde, spec.dlq_topic, until=lambda r: len(r) >= 3)
        return out, dlq

    out, dlq = _run_in_background(_service(plan, kafka), check)
    assert len(rows_of(out)) == 100
    reasons = sorted(rec["error_message"] for _, rec in dlq)
    assert all(rec["error_type"] == "UndecodableMessage" for _, rec in dlq)
    assert any("not an Avro message of this pipeline" in r for r in reasons)
    assert any("a dead_letter record is not input of step shout" in r for r in reasons)
    assert any("a batch:shout record is not input of step shout" in r for r in reasons)
    assert all(rec["payload_encoding"] == "BASE64" for _, rec in dlq)


@pytest.mark.parametrize("pause_after_s", [5.0, 0.0], ids=["hold", "hold-then-pause"])
def test_backpressure_keeps_buffered_rows_under_the_cap(
    tmp_path: Path,
    kafka: KafkaSettings,
    fresh_topic_prefix: str,
    pause_after_s: float,
) -> None:
    cap = 120
    spec = PipelineSpec.load(
        write_pipeline(
            tmp_path,
            f"bp-{fresh_topic_prefix}",
            [
                {
                    "id": "slow",
                    "step": "tests.runtime.steps:Slow",
                    "params": {"delay_s": 0.02},
                    "max_in_flight": 16,
                    "max_buffered_rows": cap,
                },
            ],
            batch_size=20,
        )
    )
    create_topics(kafka, spec)
    plan = PipelinePlan.build(spec)
    produce_rows(kafka, plan, "run-1", _rows(2000, set()))
    service = _service(plan, kafka, "slow", pause_after_s)
    out = _run_in_background(
        service,
        lambda: read_all(
            kafka, plan.serde(), spec.topic("slow"), until=lambda r: markers_of(r) >= 16, timeout_s=120
        ),
    )
    assert len(rows_of(out)) == 2000
    # Measured by the service after every poll: never above the cap, and the cap was reached.
    runner = service.runner
    assert runner.buffered_max <= cap
    assert runner.buffered_max >= cap - 20
    assert runner.pause.holds > 0
    # Short holds only stop consuming; a hold longer than pause_after_full_s pauses the partitions.
    assert (runner.pause.pauses > 0) == (pause_after_s == 0.0)
