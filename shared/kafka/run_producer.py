"""Writing one run's rows to a pipeline's first topic, atomically, followed by its end markers.

Run ids are single-use. The producer's transactional id is derived from the run id, so once
`init_transactions` returns, any earlier produce of the same run id has committed or aborted,
and a concurrent one is fenced (its commit fails). The run is then looked up in the run
registry (the control topic, `control.is_registered`) and refused if it is there; otherwise
its registration is written in the same transaction as its seeds. Of two produces of one run
id, whatever their timing, exactly one commits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from shared.config import KafkaSettings
from shared.kafka import clients, control
from shared.runtime.batching import MESSAGE_OVERHEAD, fit, too_large_message
from shared.runtime.dead_letter import DEAD_LETTER_SCHEMA, RecordOrigin, dead_letter
from shared.serde import AvroSerde
from shared.step import Row


def content_partition(row: Row, partitions: int) -> int:
    """The partition of a row by its content (all but `source_index`).

    Copies of one seed then travel one partition, in file order, through every step: however
    the steps interleave partitions, the first copy in the file reaches dedup first and wins in
    every run, so the dataset does not depend on timing. (Rows that differ outside dedup's key
    but share it may still race.)
    """
    content = {k: v for k, v in row.items() if k != "source_index"}
    blob = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return zlib.crc32(blob.encode()) % partitions


class RunIdTaken(Exception):
    """The run id was produced before (or is being produced by another process right now)."""


#: What a producer whose transactional id another process took over (fenced) reports.
#: librdkafka's own log lines of the produce client: what goes wrong there (a takeover of the
#: run id fencing this producer, a broker away) is raised here and said once by the caller, so
#: the client's raw lines stay out of a CLI user's terminal (a handler may lower the level).
_CLIENT_LOG = logging.getLogger("fastdistill.produce.librdkafka")
_CLIENT_LOG.setLevel(logging.CRITICAL)
_FENCED = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}


@dataclass
class ProduceSummary:
    run_id: str
    rows: int
    batches: int
    dead_letters: int


def produce_run(
    kafka: KafkaSettings,
    serde: AvroSerde,
    *,
    run_id: str,
    topic: str,
    schema: str,
    dlq_topic: str,
    rows: Iterable[Row],
    dead_letters: Iterable[dict[str, Any]] = (),
    batch_size: int = 500,
    stage: str = "seeds",
    limit: int | None = None,
    control_topic: str | None = None,
    origins: Mapping[int, RecordOrigin] | None = None,
    cache: bool = True,
    seed_file: Mapping[str, str] | None = None,
) -> ProduceSummary:
    """One transaction: batches over the partitions by content (`content_partition`), DLQ
    records, on every partition the run's end marker (as source partition 0 of 1), and the run's
    registration with its limit (if any) on the control topic. A failed ingest leaves nothing
    visible to the pipeline, so it can simply be run again; a run id already produced raises
    RunIdTaken (see the module doc). `origins` (source_index -> file record) gives a row too
    large to send its file bytes in its dead letter. `cache=False` (`produce --no-cache`): the
    registration says so, and no step answers the run's rows from a cache. `seed_file` ({"name",
    "sha256"}) goes into the registration, for the dataset card."""
    if (limit is not None or not cache) and control_topic is None:
        raise ValueError("a run with a limit or without the cache needs the pipeline's control topic")
    producer: Producer = clients.transactional_producer(
        kafka, f"fd-produce-{topic}-{run_id}", **{"transaction.timeout.ms": 300_000, "logger": _CLIENT_LOG}
    )
    producer.init_transactions(30)
    if control_topic is not None and control.is_registered(kafka, control_topic, run_id):
        raise RunIdTaken(f"run id {run_id!r} was produced already (run ids are single-use)")
    partitions = clients.partition_count(producer, topic)
    producer.begin_transaction()
    seq = 0
    total = 0
    n_dead = 0
    max_bytes = kafka.max_message_bytes - MESSAGE_OVERHEAD
    # Where every row's end-to-end latency starts (the steps carry it on, oldest first).
    origin_ms = int(time.time() * 1000)

    def encode(part: list[Row], end_of_run: dict[str, Any] | None) -> bytes:
        record = {
            "run_id": run_id,
            "stage": stage,
            "producer": "produce",
            "batch_seq": seq,
            "lineage": [],
            "rows": part,
            "end_of_run": end_of_run,
            "origin_ms": origin_ms,
        }
        return serde.encode(schema, record)

    def send(batch: list[Row], end_of_run: dict[str, Any] | None, partition: int) -> None:
        """The batch in as many messages as it takes; a row too large for any is dead-lettered."""
        nonlocal seq, total, n_dead
        values, too_large = fit(batch, lambda part: encode(part, end_of_run), max_bytes)
        for value in values:
            clients.produce(producer, topic, value, run_id, partition)
        seq += 1
        for row, size in too_large:
            origin = (origins or {}).get(row["source_index"])
            where = f"{origin.file}:{origin.line}: " if origin else ""
            record = dead_letter(
                step="produce",
                error_type="MessageTooLarge",
                error_message=where + too_large_message(size, kafka.max_message_bytes),
                run_id=run_id,
                row=row,
                origin=origin,
            )
            clients.produce(producer, dlq_topic, serde.encode(DEAD_LETTER_SCHEMA, record), run_id)
            total -= 1
            n_dead += 1

    try:
        batches: dict[int, list[Row]] = {}
        for row in rows:
            partition = content_partition(row, partitions)
            batch = batches.setdefault(partition, [])
            batch.append(row)
            total += 1
            if len(batch) >= batch_size:
                send(batch, None, partition)
                batches[partition] = []
        for partition, batch in sorted(batches.items()):
            if batch:
                send(batch, None, partition)
        for record in dead_letters:
            clients.produce(producer, dlq_topic, serde.encode(DEAD_LETTER_SCHEMA, record), run_id)
            n_dead += 1
        for partition in range(partitions):
            send([], {"source_partition": 0, "source_partitions": 1, "rows_before": total}, partition)
        if control_topic is not None:
            # Last, once the rest is on the broker: read_committed readers of the control topic
            # (every service, the registry check of every produce) wait on an open transaction
            # from its first record there until its commit, which is then a moment away.
            producer.flush(300)
            registration = control.register_record(run_id, limit, cache, seed_file)
            clients.produce(producer, control_topic, registration, run_id)
        producer.commit_transaction(300)
    except KafkaException as exc:
        if exc.args[0].code() in _FENCED:
            raise RunIdTaken(
                f"run id {run_id!r} is being produced by another process, which took it over; "
                "run ids are single-use"
            ) from exc
        _abort(producer)
        raise
    except BaseException:
        _abort(producer)
        raise
    return ProduceSummary(run_id, total, seq - partitions, n_dead)


def _abort(producer: Producer) -> None:
    """Abort the open transaction, without hiding the error that led here if that fails too."""
    # If this fails too, the broker aborts it at transaction.timeout.ms; the original error is
    # what the caller must see.
    with contextlib.suppress(KafkaException):
        producer.abort_transaction(30)
