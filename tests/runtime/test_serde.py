import io

import fastavro
import pytest

from shared.runtime.dead_letter import DEAD_LETTER_SCHEMA, dead_letter
from shared.schemas import load_avsc
from shared.serde import AvroSerde, UndecodableMessage
from shared.topic_schema import batch_schema, row_fields
from tests.runtime.records import batch

SEED = [{"name": "task_id", "type": "string"}]


def _serde() -> AvroSerde:
    serde = AvroSerde()
    serde.add("seeds", batch_schema(row_fields(SEED)))
    serde.add("hashed", batch_schema(row_fields(SEED, [{"name": "sample_id", "type": "string"}])))
    serde.add(DEAD_LETTER_SCHEMA, load_avsc("envelope/dead_letter.avsc"))
    return serde


def test_round_trip_and_schema_identity() -> None:
    serde = _serde()
    data = serde.encode("seeds", batch([{"source_index": 3, "task_id": "a"}]))
    assert data[:2] == b"\xc3\x01"
    name, record = serde.decode(data)
    assert name == "seeds"
    assert record["rows"] == [{"source_index": 3, "task_id": "a"}]
    # A topic whose rows carry one more field has a different schema, told apart by fingerprint.
    other = serde.encode("hashed", batch([{"source_index": 3, "task_id": "a", "sample_id": "x"}]))
    assert serde.decode(other)[0] == "hashed"


def test_end_of_run_marker_round_trip() -> None:
    serde = _serde()
    marker = batch([]) | {"end_of_run": {"source_partition": 1, "source_partitions": 4, "rows_before": 9}}
    assert serde.decode(serde.encode("seeds", marker))[1]["end_of_run"]["source_partitions"] == 4


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty message value"),
        (b'{"task_id": 1}', "not an Avro message of this pipeline"),
        (b"\xc3\x01" + b"\x00" * 8 + b"\x02", "unknown Avro schema fingerprint"),
    ],
)
def test_garbage_gets_a_readable_reason(data: bytes, reason: str) -> None:
    with pytest.raises(UndecodableMessage, match=reason):
        _serde().decode(data)


def test_truncated_and_padded_bodies_are_rejected() -> None:
    serde = _serde()
    data = serde.encode("seeds", batch([{"source_index": 1, "task_id": "abc"}]))
    with pytest.raises(UndecodableMessage, match="corrupt Avro body"):
        serde.decode(data[:-2])
    with pytest.raises(UndecodableMessage, match="trailing bytes"):
        serde.decode(data + b"\x00\x00")


def test_dead_letter_records_encode() -> None:
    serde = _serde()
    record = dead_letter(step="s", error_type="ValueError", error_message="bad", row={"source_index": 7})
    name, back = serde.decode(serde.encode(DEAD_LETTER_SCHEMA, record))
    assert name == DEAD_LETTER_SCHEMA
    assert back["row_index"] == 7
    assert back["payload_encoding"] == "JSON"


def test_record_unions_in_rows_encode_as_fastavro_would_and_leave_rows_alone() -> None:
    # The serde names the branch of [null, record] row fields itself (a speed-up); the bytes must
    # be those fastavro writes when it resolves the branch, and the caller's rows stay untouched.
    profile = {"name": "Profile", "type": "record", "fields": [{"name": "t", "type": "double"}]}
    fields = row_fields(SEED, [{"name": "profile", "type": ["null", profile], "default": None}])
    serde = _serde()
    known = serde.add("profiled", batch_schema(fields))
    rows = [
        {"source_index": 0, "task_id": "a", "profile": {"t": 0.5}},
        {"source_index": 1, "task_id": "b", "profile": None},
    ]
    data = serde.encode("profiled", batch(rows))
    body = io.BytesIO()
    fastavro.schemaless_writer(body, known.parsed, batch(rows))
    assert data[10:] == body.getvalue()
    assert rows[0]["profile"] == {"t": 0.5}
    assert serde.decode(data)[1]["rows"] == rows
