"""Looking into a pipeline's topics from the CLI (kcat for this project's topics): `topics list`
with partitions and end offsets, and `tail` decoding Avro batches to JSON lines."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from confluent_kafka import KafkaError, Message, TopicPartition

from fastdistill.broker_check import answering_kafka
from fastdistill.dead_letters import safe
from fastdistill.errors import UserError
from fastdistill.pipeline_file import load_plan, load_spec
from shared.config import KafkaSettings, RegistrySettings
from shared.kafka import clients
from shared.kafka.state import watermarks
from shared.pipeline import PipelineSpec
from shared.serde import AvroSerde, UndecodableMessage

PipelineOpt = Annotated[
    Path | None, typer.Option("--pipeline", "-p", help="pipeline YAML (default: FD_PIPELINE)")
]


def topic_prefix(spec: PipelineSpec) -> str:
    return spec.topic("")  # fd.<name>.


def topics_list(pipeline: PipelineOpt = None) -> None:
    """The pipeline's topics on the broker (its stores' too): partitions and end offsets."""
    spec = load_spec(pipeline)
    kafka = answering_kafka()
    prefix = topic_prefix(spec)
    names = sorted(t for t in clients.admin(kafka).list_topics(timeout=10).topics if t.startswith(prefix))
    if not names:
        raise UserError(
            f"no topics of pipeline {spec.name!r} on {kafka.bootstrap_servers}",
            "`fastdistill topics create` creates them",
            code=1,
        )
    reader = clients.consumer(kafka, f"fd-topics-{uuid.uuid4().hex}")
    try:
        width = max(len(n) for n in names)
        print(f"{'topic':<{width}}  partitions  end offsets (per partition)")
        for name in names:
            ends = [
                watermarks(reader, TopicPartition(name, p))[1]
                for p in range(clients.partition_count(reader, name))
            ]
            print(f"{name:<{width}}  {len(ends):>10}  {sum(ends)} ({' '.join(map(str, ends))})")
    finally:
        reader.close()


def tail(
    topic: Annotated[str, typer.Argument(help="a stage (seeds, a step id), dlq, or a full topic name")],
    n: Annotated[int, typer.Option("-n", min=0, help="how many of the last rows")] = 10,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="then print rows as they come")] = False,
    markers: Annotated[bool, typer.Option(help="also the end-of-run markers, one line each")] = False,
    pipeline: PipelineOpt = None,
) -> None:
    """The last rows of a topic as JSON lines, Avro batches decoded with the pipeline's schemas
    (one line a row, with its run id; records of other topics one line each)."""
    _, spec, plan = load_plan(pipeline)
    kafka = answering_kafka()
    name = _topic_name(spec, topic, kafka)
    serde = plan.serde(RegistrySettings().client())
    lines = [line for msg in _last_messages(kafka, name, n) for line in _lines(serde, msg, markers)]
    for line in lines[len(lines) - n if n else len(lines) :]:
        print(line, flush=True)
    if follow:
        for msg in _follow(kafka, name):
            for line in _lines(serde, msg, markers):
                print(line, flush=True)


def _topic_name(spec: PipelineSpec, topic: str, kafka: KafkaSettings) -> str:
    known = set(clients.admin(kafka).list_topics(timeout=10).topics)
    for name in (topic, spec.topic(topic)):
        if name in known:
            return name
    ours = sorted(t.removeprefix(topic_prefix(spec)) for t in known if t.startswith(topic_prefix(spec)))
    raise UserError(
        f"no topic {topic!r} (nor {spec.topic(topic)!r}) on {kafka.bootstrap_servers}",
        f"this pipeline's: {', '.join(ours) or 'none (fastdistill topics create)'}",
        code=1,
    )


#: Offsets read back beyond 2n per partition, for end-of-run markers between the rows.
MARKER_SLACK = 64


def _last_messages(kafka: KafkaSettings, topic: str, n: int) -> list[Message]:
    """The last `n` (or more) committed messages of each partition, oldest first (a batch holds one row or
    more: enough for the last `n` rows, unless many are end-of-run markers)."""
    reader = clients.consumer(kafka, f"fd-tail-{uuid.uuid4().hex}", **{"enable.partition.eof": True})
    try:
        count = clients.partition_count(reader, topic)
        ends = {p: watermarks(reader, TopicPartition(topic, p)) for p in range(count)}
        todo = {p for p, (low, high) in ends.items() if high > low and n}
        # Offsets count transaction markers too (one after each transaction): 2n offsets back
        # hold at least n messages; the last ones of a partition are often a run's end-of-run
        # markers (one per upstream partition, `-n 1` printed nothing), so MARKER_SLACK more.
        back = 2 * n + MARKER_SLACK
        reader.assign([TopicPartition(topic, p, max(ends[p][0], ends[p][1] - back)) for p in sorted(todo)])
        out: list[Message] = []
        deadline = time.monotonic() + 60
        while todo and time.monotonic() < deadline:
            for msg in reader.consume(num_messages=500, timeout=0.5):
                err = msg.error()
                if err is None:
                    out.append(msg)
                elif err.code() == KafkaError._PARTITION_EOF:
                    todo.discard(msg.partition() or 0)
        return sorted(out, key=lambda m: (m.timestamp()[1], m.partition() or 0, m.offset() or 0))
    finally:
        reader.close()


def _follow(kafka: KafkaSettings, topic: str) -> Iterator[Message]:
    reader = clients.consumer(kafka, f"fd-tail-{uuid.uuid4().hex}", **{"auto.offset.reset": "latest"})
    try:
        count = clients.partition_count(reader, topic)
        ends = {p: watermarks(reader, TopicPartition(topic, p))[1] for p in range(count)}
        reader.assign([TopicPartition(topic, p, end) for p, end in ends.items()])
        while True:
            for msg in reader.consume(num_messages=500, timeout=0.5):
                if msg.error() is None:
                    yield msg
    finally:
        reader.close()


def _lines(serde: AvroSerde, msg: Message, markers: bool) -> Iterator[str]:
    value = msg.value()
    try:
        _, record = serde.decode(value)
    except UndecodableMessage:
        try:  # the runs, gates and control topics hold JSON
            yield json.dumps(json.loads(value or b""), sort_keys=True)
        except ValueError:
            yield json.dumps({"undecodable": safe(repr(value))})
        return
    if "rows" in record and "batch_seq" in record:
        for row in record["rows"]:
            yield json.dumps({"run_id": record["run_id"], **row}, default=_jsonable, ensure_ascii=False)
        if markers and record.get("end_of_run") is not None:
            marker = {"run_id": record["run_id"], "end_of_run": record["end_of_run"]}
            yield json.dumps(marker, default=_jsonable)
        return
    yield json.dumps(record, default=_jsonable, ensure_ascii=False)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    return str(value)


def register(app: typer.Typer, topics: typer.Typer) -> None:
    topics.command("list")(topics_list)
    app.command()(tail)
