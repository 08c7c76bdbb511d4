"""Run control: a compacted topic, keyed by run id, saying what a run may still consume.

`fastdistill produce --limit N` writes `{"run_id", "limit": N}` in the transaction of the run's
seeds; once N rows of the run have passed the final stage, the coordinator writes
`{"run_id", "limit": N, "stop": true}` in the transaction of its run state. Every step service
tails the topic (`ControlView`) and drops the rows of a stopped run instead of processing them,
while the run's end markers flow on, so the run drains and finishes as any other.

The topic is also the run registry: every `fastdistill produce` writes `{"run_id", "limit",
"registered": true}` in the transaction of the run's seeds, so a run id that has a record here
was produced (`is_registered`), and a second produce of it is refused.

`fastdistill produce --no-cache` adds `"cache": false` to that record: steps with caches (the
teacher's generation cache) then ask `StepContext.cache_enabled()`, which the runtime answers
from this view, and answer none of the run's rows from them. A record without the field (any
earlier one, or the coordinator's stop) means the cache is on; a run's option is set once, by its
producer, and a later record never turns it back on.

The registration also names the seed file it was made from, `"seed_file": {"name", "sha256"}`,
which the sink puts in the dataset card. (A limited run's stop record, written later under the
same key, carries no seed file: once compaction drops the registration, a service starting after
that no longer learns it; the sink releases a run long before, and keeps what it saw.)
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from shared.config import KafkaSettings
from shared.kafka import clients
from shared.kafka.state import read_compacted
from shared.kafka.topic_end import read_to_end

log = logging.getLogger(__name__)


def limit_record(run_id: str, limit: int) -> bytes:
    return json.dumps({"run_id": run_id, "limit": limit, "stop": False}).encode()


def register_record(
    run_id: str, limit: int | None, cache: bool = True, seed_file: Mapping[str, str] | None = None
) -> bytes:
    """What `produce` writes for every run (with its limit, None for none, `cache: false` for a
    run produced with `--no-cache`, and the file its seeds came from, if any: name and SHA-256)."""
    record: dict[str, Any] = {"run_id": run_id, "limit": limit, "stop": False, "registered": True}
    if not cache:
        record["cache"] = False
    if seed_file is not None:
        record["seed_file"] = {"name": str(seed_file["name"]), "sha256": str(seed_file["sha256"])}
    return json.dumps(record).encode()


def stop_record(run_id: str, limit: int) -> bytes:
    return json.dumps({"run_id": run_id, "limit": limit, "stop": True}).encode()


def parse(value: bytes | None) -> dict[str, Any] | None:
    """A control record, or None for anything that is not one (logged: the topic is re-read whole
    at every start, so a dead letter would repeat)."""
    try:
        record = json.loads(value or b"")
        if isinstance(record, dict) and isinstance(record.get("run_id"), str):
            limit = record.get("limit")
            if limit is None or (type(limit) is int and limit >= 0):  # not a bool, not a float
                parsed = {
                    "run_id": record["run_id"],
                    "limit": limit,
                    "stop": record.get("stop") is True,
                    # Only an explicit false turns the cache off: absent is the default, on.
                    "cache": record.get("cache") is not False,
                }
                seed_file = record.get("seed_file")
                if isinstance(seed_file, dict) and all(
                    isinstance(seed_file.get(k), str) for k in ("name", "sha256")
                ):
                    parsed["seed_file"] = {"name": seed_file["name"], "sha256": seed_file["sha256"]}
                return parsed
    except (ValueError, RecursionError):
        pass
    log.warning("skipping a malformed run-control record: %r", (value or b"")[:200])
    return None


def read_all(kafka: KafkaSettings, topic: str) -> list[dict[str, Any]]:
    """The latest control record of every run, read to the topic's end."""
    return [r for value in read_compacted(kafka, topic).values() if (r := parse(value)) is not None]


def is_registered(kafka: KafkaSettings, topic: str, run_id: str, timeout_s: float = 60.0) -> bool:
    """Whether the control topic holds a committed record of `run_id` (a registration, a limit or
    a stop: each exists only for a produced run), read to its end as of now.

    "Its end" is the high watermark, not the last stable offset a read_committed reader stops
    at: a record committed after a transaction that is still open (another run's produce) sits
    beyond that offset, so the read waits until every transaction open now has ended
    (TopicEndNotReached after `timeout_s`). The caller's own earlier transactions have ended
    already (`init_transactions` of its transactional id completes or aborts them), so a
    produce that committed is always seen.
    """
    key = run_id.encode()
    messages = read_to_end(kafka, topic, timeout_s=timeout_s, past_open_transactions=True)
    with contextlib.closing(messages):
        for msg in messages:
            if msg.key() == key and (record := parse(msg.value())) is not None and record["run_id"] == run_id:
                return True
    return False


@dataclass
class ControlFold:
    """The latest word on every run, folded from control records in any order."""

    limits: dict[str, int] = field(default_factory=dict)
    stopped: set[str] = field(default_factory=set)
    #: runs produced with `--no-cache`
    no_cache: set[str] = field(default_factory=set)
    #: run -> {"name", "sha256"} of the file its seeds came from (registrations that say)
    seed_files: dict[str, dict[str, str]] = field(default_factory=dict)

    def apply(self, record: dict[str, Any]) -> None:
        if record["limit"] is not None:
            self.limits[record["run_id"]] = record["limit"]
        if record["stop"]:
            self.stopped.add(record["run_id"])
        if not record["cache"]:
            self.no_cache.add(record["run_id"])
        if "seed_file" in record:
            self.seed_files[record["run_id"]] = record["seed_file"]

    def cache_enabled(self, run_id: str) -> bool:
        return run_id not in self.no_cache


class ControlView(ControlFold):
    """The control records of every run, tailed without a consumer group (nothing is
    committed: the topic is compacted and read whole at every start)."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        super().__init__()
        self.kafka = kafka
        self.topic = topic
        self.consumer: Consumer = clients.consumer(self.kafka, f"fd-control-{uuid.uuid4().hex}")
        partitions = clients.partition_count(self.consumer, self.topic)
        self.consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in range(partitions)])

    def poll(self, timeout: float = 0) -> None:
        for msg in self.consumer.consume(num_messages=100, timeout=timeout):
            self.observe(msg)

    def catch_up(self) -> None:
        """Everything the topic holds now (a service that must not miss a record written before
        it started calls this once; tailing then re-reads it, which changes nothing)."""
        for record in read_all(self.kafka, self.topic):
            self.apply(record)

    def observe(self, msg: Message) -> None:
        if msg.error() is not None:
            return
        record = parse(msg.value())
        if record is not None:
            self.apply(record)

    def close(self) -> None:
        self.consumer.close()
