"""Avro serdes: Avro single-object encoding resolved from `schemas/`, or Confluent Schema
Registry wire format when a registry URL is configured.

Decoding never raises anything but `UndecodableMessage`, whose text says what was wrong
with the bytes, so a service can dead-letter them and go on.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass, field
from typing import Any

import fastavro
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"


class UndecodableMessage(ValueError):
    """Bytes that are not a record of any schema this reader knows."""


@dataclass(frozen=True)
class KnownSchema:
    name: str
    raw: dict[str, Any]
    parsed: Any
    fingerprint: bytes
    #: (field, record full name) of the row fields typed as a union of null and one record
    row_record_unions: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, name: str, raw: dict[str, Any]) -> KnownSchema:
        parsed = parse_schema(raw, _write_hint=False)
        crc = fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO")
        return cls(name, raw, parsed, bytes.fromhex(crc)[::-1], _row_record_unions(parsed))


@dataclass
class AvroSerde:
    """Encodes with one of the known schemas and decodes any of them.

    `registry` (a confluent_kafka SchemaRegistryClient) switches to the Confluent wire
    format: each schema is registered on first use under its subject (given to `add`, by
    default its name) and writer schemas of incoming messages are fetched by id.
    """

    schemas: dict[str, KnownSchema] = field(default_factory=dict)
    registry: Any = None
    #: stages that add no fields share one schema (one fingerprint) under several names; the
    #: first name stands for all of them unless a reader says which one it expects
    _by_fingerprint: dict[bytes, KnownSchema] = field(default_factory=dict)
    #: schema name -> registry subject
    _subjects: dict[str, str] = field(default_factory=dict)
    _ids: dict[str, int] = field(default_factory=dict)
    _by_id: dict[int, KnownSchema] = field(default_factory=dict)

    def add(self, name: str, raw: dict[str, Any], subject: str | None = None) -> KnownSchema:
        known = KnownSchema.of(name, raw)
        self.schemas[name] = known
        self._subjects[name] = subject or name
        self._by_fingerprint.setdefault(known.fingerprint, known)
        return known

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        known = self.schemas[name]
        buf = io.BytesIO()
        if self.registry is None:
            buf.write(SINGLE_OBJECT_MAGIC + known.fingerprint)
        else:
            buf.write(CONFLUENT_MAGIC + struct.pack(">I", self._schema_id(self._subjects[name], known)))
        if known.row_record_unions and record.get("rows"):
            record = record | {"rows": [_tag_unions(row, known.row_record_unions) for row in record["rows"]]}
        # Strict: a field the schema does not have (or lacks) is an error, not a column silently
        # dropped (or defaulted). It costs nothing measurable (3.85 vs 3.91 µs a row here).
        fastavro.schemaless_writer(buf, known.parsed, record, strict=True)
        return buf.getvalue()

    def decode(self, data: bytes | None, expect: str | None = None) -> tuple[str, dict[str, Any]]:
        """(schema name, record); raises UndecodableMessage with a readable reason.

        With a registry, a writer schema that is not one of ours but resolves to `expect`
        (an older or newer version of that topic's schema) is read as `expect`.
        """
        if not data:
            raise UndecodableMessage("empty message value")
        if data[:2] == SINGLE_OBJECT_MAGIC:
            known = self._by_fingerprint.get(data[2:10])
            if known is None:
                raise UndecodableMessage(
                    f"unknown Avro schema fingerprint {data[2:10][::-1].hex()}: "
                    f"not one of the {len(self._by_fingerprint)} schemas of this pipeline"
                )
            body = data[10:]
        elif data[:1] == CONFLUENT_MAGIC and self.registry is not None and len(data) >= 5:
            known = self._fetch_by_id(struct.unpack(">I", data[1:5])[0])
            body = data[5:]
        else:
            raise UndecodableMessage(
                f"not an Avro message of this pipeline (first bytes {data[:4].hex() or 'none'}, "
                f"expected {(CONFLUENT_MAGIC if self.registry else SINGLE_OBJECT_MAGIC).hex()})"
            )
        wanted = self.schemas.get(expect) if expect is not None else None
        if wanted is not None and wanted.fingerprint == known.fingerprint:
            known = wanted  # the same schema under the name this topic's reader expects
        reader = None
        if expect is not None and known.name not in self.schemas and expect in self.schemas:
            reader = self.schemas[expect]
        stream = io.BytesIO(body)
        try:
            record = fastavro.schemaless_reader(stream, known.parsed, reader.parsed if reader else None)
        except Exception as exc:  # fastavro raises many types on corrupt or unresolvable input
            raise UndecodableMessage(
                f"corrupt Avro body for schema {known.name}: {type(exc).__name__}: {exc}"
            ) from exc
        if stream.tell() != len(body):
            raise UndecodableMessage(
                f"{len(body) - stream.tell()} trailing bytes after a {known.name} record"
            )
        if not isinstance(record, dict):
            raise UndecodableMessage(f"{known.name} body did not decode to a record")
        return (reader or known).name, record

    def _schema_id(self, subject: str, known: KnownSchema) -> int:
        if subject not in self._ids:
            from confluent_kafka.schema_registry import Schema

            schema_id = self.registry.register_schema(subject, Schema(_json(known.raw), "AVRO"))
            self._ids[subject] = schema_id
            self._by_id[schema_id] = known
        return self._ids[subject]

    def _fetch_by_id(self, schema_id: int) -> KnownSchema:
        if schema_id not in self._by_id:
            try:
                schema = self.registry.get_schema(schema_id)
            except Exception as exc:
                raise UndecodableMessage(f"schema id {schema_id} not in the registry: {exc}") from exc
            fetched = KnownSchema.of(f"registry:{schema_id}", json.loads(schema.schema_str))
            # Our own schema under another id: read it under its own name.
            self._by_id[schema_id] = self._by_fingerprint.get(fetched.fingerprint, fetched)
        return self._by_id[schema_id]


def _row_record_unions(parsed: Any) -> tuple[tuple[str, str], ...]:
    """The [null, record] fields of a batch schema's rows (`rows`: array of records)."""
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        return ()
    rows = next((f["type"] for f in parsed["fields"] if f["name"] == "rows"), None)
    if not isinstance(rows, dict) or rows.get("type") != "array" or not isinstance(rows["items"], dict):
        return ()
    found = []
    for f in rows["items"].get("fields", []):
        members = f["type"] if isinstance(f["type"], list) else []
        records = [m for m in members if isinstance(m, dict) and m.get("type") == "record"]
        if len(records) == 1 and len(members) == 2 and "null" in members:
            found.append((f["name"], records[0]["name"]))
    return tuple(found)


def _tag_unions(row: dict[str, Any], unions: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """The row with its record-union values in fastavro's (name, value) tuple notation.

    Given a bare dict, fastavro picks the union branch by validating the value against each
    branch: ~10 µs a row for one small record, two thirds of encoding a whole row. Named, the
    branch is a lookup. The row itself is left as it is (steps may still hold it).
    """
    tagged = None
    for name, record_name in unions:
        value = row.get(name)
        if type(value) is dict:
            if tagged is None:
                tagged = dict(row)
            tagged[name] = (record_name, value)
    return row if tagged is None else tagged


def _json(raw: dict[str, Any]) -> str:
    return json.dumps(raw, separators=(",", ":"), sort_keys=True)
