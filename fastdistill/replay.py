"""Replaying a finished run from any step as a new run.

A replay from step S recomputes S and every step downstream of it. The stages those steps read
from outside that set (S's inputs, and in a DAG the other side of a join below S) hold every
batch of every run on their topics: the replay reads the original run's batches there
(read_committed, until the end-of-run markers of every partition) and re-produces them under a
new run id onto the same topics and partitions, in one transaction, followed by its own
end-of-run markers. Every re-produced record carries two Kafka headers naming the original run
and S: a step outside S's downstream that reads one of those topics (a sibling branch) skips
them, and the coordinator knows the run starts there, waits for no other stage and records the
lineage in the run's state and reports.

Recomputing costs nothing where nothing changed: deterministic steps give the same rows, and the
teacher's generation cache is keyed by the request, so only rows whose request changed are paid
for again. `--from auto` picks the first step whose signature (`Step.signature()`) differs from
the one its own stage's records carry at the end of their lineage.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from fastdistill.plan import PipelinePlan
from fastdistill.runs import run_states
from shared.config import KafkaSettings
from shared.kafka import clients
from shared.runtime.markers import MarkerTracker
from shared.serde import AvroSerde, UndecodableMessage

#: Kafka headers of every record a replay produces: the original run and the step replayed from.
REPLAY_OF = "fd-replay-of"
FROM_STEP = "fd-from-step"
AUTO = "auto"


class ReplayError(RuntimeError):
    """A replay that cannot start; nothing was produced."""


@dataclass
class ReplaySummary:
    run_id: str
    replay_of: str
    from_step: str
    input_stage: str
    rows: int
    batches: int


def replay_headers(replay_of: str, from_step: str) -> list[tuple[str, bytes]]:
    return [(REPLAY_OF, replay_of.encode()), (FROM_STEP, from_step.encode())]


def replay_origin(
    headers: Mapping[str, str | bytes | None] | Sequence[tuple[str, str | bytes | None]] | None,
) -> tuple[str, str] | None:
    """(original run, step replayed from) of a record a replay produced, else None.

    Takes every shape confluent-kafka types headers with; a consumed message has (name, bytes) pairs.
    """
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    found = {name: _text(value) for name, value in pairs if value is not None}
    if REPLAY_OF not in found or FROM_STEP not in found:
        return None
    return found[REPLAY_OF], found[FROM_STEP]


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode(errors="replace")


def changed_step(plan: PipelinePlan, lineages: dict[str, list[str]]) -> str | None:
    """The first step (in stage order) whose signature is not the last of the lineage its own
    stage's records carry (`lineages`: stage -> a lineage read there); None: none changed. A step
    inside an operator chain whose topic is not written is looked for in its chain's last stage."""
    for step_id in plan.spec.topological_order():
        signature = plan.steps[step_id].signature()
        if plan.written(step_id):
            lineage = lineages.get(step_id)
            if not lineage or lineage[-1] != signature:
                return step_id
        elif signature not in lineages.get(plan.chain_of(step_id)[-1], []):
            return step_id
    return None


def read_run(
    kafka: KafkaSettings,
    serde: AvroSerde,
    topic: str,
    schema: str,
    run_id: str,
    *,
    first_only: bool = False,
    timeout_s: float = 120.0,
) -> list[tuple[int, dict[str, Any]]]:
    """The run's records on `topic` as (partition, record), markers included, in each partition's
    order, up to the end-of-run markers of every partition (or only the first record).

    Raises ReplayError when the topic ends before the run has drained on every partition."""
    consumer = clients.consumer(kafka, f"fd-replay-read-{uuid.uuid4().hex}")
    try:
        partitions = clients.partition_count(consumer, topic)
        marks = [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30) for p in range(partitions)
        ]
        # Partitions with nothing to read count as read from the start (their position stays unset).
        unread = {p for p, (low, high) in enumerate(marks) if high > low}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        tracker = MarkerTracker()
        records: list[tuple[int, dict[str, Any]]] = []
        deadline = time.monotonic() + timeout_s
        while len(tracker.drained_partitions(run_id)) < partitions and not (first_only and records):
            if time.monotonic() > deadline:
                raise ReplayError(f"reading run {run_id} on {topic} took over {timeout_s}s")
            unread -= {
                tp.partition
                for tp in consumer.position(consumer.assignment())
                if tp.offset >= marks[tp.partition][1]
            }
            if not unread:
                if first_only:
                    break
                drained = len(tracker.drained_partitions(run_id))
                raise ReplayError(
                    f"run {run_id} has not finished on {topic}: {drained} of {partitions} partitions drained"
                )
            for msg in consumer.consume(num_messages=500, timeout=0.5):
                if msg.error() is not None:
                    continue
                partition = clients.position(msg)[1]
                try:
                    _, record = serde.decode(msg.value(), expect=schema)
                except UndecodableMessage:
                    continue  # dead-lettered by the step reading the topic; not part of any run
                if record.get("run_id") != run_id:
                    continue
                records.append((partition, record))
                marker = record["end_of_run"]
                if marker is not None:
                    tracker.observe(
                        run_id, partition, marker["source_partition"], marker["source_partitions"]
                    )
        return records
    finally:
        consumer.close()


def resolve_step(
    plan: PipelinePlan, kafka: KafkaSettings, serde: AvroSerde, replay_of: str, from_step: str
) -> str:
    """`from_step` itself, or for `auto` the first step whose signature changed since the run."""
    spec = plan.spec
    if from_step != AUTO:
        spec.step(from_step)  # KeyError naming the steps when it is not one
        return from_step
    lineages: dict[str, list[str]] = {}
    for stage in spec.topological_order():
        if not plan.written(stage):
            continue
        first = read_run(kafka, serde, spec.topic(stage), plan.schema_name(stage), replay_of, first_only=True)
        if first:
            lineages[stage] = list(first[0][1]["lineage"])
    if not lineages:
        raise ReplayError(
            f"run {replay_of} has nothing on the topics of {spec.name} to read its lineage from"
        )
    step = changed_step(plan, lineages)
    if step is None:
        raise ReplayError(f"no step changed since run {replay_of}: name the step to replay from with --from")
    return step


def replay_run(
    plan: PipelinePlan,
    kafka: KafkaSettings,
    serde: AvroSerde,
    replay_of: str,
    from_step: str = AUTO,
    run_id: str | None = None,
) -> ReplaySummary:
    spec = plan.spec
    states = run_states(spec, kafka)
    original = states.get(replay_of)
    if original is None or original["status"] != "done":
        status = original and original["status"]
        raise ReplayError(f"run {replay_of} is not a finished run of {spec.name} (status: {status})")
    new_run = run_id or f"{replay_of}.replay-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
    if new_run in states:
        raise ReplayError(f"run {new_run} exists already")
    step = resolve_step(plan, kafka, serde, replay_of, from_step)
    if not all(plan.written(stage) for stage in spec.replay_stages(step)[0]):
        # Inside an operator chain the stages before `step` have no topic to replay from: the
        # chain starts again at its first step (the steps before `step` recompute, deterministically).
        step = plan.chain_of(step)[0]
    sources, _ = spec.replay_stages(step)
    originals = {
        stage: read_run(kafka, serde, spec.topic(stage), plan.schema_name(stage), replay_of)
        for stage in sources
    }
    producer = clients.transactional_producer(
        kafka, f"fd-replay-{spec.name}-{new_run}", **{"transaction.timeout.ms": 300_000}
    )
    producer.init_transactions(30)
    headers = replay_headers(replay_of, step)
    rows = batches = 0
    seq = 0
    origin_ms = int(time.time() * 1000)
    producer.begin_transaction()
    try:
        for stage, records in originals.items():
            topic, schema = spec.topic(stage), plan.schema_name(stage)

            def send(
                partition: int, record: dict[str, Any], topic: str = topic, schema: str = schema
            ) -> None:
                nonlocal seq
                # A replay is a new run: its rows' end-to-end latency starts now, not at the original's.
                record |= {"run_id": new_run, "producer": "replay", "batch_seq": seq, "origin_ms": origin_ms}
                clients.produce(producer, topic, serde.encode(schema, record), new_run, partition, headers)
                seq += 1

            rows_by_partition: dict[int, int] = {}
            # Same partitions as the original: a step partitioned by key (dedup) meets each key once.
            for partition, record in records:
                if record["end_of_run"] is None:
                    rows_by_partition[partition] = rows_by_partition.get(partition, 0) + len(record["rows"])
                    send(partition, record)
                    batches += 1
            # The markers carry the lineage too: a step takes its output's lineage from its input's.
            lineage = records[0][1]["lineage"] if records else []
            for partition in range(clients.partition_count(producer, topic)):
                marker = {
                    "source_partition": 0,
                    "source_partitions": 1,
                    "rows_before": rows_by_partition.get(partition, 0),
                }
                send(partition, {"stage": stage, "lineage": lineage, "rows": [], "end_of_run": marker})
            rows += sum(rows_by_partition.values())
        producer.commit_transaction(300)
    except BaseException:
        producer.abort_transaction(30)
        raise
    return ReplaySummary(new_run, replay_of, step, ", ".join(sources), rows, batches)
