"""Run ids are single-use (issue 11 item 3), on the real broker: `produce_run` refuses a run id
that was produced, whether the earlier produce finished long ago or runs at the same moment, and
the registry's "not there" is never an artefact of a transaction that is still open."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastdistill.plan import PipelinePlan
from shared.config import KafkaSettings
from shared.kafka import clients, control
from shared.kafka.run_producer import ProduceSummary, RunIdTaken, produce_run
from shared.kafka.topic_end import TopicEndNotReached, read_to_end
from shared.pipeline import SEEDS_STAGE, PipelineSpec
from tests.runtime.harness import create_topics, write_pipeline

pytestmark = pytest.mark.kafka

ROWS = [{"source_index": i, "text": f"row {i}", "fail": False} for i in range(60)]


@pytest.fixture
def pipe(tmp_path: Path, kafka_bootstrap: str, fresh_topic_prefix: str) -> tuple[PipelinePlan, KafkaSettings]:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, session_timeout_ms=6000)
    steps = [{"id": "shout", "step": "tests.runtime.steps:Shout"}]
    spec = PipelineSpec.load(write_pipeline(tmp_path, f"registry-{fresh_topic_prefix}", steps))
    create_topics(kafka, spec)
    return PipelinePlan.build(spec), kafka


def _produce(
    pipe: tuple[PipelinePlan, KafkaSettings], run_id: str, rows: Any = ROWS, **options: Any
) -> ProduceSummary:
    plan, kafka = pipe
    spec = plan.spec
    return produce_run(
        kafka,
        plan.serde(),
        run_id=run_id,
        topic=spec.topic(SEEDS_STAGE),
        schema=plan.schema_name(SEEDS_STAGE),
        dlq_topic=spec.dlq_topic,
        rows=rows,
        batch_size=10,
        control_topic=spec.control_topic,
        **options,
    )


def _seed_indexes(pipe: tuple[PipelinePlan, KafkaSettings], run_id: str) -> list[int]:
    """Source indexes of the run's rows on the seeds topic (committed), and its end markers."""
    plan, kafka = pipe
    serde = plan.serde()
    indexes = []
    for msg in read_to_end(kafka, plan.spec.topic(SEEDS_STAGE)):
        _, record = serde.decode(msg.value())
        if record["run_id"] == run_id:
            indexes += [row["source_index"] for row in record["rows"]]
    return sorted(indexes)


def test_a_produced_run_id_is_refused_and_a_failed_one_can_be_retried(
    pipe: tuple[PipelinePlan, KafkaSettings],
) -> None:
    assert _produce(pipe, "run-a").rows == len(ROWS)
    with pytest.raises(RunIdTaken, match="run id 'run-a' was produced already"):
        _produce(pipe, "run-a")
    assert _seed_indexes(pipe, "run-a") == list(range(len(ROWS)))  # one copy

    def failing() -> Iterator[dict[str, Any]]:
        yield from ROWS[:25]
        raise OSError("seed file vanished")

    with pytest.raises(OSError, match="vanished"):
        _produce(pipe, "run-b", failing())
    # The failed produce left nothing, not even its registration: the run id is free.
    assert _produce(pipe, "run-b").rows == len(ROWS)
    assert _seed_indexes(pipe, "run-b") == list(range(len(ROWS)))

    # The registration carries the run's limit, which is what the services read.
    _produce(pipe, "run-c", limit=7)
    plan, kafka = pipe
    limits = {r["run_id"]: r["limit"] for r in control.read_all(kafka, plan.spec.control_topic)}
    assert limits == {"run-a": None, "run-b": None, "run-c": 7}


def test_of_two_produces_of_one_run_id_at_the_same_time_exactly_one_commits(
    pipe: tuple[PipelinePlan, KafkaSettings],
) -> None:
    halfway, go_on = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def slow() -> Iterator[dict[str, Any]]:
        yield from ROWS[:30]
        halfway.set()
        go_on.wait(60)
        yield from ROWS[30:]

    def first() -> None:
        try:
            outcome["first"] = _produce(pipe, "run-x", slow())
        except Exception as exc:
            outcome["first"] = exc

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert halfway.wait(60)
        # The first is mid-transaction: the second's init_transactions aborts it and fences it.
        assert _produce(pipe, "run-x").rows == len(ROWS)
    finally:
        go_on.set()
        thread.join(120)
    assert isinstance(outcome["first"], RunIdTaken), outcome
    assert "being produced by another process" in str(outcome["first"])
    assert _seed_indexes(pipe, "run-x") == list(range(len(ROWS)))  # exactly one copy
    with pytest.raises(RunIdTaken, match="produced already"):
        _produce(pipe, "run-x")


def test_the_registry_sees_a_run_committed_behind_an_open_transaction(
    pipe: tuple[PipelinePlan, KafkaSettings], fresh_topic_prefix: str
) -> None:
    """A read_committed reader stops at the first open transaction, so a registration committed
    after it is invisible to a plain read: the registry waits instead of answering "no"."""
    plan, kafka = pipe
    topic = plan.spec.control_topic

    def transaction(name: str, run_id: str) -> Any:
        producer = clients.transactional_producer(
            kafka, f"{name}-{fresh_topic_prefix}", **{"transaction.timeout.ms": 120_000}
        )
        producer.init_transactions(30)
        producer.begin_transaction()
        clients.produce(producer, topic, control.register_record(run_id, None), run_id)
        producer.flush(30)
        return producer

    other = transaction("other", "run-other")  # e.g. another run's produce, about to commit
    transaction("earlier", "run-z").commit_transaction(30)  # run-z, committed behind it
    with pytest.raises(TopicEndNotReached, match="a transaction is still open"):
        control.is_registered(kafka, topic, "run-z", timeout_s=3)
    timer = threading.Timer(2.0, other.commit_transaction, args=(30,))
    timer.start()
    try:
        with pytest.raises(RunIdTaken, match="run id 'run-z' was produced already"):
            _produce(pipe, "run-z")
    finally:
        timer.join()
    assert control.is_registered(kafka, topic, "run-other", timeout_s=60)
    assert not control.is_registered(kafka, topic, "run-never", timeout_s=60)
    assert _seed_indexes(pipe, "run-z") == []
