"""Building small test pipelines of `tests.runtime.steps` on the real broker."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer

from fastdistill.plan import PipelinePlan
from fastdistill.topics import pipeline_topics
from shared.config import KafkaSettings
from shared.kafka import clients
from shared.kafka.run_producer import produce_run
from shared.pipeline import SEEDS_STAGE, PipelineSpec
from shared.serde import AvroSerde

SEED_SCHEMA = str(Path(__file__).with_name("text_seed.avsc"))
SEED_MODEL = "tests.runtime.steps:TextSeed"


def write_pipeline(folder: Path, name: str, steps: list[dict[str, Any]], **extra: Any) -> Path:
    spec = {
        "name": name,
        "partitions": 4,
        "batch_size": 100,
        "seed_schema": SEED_SCHEMA,
        "seed_model": SEED_MODEL,
        "steps": steps,
        "sink": {"output_dir": str(folder / "out"), "await_gate": False},
    } | extra
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def create_topics(kafka: KafkaSettings, spec: PipelineSpec) -> None:
    clients.ensure_topics(clients.admin(kafka), pipeline_topics(spec))


def write_seeds(path: Path, n: int, failing: set[int] = frozenset()) -> Path:  # type: ignore[assignment]
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"text": f"row {i}", "fail": i in failing}) + "\n")
    return path


def produce_rows(kafka: KafkaSettings, plan: PipelinePlan, run_id: str, rows: list[dict[str, Any]]) -> None:
    spec = plan.spec
    produce_run(
        kafka,
        plan.serde(),
        run_id=run_id,
        topic=spec.topic(SEEDS_STAGE),
        schema=plan.schema_name(SEEDS_STAGE),
        dlq_topic=spec.dlq_topic,
        rows=rows,
        batch_size=spec.batch_size,
    )


def read_all(
    kafka: KafkaSettings, serde: AvroSerde, topic: str, *, until: Any, timeout_s: float = 60
) -> list[tuple[str, dict[str, Any]]]:
    """Committed records of `topic` from the start, until `until(records)` holds."""
    consumer = Consumer(
        kafka.client_conf()
        | {
            "group.id": f"reader-{time.monotonic_ns()}",
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    records: list[tuple[str, dict[str, Any]]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not until(records):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: condition not met after {timeout_s}s ({len(records)} records)")
            for msg in consumer.consume(500, 0.2):
                if msg.error() is None:
                    records.append(serde.decode(msg.value()))
        return records
    finally:
        consumer.close()


def rows_of(records: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [row for _, rec in records if "rows" in rec for row in rec["rows"]]


def markers_of(records: list[tuple[str, dict[str, Any]]]) -> int:
    return sum(1 for _, rec in records if rec.get("end_of_run") is not None)


def rows_out(port: int, step: str) -> float:
    """A service's fd_rows_out_total (0 while its /metrics does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith(f'fd_rows_out_total{{step="{step}"}}'):
                    return float(line.split()[-1])
    except OSError:
        pass  # the service's loop is busy (a rebalance reloads its state); the caller polls again
    return 0.0


def wait_rows_out(port: int, step: str, at_least: float, timeout_s: float = 60) -> float:
    deadline = time.monotonic() + timeout_s
    while (done := rows_out(port, step)) < at_least:
        assert time.monotonic() < deadline, f"{step} made no progress past {done} rows"
        time.sleep(0.05)
    return done
