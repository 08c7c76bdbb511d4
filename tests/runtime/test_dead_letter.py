"""Dead letters keep the rejected bytes (`raw`, capped) and the file record they came from, and
the schema change that added those fields is compatible both ways with the schema before it."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import fastavro
import pytest

from shared.config import RegistrySettings
from shared.runtime.dead_letter import (
    DEAD_LETTER_SCHEMA,
    MAX_PAYLOAD_CHARS_BESIDE_RAW,
    MAX_RAW_BYTES,
    RecordOrigin,
    dead_letter,
)
from shared.schemas import load_avsc
from shared.serde import AvroSerde
from tests.schema_registry_stand_in import schema_registry

#: dead_letter.avsc as it was before `raw`, `raw_truncated`, `source_file`, `source_line` (92f186a).
V1: dict[str, Any] = json.loads("""{
  "type": "record", "name": "DeadLetter", "namespace": "fastdistill",
  "fields": [
    {"name": "run_id", "type": ["null", "string"], "default": null},
    {"name": "step", "type": "string"},
    {"name": "source_topic", "type": ["null", "string"], "default": null},
    {"name": "source_partition", "type": ["null", "int"], "default": null},
    {"name": "source_offset", "type": ["null", "long"], "default": null},
    {"name": "row_index", "type": ["null", "long"], "default": null},
    {"name": "sample_id", "type": ["null", "string"], "default": null},
    {"name": "error_type", "type": "string"},
    {"name": "error_message", "type": "string"},
    {"name": "payload", "type": ["null", "string"], "default": null},
    {"name": "payload_encoding", "type": {"type": "enum", "name": "PayloadEncoding",
      "symbols": ["NONE", "JSON", "BASE64"]}, "default": "NONE"},
    {"name": "created_at_ms", "type": "long"}
  ]
}""")
NEW_FIELDS = {"raw", "raw_truncated", "source_file", "source_line"}


def _serde(registry_url: str | None = None, schema: dict[str, Any] | None = None) -> AvroSerde:
    serde = AvroSerde(registry=RegistrySettings(url=registry_url).client() if registry_url else None)
    serde.add(DEAD_LETTER_SCHEMA, schema or load_avsc("envelope/dead_letter.avsc"), "dlq-value")
    return serde


def _round_trip(record: dict[str, Any]) -> dict[str, Any]:
    serde = _serde()
    name, back = serde.decode(serde.encode(DEAD_LETTER_SCHEMA, record), expect=DEAD_LETTER_SCHEMA)
    assert name == DEAD_LETTER_SCHEMA
    return back


def test_raw_bytes_and_file_record_survive_avro_byte_exact() -> None:
    raw = b'{"task_id": "a\xff\xfe", \r\x00 "x"'
    origin = RecordOrigin("seeds.jsonl", 17, raw)
    record = dead_letter(
        step="produce",
        error_type="ValueError",
        error_message="seeds.jsonl:17: not UTF-8",
        run_id="r",
        row={"source_index": 9},
        origin=origin,
    )
    back = _round_trip(record)
    assert back["raw"] == raw and back["raw_truncated"] is False
    assert (back["source_file"], back["source_line"], back["row_index"]) == ("seeds.jsonl", 17, 9)
    assert back["payload_encoding"] == "JSON" and json.loads(back["payload"]) == {"source_index": 9}


def test_raw_is_capped_with_a_marker() -> None:
    raw = bytes(range(256)) * (MAX_RAW_BYTES // 256 + 3)
    back = _round_trip(dead_letter(step="s", error_type="E", error_message="m", raw=raw))
    assert back["raw"] == raw[:MAX_RAW_BYTES] and back["raw_truncated"] is True
    exact = raw[:MAX_RAW_BYTES]
    back = _round_trip(dead_letter(step="s", error_type="E", error_message="m", raw=exact))
    assert back["raw"] == exact and back["raw_truncated"] is False


def test_undecodable_messages_keep_the_bytes_field_and_the_base64_payload() -> None:
    value = b"\xc3\x01garbage\x00"
    back = _round_trip(
        dead_letter(
            step="s", error_type="UndecodableMessage", error_message="m", raw=value, source=("t", 1, 5)
        )
    )
    assert back["raw"] == value
    # Readers of the older schema still find the bytes where they looked before.
    assert back["payload_encoding"] == "BASE64" and base64.b64decode(back["payload"]) == value
    assert (back["source_topic"], back["source_partition"], back["source_offset"]) == ("t", 1, 5)
    assert back["source_file"] is None and back["source_line"] is None


def test_the_existing_keywords_still_make_the_same_record() -> None:
    back = _round_trip(dead_letter(step="s", error_type="E", error_message="m", row={"source_index": 7}))
    assert back["row_index"] == 7 and back["payload_encoding"] == "JSON"
    assert back["raw"] is None and back["raw_truncated"] is False and back["source_file"] is None


def _avro(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), record)
    return buf.getvalue()


def test_new_fields_are_compatible_both_ways_with_the_previous_schema() -> None:
    new = load_avsc("envelope/dead_letter.avsc")
    assert {f["name"] for f in new["fields"]} - {f["name"] for f in V1["fields"]} == NEW_FIELDS
    assert all("default" in f for f in new["fields"] if f["name"] in NEW_FIELDS)
    letter = dead_letter(step="s", error_type="E", error_message="m")
    old_record = {k: v for k, v in letter.items() if k not in NEW_FIELDS}
    # BACKWARD: the new reader reads an old writer's record, the new fields at their defaults.
    read = fastavro.schemaless_reader(
        io.BytesIO(_avro(V1, old_record)), fastavro.parse_schema(V1), fastavro.parse_schema(new)
    )
    assert read == old_record | {
        "raw": None,
        "raw_truncated": False,
        "source_file": None,
        "source_line": None,
    }
    # FORWARD: a reader still on the old schema reads a new record and skips the new fields.
    record = dead_letter(step="s", error_type="E", error_message="m", origin=RecordOrigin("f", 3, b"\xff"))
    read = fastavro.schemaless_reader(
        io.BytesIO(_avro(new, record)), fastavro.parse_schema(new), fastavro.parse_schema(V1)
    )
    assert read == {k: v for k, v in record.items() if k not in NEW_FIELDS}


def test_with_a_registry_an_old_writer_is_resolved_to_the_new_fields_defaults() -> None:
    with schema_registry() as (url, _):
        old = _serde(url, V1).encode(
            DEAD_LETTER_SCHEMA,
            {
                k: v
                for k, v in dead_letter(step="s", error_type="E", error_message="m").items()
                if k not in NEW_FIELDS
            },
        )
        name, record = _serde(url).decode(old, expect=DEAD_LETTER_SCHEMA)
        assert name == DEAD_LETTER_SCHEMA
        assert record["raw"] is None and record["raw_truncated"] is False and record["source_line"] is None


@pytest.mark.parametrize("size", [300, 20_000, 1_000_000])
def test_record_size(size: int) -> None:
    """What `raw` adds to a dead letter of a rejected seed line of `size` bytes (figures in the
    report): the line itself up to the cap, plus a few bytes of framing."""
    line = b"x" * size
    row = {"source_index": 1}
    serde = _serde()
    without = serde.encode(
        DEAD_LETTER_SCHEMA, dead_letter(step="produce", error_type="E", error_message="m", row=row)
    )
    with_raw = serde.encode(
        DEAD_LETTER_SCHEMA,
        dead_letter(
            step="produce",
            error_type="E",
            error_message="m",
            row=row,
            origin=RecordOrigin("s.jsonl", 2, line),
        ),
    )
    added = len(with_raw) - len(without)
    assert min(size, MAX_RAW_BYTES) < added <= min(size, MAX_RAW_BYTES) + 24


def test_a_dead_letter_of_a_huge_record_fits_the_smallest_message_cap() -> None:
    """KafkaSettings.max_message_bytes may be as low as 100,000: a MessageTooLarge dead letter of a
    huge row, or one of ~1 MB of garbage read from a topic, must still be sendable."""
    serde = _serde()
    huge_row = dead_letter(
        step="produce",
        error_type="MessageTooLarge",
        error_message="seeds.jsonl:3: " + "r" * 300,
        row={"source_index": 1, "text": "x" * 1_000_000},
        origin=RecordOrigin("seeds.jsonl", 3, b"y" * 1_000_000),
    )
    garbage = dead_letter(step="s", error_type="UndecodableMessage", error_message="m", raw=bytes(900_000))
    for record in (huge_row, garbage):
        assert len(serde.encode(DEAD_LETTER_SCHEMA, record)) < 100_000 - 10_000
    # The base64 copy for older readers is the start of the bytes, whole base64 quads.
    assert base64.b64decode(garbage["payload"]) == bytes(MAX_PAYLOAD_CHARS_BESIDE_RAW // 4 * 3)
