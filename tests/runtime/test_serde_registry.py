"""Confluent wire format through confluent-kafka's SchemaRegistryClient over HTTP.

The registry is a stand-in (tests/schema_registry_stand_in.py); the client and the serde are
the ones the services run, built from the settings they read.
"""

from __future__ import annotations

import struct

import pytest
from confluent_kafka.schema_registry import Schema

from shared.config import RegistrySettings
from shared.serde import AvroSerde, UndecodableMessage
from shared.topic_schema import batch_schema, row_fields
from tests.runtime.records import batch
from tests.schema_registry_stand_in import schema_registry

SEED = [{"name": "task_id", "type": "string"}]
NOTE = {"name": "note", "type": ["null", "string"], "default": None}


def _serde(url: str, *extra: dict, **settings: str) -> AvroSerde:
    serde = AvroSerde(registry=RegistrySettings(url=url, **settings).client())
    serde.add("batch:seeds", batch_schema(row_fields(SEED, list(extra))))
    return serde


def test_messages_carry_the_registered_id_and_another_process_reads_them() -> None:
    with schema_registry() as (url, registry):
        data = _serde(url).encode("batch:seeds", batch([{"source_index": 0, "task_id": "a"}]))
        assert data[:1] == b"\x00"
        (schema_id,) = struct.unpack(">I", data[1:5])
        assert registry.subjects == {"batch:seeds": [schema_id]}
        # A reader that never registered anything fetches the writer schema by id.
        fresh = _serde(url)
        assert fresh.decode(data, expect="batch:seeds") == (
            "batch:seeds",
            batch([{"source_index": 0, "task_id": "a"}]),
        )
        assert ("GET", f"/schemas/ids/{schema_id}") in registry.requests


def test_an_older_writer_schema_is_resolved_against_the_readers() -> None:
    with schema_registry() as (url, _):
        old = _serde(url).encode("batch:seeds", batch([{"source_index": 0, "task_id": "a"}]))
        # The reader's schema gained a field with a default: BACKWARD compatible (docs/schemas.md).
        name, record = _serde(url, NOTE).decode(old, expect="batch:seeds")
        assert name == "batch:seeds"
        assert record["rows"] == [{"source_index": 0, "task_id": "a", "note": None}]


def test_an_unknown_id_is_a_readable_reason() -> None:
    with schema_registry() as (url, _), pytest.raises(UndecodableMessage, match="schema id 77 not in"):
        _serde(url).decode(b"\x00" + struct.pack(">I", 77) + b"\x00", expect="batch:seeds")


def test_basic_auth_comes_from_the_settings() -> None:
    with schema_registry(user_info="fd:s3cret") as (url, registry):
        rows = batch([{"source_index": 0, "task_id": "a"}])
        data = _serde(url, basic_auth_user_info="fd:s3cret").encode("batch:seeds", rows)
        assert registry.subjects and data[:1] == b"\x00"
        with pytest.raises(Exception, match="Unauthorized"):
            _serde(url, basic_auth_user_info="fd:wrong").encode("batch:seeds", rows)


def test_a_foreign_schema_under_our_subject_is_not_read_as_ours() -> None:
    with schema_registry() as (url, _):
        client = RegistrySettings(url=url).client()
        foreign = '{"type": "record", "name": "Other", "fields": [{"name": "x", "type": "long"}]}'
        schema_id = client.register_schema("batch:seeds", Schema(foreign, "AVRO"))
        with pytest.raises(UndecodableMessage, match=r"corrupt Avro body|did not decode"):
            _serde(url).decode(b"\x00" + struct.pack(">I", schema_id) + b"\x02", expect="batch:seeds")
