"""Reading the dead-letter topic for people: reasons grouped, and whole records on request.

Everything printed comes from untrusted input (seed files, garbage on topics), so text is shown
with non-printable characters escaped and bytes as a Python bytes literal: nothing reaches the
terminal that could move the cursor, clear the screen or fake output.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from shared.config import KafkaSettings
from shared.kafka.topic_end import read_to_end
from shared.runtime.dead_letter import DEAD_LETTER_SCHEMA
from shared.serde import AvroSerde, UndecodableMessage

#: A group's example message is cut here (the record itself is shown whole with --raw).
EXAMPLE_CHARS = 300


@dataclass
class DeadLetters:
    """The dead letters chosen, in the order they were written, and how many messages of the
    topic were not dead letters this pipeline can decode."""

    records: list[dict[str, Any]] = field(default_factory=list)
    undecodable: int = 0


@dataclass
class Group:
    step: str
    error_type: str
    count: int
    example: str


def read_dead_letters(
    kafka: KafkaSettings, serde: AvroSerde, topic: str, *, run_id: str | None = None, step: str | None = None
) -> DeadLetters:
    """Every committed dead letter of `topic` up to its end now, of `run_id` and `step` if given."""
    out = DeadLetters()
    for msg in read_to_end(kafka, topic):
        try:
            schema, record = serde.decode(msg.value(), expect=DEAD_LETTER_SCHEMA)
        except UndecodableMessage:
            out.undecodable += 1
            continue
        if schema != DEAD_LETTER_SCHEMA:
            out.undecodable += 1
            continue
        if run_id not in (None, record["run_id"]) or step not in (None, record["step"]):
            continue
        out.records.append(record | {"_where": (msg.partition(), msg.offset())})
    out.records.sort(key=lambda r: (r["created_at_ms"], r["_where"]))
    return out


def groups(records: list[dict[str, Any]]) -> list[Group]:
    """One group per (step, error type), largest first; the example is the group's first record."""
    by_key: dict[tuple[str, str], Group] = {}
    for record in records:
        key = (record["step"], record["error_type"])
        if key in by_key:
            by_key[key].count += 1
        else:
            by_key[key] = Group(*key, 1, record["error_message"])
    return sorted(by_key.values(), key=lambda g: (-g.count, g.step, g.error_type))


def safe(text: str) -> str:
    """`text` with every non-printable character (controls, escapes, line breaks) escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def summary_lines(letters: DeadLetters, topic: str, run_id: str | None, step: str | None) -> Iterator[str]:
    scope = "".join(f" {name} {safe(value)}" for name, value in (("run", run_id), ("step", step)) if value)
    yield f"{len(letters.records)} dead letters in {topic}{scope and ' of' + scope}"
    if letters.undecodable:
        yield f"({letters.undecodable} messages of the topic are not dead letters of this pipeline)"
    table = groups(letters.records)
    if not table:
        return
    steps = max(4, *(len(safe(g.step)) for g in table))
    types = max(10, *(len(safe(g.error_type)) for g in table))
    yield f"{'count':>7}  {'step':<{steps}}  {'error_type':<{types}}  example"
    for g in table:
        example = safe(g.example)
        example = example if len(example) <= EXAMPLE_CHARS else example[:EXAMPLE_CHARS] + "…"
        yield f"{g.count:>7}  {safe(g.step):<{steps}}  {safe(g.error_type):<{types}}  {example}"


def record_lines(record: dict[str, Any], number: int, total: int) -> Iterator[str]:
    """One dead letter whole: where it came from, why, and its bytes."""
    yield f"--- dead letter {number} of {total}"
    fields = [
        ("run_id", record["run_id"]),
        ("step", record["step"]),
        ("error_type", record["error_type"]),
        ("error_message", record["error_message"]),
    ]
    if record.get("source_file") is not None:
        fields.append(("file:line", f"{record['source_file']}:{record['source_line']}"))
    if record["row_index"] is not None:
        fields.append(("row_index", str(record["row_index"])))
    if record["sample_id"] is not None:
        fields.append(("sample_id", record["sample_id"]))
    if record["source_topic"] is not None:
        where = f"{record['source_topic']}[{record['source_partition']}]@{record['source_offset']}"
        fields.append(("message", where))
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record["created_at_ms"] / 1000))
    fields.append(("created_at", created))
    for name, value in fields:
        yield f"{name + ':':<15}{safe(str(value))}"
    raw = record.get("raw")
    if raw is None:
        yield f"{'raw:':<15}none"
    else:
        cut = " (the first bytes of a longer record: raw_truncated)" if record.get("raw_truncated") else ""
        yield f"{'raw:':<15}{len(raw)} bytes{cut}"
        yield f"  {raw!r}"
        yield f"  hex {raw[:64].hex(' ')}{' …' if len(raw) > 64 else ''}"
    if record["payload_encoding"] == "JSON" and record["payload"] is not None:
        yield f"{'payload:':<15}{safe(_compact(record['payload']))}"


def _compact(payload: str) -> str:
    try:
        return json.dumps(json.loads(payload), ensure_ascii=False, sort_keys=True)
    except (ValueError, RecursionError):
        return payload  # cut at its cap: shown as it is
