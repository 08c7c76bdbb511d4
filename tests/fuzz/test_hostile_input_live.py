"""Hostile input through the real example pipeline: every service a process, the real broker, the
teacher simulator over HTTP.

While three runs of the example seeds go through, garbage bytes (random, truncated Avro, Avro of
another schema, a right header with a corrupt body, empty, ~1 MB, ...) land in five waves on every
topic a service reads: the seeds topic and every stage topic, the progress and dead-letter topics
(read by the coordinator) and the JSON control topics (runs, gates, control, every step's markers store).
Two of the runs carry 10,000 and 500 malformed seeds interleaved with the valid ones (JSONL with
a UTF-8 BOM, and CSV with a BOM and CRLF line ends, through `fastdistill produce`). Then:
- every garbage message is exactly one dead letter, written by the service that reads its topic,
  with a readable reason (control topics: skipped with a warning; the services stay up, also
  when a restart makes them re-read those topics);
- every malformed seed is exactly one dead letter of its run, with a reason naming its file and
  line, and its bytes as written (`raw`, capped at 64 KiB);
- no service died, every /healthz answers ok;
- the fuzzed runs released exactly the rows of the clean run.
The figures (by kind and by reason) are printed; `pytest -s` shows them (docs/fuzzing.md).
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from fastdistill.ingest import BOM
from fastdistill.local_stack import SIM_NAME, LocalStack
from fastdistill.plan import PipelinePlan
from fastdistill.runs import run_dir, wait_for_release
from fastdistill.topics import pipeline_topics
from shared.config import KafkaSettings
from shared.kafka import clients
from shared.pipeline import PipelineSpec
from shared.runtime.dead_letter import DEAD_LETTER_SCHEMA, MAX_RAW_BYTES, dead_letter
from shared.runtime.progress import PROGRESS_SCHEMA, Progress
from shared.serde import AvroSerde, UndecodableMessage
from tests.fuzz.malformed import (
    CSV_COLUMNS,
    REPO,
    SEEDS,
    SeedFileWriter,
    control_garbage,
    csv_cells,
    csv_row,
    garbage_value,
    malformed_csv_row,
    malformed_line,
    valid_seeds,
)

pytestmark = pytest.mark.kafka

MALFORMED_JSONL = 10_000
MALFORMED_CSV = 500
WAVES = 5
PER_TOPIC_PER_WAVE = 4
#: Fields that describe a run rather than the row: positions in the file, and the teacher call
#: (later runs find the first run's answers in the generation cache).
PER_RUN_FIELDS = {"source_index", "teacher_cached", "teacher_latency_ms"}


def _pipeline_copy(folder: Path) -> Path:
    raw = yaml.safe_load((REPO / "examples/text2sql/pipeline.yaml").read_text())
    raw["name"] = f"fuzz-{uuid.uuid4().hex[:8]}"
    raw["sink"]["output_dir"] = str(folder / "out")
    for step in raw["steps"]:
        if "db_path" in step.get("params", {}):  # relative to the repository; services run elsewhere
            step["params"]["db_path"] = str(REPO / step["params"]["db_path"])
            # The 1 s query budget can run out on a busy 2-core box and turn a row's verdict: runs
            # compared row for row need a budget no load reaches.
            step["params"]["time_budget_ms"] = 30_000
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


class Garbage:
    """Produces garbage onto every input topic and remembers where each message landed."""

    def __init__(self, plan: PipelinePlan, serde: AvroSerde, kafka: KafkaSettings, rng: random.Random):
        spec = plan.spec
        self.rng, self.serde = rng, serde
        self.producer = clients.producer(kafka, **{"message.max.bytes": 2_000_000})
        readers = [s.id for s in spec.steps] + ["sink"]
        #: topic -> (reading service, expected schema, a valid record of it)
        self.avro: dict[str, tuple[str, str, dict[str, Any]]] = {}
        for stage, reader in zip(spec.stages, readers, strict=True):
            batch = {"run_id": "fuzz", "stage": stage, "producer": "fuzz", "batch_seq": 1, "lineage": ["x"]}
            self.avro[spec.topic(stage)] = (
                reader,
                plan.schema_name(stage),
                batch | {"rows": [], "end_of_run": None, "origin_ms": 0},
            )
        progress = Progress(
            "fuzz",
            "hash",
            "fuzz",
            1,
            1,
            1,
            1,
            0,
            1,
            [0.1],
            [],
            [0],
            input_partitions=4,
            first_ms=1,
            last_ms=2,
        ).to_record()
        self.avro[spec.progress_topic] = ("coordinator", PROGRESS_SCHEMA, progress)
        letter = dead_letter(step="fuzz", error_type="E", error_message="m", row={"a": 1})
        self.avro[spec.dlq_topic] = ("coordinator", DEAD_LETTER_SCHEMA, letter)
        markers = [f"{spec.state_topic_prefix(s.id)}.markers" for s in spec.steps]
        self.control = [spec.runs_topic, spec.gates_topic, spec.control_topic, *markers]
        self.partitions = {t: clients.partition_count(self.producer, t) for t in [*self.avro, *self.control]}
        #: (topic, partition, offset) -> (reader, kind)
        self.landed: dict[tuple[str, int, int], tuple[str, str]] = {}
        self.control_kinds: Counter[str] = Counter()

    def _foreign(self, expected: str) -> list[tuple[str, dict[str, Any]]]:
        mine = self.serde.schemas[expected].fingerprint
        return [
            (schema, record)
            for _, schema, record in self.avro.values()
            if self.serde.schemas[schema].fingerprint != mine
        ]

    def wave(self) -> None:
        for topic, (reader, schema, sample) in self.avro.items():
            for _ in range(PER_TOPIC_PER_WAVE):
                kind, value = garbage_value(self.rng, self.serde, schema, sample, self._foreign(schema))
                key = self.rng.choice([None, b"fuzz", self.rng.randbytes(8)])
                self._send(topic, value, key, (reader, kind))
        for topic in self.control:
            for _ in range(PER_TOPIC_PER_WAVE):
                kind, value = control_garbage(self.rng)
                self.control_kinds[kind] += 1
                # Compacted topics need keys; never a real run id (that would overwrite its state).
                key = self.rng.choice(
                    [b"fuzz-%d" % self.rng.randint(0, 99), b"fuzz|x", b"fuzz|7", self.rng.randbytes(6)]
                )
                self._send(topic, value, key, None)
        assert self.producer.flush(60) == 0

    def _send(self, topic: str, value: bytes | None, key: bytes | None, tag: tuple[str, str] | None) -> None:
        def delivered(err: Any, msg: Any) -> None:
            assert err is None, err
            if tag is not None:
                self.landed[(msg.topic(), msg.partition(), msg.offset())] = tag

        partition = self.rng.randrange(self.partitions[topic])
        self.producer.produce(topic, value=value, key=key, partition=partition, on_delivery=delivered)


@dataclass
class FuzzedFile:
    path: Path
    kinds: Counter[str]
    #: physical line -> the bytes of the malformed record that starts there
    malformed: dict[int, bytes]


def _seed_files(folder: Path, rng: random.Random) -> tuple[FuzzedFile, FuzzedFile]:
    """The example seeds with malformed records interleaved at random places, as JSONL (with a
    UTF-8 BOM) and as CSV (with a BOM and CRLF line ends)."""
    seeds = valid_seeds()
    jsonl: list[tuple[bytes, str | None]] = [(json.dumps(s).encode(), None) for s in seeds]
    for _ in range(MALFORMED_JSONL):
        kind, line = malformed_line(rng, rng.choice(seeds))
        jsonl.insert(rng.randint(0, len(jsonl)), (line, kind))
    rows: list[tuple[bytes, str | None]] = [(csv_row(csv_cells(s))[:-1], None) for s in seeds]
    for _ in range(MALFORMED_CSV):
        kind, row = malformed_csv_row(rng, rng.choice(seeds))
        rows.insert(rng.randint(0, len(rows)), (row[:-1], kind))
    files = []
    for name, records, header, end in (
        ("fuzzed.jsonl", jsonl, b"", b"\n"),
        ("fuzzed.csv", rows, ",".join(CSV_COLUMNS).encode() + b"\r\n", b"\r\n"),
    ):
        writer = SeedFileWriter()
        writer.put(BOM + header)
        for raw, kind in records:
            writer.record(raw, end, kind)
        path = folder / name
        path.write_bytes(bytes(writer.data))
        kinds = Counter(r.kind for r in writer.malformed if r.kind)
        files.append(FuzzedFile(path, kinds, {r.line: r.raw for r in writer.malformed}))
    return files[0], files[1]


def _all_up(stack: LocalStack) -> None:
    assert not stack.dead(), f"services died: {stack.dead()}"
    unhealthy = [n for n, s in stack.services.items() if n != SIM_NAME and not s.healthy()]
    assert not unhealthy, f"/healthz not ok: {unhealthy}"


def _dead_letters(
    kafka: KafkaSettings, topic: str, serde: AvroSerde, done: Any, timeout_s: float
) -> list[dict[str, Any]]:
    """Every decodable record of the DLQ, read until `done(records)` or the timeout."""
    reader = Consumer(
        kafka.client_conf() | {"group.id": f"fuzz-{uuid.uuid4().hex}", "isolation.level": "read_committed"}
    )
    n = clients.partition_count(reader, topic)
    reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(n)])
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not done(records) and time.monotonic() < deadline:
            for msg in reader.consume(num_messages=1000, timeout=0.5):
                if msg.error() is not None:
                    continue
                with contextlib.suppress(UndecodableMessage):  # the garbage this test put there itself
                    schema, record = serde.decode(msg.value(), expect=DEAD_LETTER_SCHEMA)
                    if schema == DEAD_LETTER_SCHEMA:
                        records.append(record)
    finally:
        reader.close()
    return records


def _released_rows(spec: PipelineSpec, run_id: str) -> list[dict[str, Any]]:
    path = run_dir(spec, run_id) / spec.primary_leaf / "data.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in PER_RUN_FIELDS} for row in rows]


def _reason(message: str) -> str:
    """A message with its record position, numbers, schema and step names blanked, to count by reason."""
    text = re.sub(r"^\S+:\d+: ", "", message)
    text = re.sub(r"batch:\w+|\bprogress\b|\bdead_letter\b", "<schema>", text)
    text = re.sub(r"step \w+|the sink", "<step>", text)
    text = re.sub(r"[0-9a-f]{8,}|\d+", "N", text)
    return ": ".join(text.split(": ", 2)[:2]) if text.startswith("corrupt") else text[:90]


def test_garbage_on_every_topic_and_malformed_seeds_end_in_the_dlq(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    rng = random.Random(20261123)
    path = _pipeline_copy(tmp_path)
    spec = PipelineSpec.load(path)
    plan = PipelinePlan.build(spec)
    serde = plan.serde()
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, session_timeout_ms=6000)
    clients.ensure_topics(clients.admin(kafka), pipeline_topics(spec))
    stack = LocalStack(
        path,
        tmp_path / "stack",
        {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "KAFKA_SESSION_TIMEOUT_MS": "6000"},
    )
    jsonl, csv = _seed_files(tmp_path, rng)
    runs = {name: f"run-{name}-{uuid.uuid4().hex[:6]}" for name in ("clean", "jsonl", "csv")}
    started = time.monotonic()
    try:
        stack.start_teacher_sim(SEEDS)
        stack.add_pipeline_services()
        stack.start()
        garbage = Garbage(plan, serde, kafka, rng)  # now that the services created their state topics
        garbage.wave()
        for name, seeds in (("clean", SEEDS), ("jsonl", jsonl.path), ("csv", csv.path)):
            stack.produce(seeds, runs[name])
            garbage.wave()
            _all_up(stack)
        results = {name: wait_for_release(spec, run_id, 600, stack) for name, run_id in runs.items()}
        garbage.wave()
        # Restarts re-read the control topics: the coordinator its runs topic, the sink the gates
        # and every step its markers store.
        for svc in stack.services.values():
            if svc.name != SIM_NAME:
                svc.signal(signal.SIGTERM)
        for svc in stack.services.values():
            assert svc.name == SIM_NAME or svc.wait(60) == 0, svc.name
        stack.start()
        _all_up(stack)

        expected_by_run = {runs["jsonl"]: MALFORMED_JSONL, runs["csv"]: MALFORMED_CSV}

        def done(records: list[dict[str, Any]]) -> bool:
            sources = {(r["source_topic"], r["source_partition"], r["source_offset"]) for r in records}
            produced = Counter(r["run_id"] for r in records if r["step"] == "produce")
            return set(garbage.landed) <= sources and all(
                produced[r] >= n for r, n in expected_by_run.items()
            )

        letters = _dead_letters(kafka, spec.dlq_topic, serde, done, 180)
        _all_up(stack)
    finally:
        stack.stop()
    elapsed = time.monotonic() - started

    # Garbage: exactly one dead letter each, by the service reading that topic, with a reason.
    by_source: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for letter in letters:
        by_source.setdefault(
            (letter["source_topic"], letter["source_partition"], letter["source_offset"]), []
        ).append(letter)
    for source, (reader, kind) in garbage.landed.items():
        found = by_source.get(source, [])
        assert len(found) == 1, (source, kind, found)
        assert found[0]["step"] == reader and found[0]["error_type"] == "UndecodableMessage", (
            source,
            kind,
            found,
        )
        assert len(found[0]["error_message"]) > 10, (source, kind, found)

    # Malformed seeds: exactly one dead letter each, naming its file and line, with its bytes.
    for name, file, expected in (("jsonl", jsonl, MALFORMED_JSONL), ("csv", csv, MALFORMED_CSV)):
        mine = [r for r in letters if r["run_id"] == runs[name] and r["step"] == "produce"]
        assert len(mine) == expected == len({r["row_index"] for r in mine})
        assert {r["source_line"] for r in mine} == set(file.malformed)
        for r in mine:
            assert r["error_message"].startswith(f"{file.path.name}:{r['source_line']}: "), r["error_message"]
            assert r["source_file"] == file.path.name
            raw = file.malformed[r["source_line"]]
            assert r["raw"] == raw[:MAX_RAW_BYTES] and r["raw_truncated"] == (len(raw) > MAX_RAW_BYTES)

    # Every valid row arrived: the fuzzed runs released exactly the clean run's dataset.
    clean = _released_rows(spec, runs["clean"])
    assert all(result["released"] for result in results.values()), results
    assert len(clean) > 100
    assert _released_rows(spec, runs["jsonl"]) == clean
    assert _released_rows(spec, runs["csv"]) == clean
    pipeline_letters = Counter(
        (r["run_id"], r["step"]) for r in letters if r["run_id"] and r["step"] != "produce"
    )
    assert {s: n for (r, s), n in pipeline_letters.items() if r == runs["jsonl"]} == {
        s: n for (r, s), n in pipeline_letters.items() if r == runs["clean"]
    }

    _print_figures(garbage, letters, runs, jsonl.kinds, csv.kinds, len(clean), elapsed)


def _print_figures(
    garbage: Garbage,
    letters: list[dict[str, Any]],
    runs: dict[str, str],
    jsonl_kinds: Counter[str],
    csv_kinds: Counter[str],
    rows: int,
    elapsed: float,
) -> None:
    print(f"\n== hostile input, {elapsed:.0f} s; every run released {rows} rows, identical to the clean run")
    kinds = Counter(k for _, k in garbage.landed.values())
    print(f"garbage messages on Avro topics: {len(garbage.landed)}; by kind: {dict(kinds)}")
    print(f"  dead letters by reader: {dict(Counter(r for r, _ in garbage.landed.values()))}")
    landed = set(garbage.landed)
    reasons = Counter(
        _reason(r["error_message"])
        for r in letters
        if (r["source_topic"], r["source_partition"], r["source_offset"]) in landed
    )
    for reason, n in reasons.most_common():
        print(f"  {n:6d}  {reason}")
    print(f"garbage on control topics (runs, gates, markers), skipped: {dict(garbage.control_kinds)}")
    for name, seed_kinds in (("jsonl", jsonl_kinds), ("csv", csv_kinds)):
        mine = [r for r in letters if r["run_id"] == runs[name] and r["step"] == "produce"]
        total = sum(seed_kinds.values())
        print(f"malformed {name} seeds: {total}, dead letters: {len(mine)}; {dict(seed_kinds)}")
        for reason, n in Counter(_reason(r["error_message"]) for r in mine).most_common(25):
            print(f"  {n:6d}  {reason}")
