"""The Seed model: strict validation, and a dump the seed Avro schema can encode."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import fastavro
import pytest
from pydantic import ValidationError

from services.seeds import Seed
from shared.schemas import load_avsc

GOOD: dict[str, Any] = {
    "task_id": "text2sql-001",
    "schema": "users(id, name)",
    "instruction": "List all user names ordered by id.",
    "gold_sql": "SELECT name FROM users ORDER BY id;",
    "decode_profile": {"temperature": 0.2, "max_tokens": 128},
    "system_prompt": "Return SQL only.",
    "db_id": None,
}


def _avro_round_trip(record: dict[str, Any]) -> dict[str, Any]:
    schema = fastavro.parse_schema(load_avsc("rows/seed.avsc"))
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, record)
    buffer.seek(0)
    return fastavro.schemaless_reader(buffer, schema)  # type: ignore[return-value]


def test_full_seed_round_trips_through_avro() -> None:
    dumped = Seed.model_validate(GOOD).model_dump()
    assert dumped == GOOD
    assert _avro_round_trip(dumped) == GOOD


def test_minimal_seed_round_trips_through_avro() -> None:
    minimal = {"task_id": "t", "schema": "", "instruction": "q"}
    dumped = Seed.model_validate(minimal).model_dump()
    nulls = {"gold_sql": None, "decode_profile": None, "system_prompt": None, "db_id": None}
    assert dumped == {**minimal, **nulls}
    assert _avro_round_trip(dumped) == dumped


def test_avro_field_order() -> None:
    names = [f["name"] for f in load_avsc("rows/seed.avsc")["fields"]]
    assert names == [
        "task_id",
        "schema",
        "instruction",
        "gold_sql",
        "decode_profile",
        "system_prompt",
        "db_id",
    ]
    assert names == list(Seed.model_fields)


def test_integer_temperature_is_fine() -> None:
    seed = Seed.model_validate({**GOOD, "decode_profile": {"temperature": 0, "max_tokens": 1}})
    assert seed.decode_profile is not None and seed.decode_profile.temperature == 0


def test_no_shadowing_warning_on_import() -> None:
    # A fresh interpreter: the module is already imported (warnings spent) in this one.
    command = [sys.executable, "-W", "error", "-c", "import services.seeds.model"]
    subprocess.run(command, check=True, cwd=Path(__file__).resolve().parents[2])


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"task_id": None}, "task_id"),
        ({"task_id": ""}, "task_id"),
        ({"task_id": 5}, "task_id"),
        ({"instruction": ""}, "instruction"),
        ({"instruction": "a\x00b"}, "instruction"),
        ({"schema": "x" * 20_001}, "schema"),
        ({"gold_sql": "\x00"}, "gold_sql"),
        ({"system_prompt": ["Return SQL only."]}, "system_prompt"),
        ({"decode_profile": {"temperature": 0.2, "max_tokens": "128"}}, "decode_profile.max_tokens"),
        ({"decode_profile": {"temperature": "0.2", "max_tokens": 128}}, "decode_profile.temperature"),
        ({"decode_profile": {"temperature": 2.5, "max_tokens": 128}}, "decode_profile.temperature"),
        ({"decode_profile": {"temperature": 0.2, "max_tokens": 8193}}, "decode_profile.max_tokens"),
        ({"decode_profile": {"temperature": 0.2, "max_tokens": True}}, "decode_profile.max_tokens"),
        ({"decode_profile": {"temperature": 0.2}}, "decode_profile.max_tokens"),
        ({"decode_profile": {"temperature": 0.2, "max_tokens": 9, "top_p": 1}}, "decode_profile.top_p"),
        ({"extra": 1}, "extra"),
        ({"db_id": "../etc"}, "db_id"),
        ({"db_id": "/abs/path"}, "db_id"),
        ({"db_id": "a.b"}, "db_id"),
        ({"db_id": "-x"}, "db_id"),
        ({"db_id": ""}, "db_id"),
        ({"db_id": "x" * 129}, "db_id"),
        ({"db_id": "concert singer"}, "db_id"),
        ({"db_id": 3}, "db_id"),
    ],
)
def test_rejected(change: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as info:
        Seed.model_validate({**GOOD, **change})
    assert where in {".".join(str(p) for p in e["loc"]) for e in info.value.errors()}


@pytest.mark.parametrize("db_id", ["concert_singer", "car_1", "world-1", "A", "x" * 128])
def test_spider_style_db_id_accepted(db_id: str) -> None:
    seed = Seed.model_validate({**GOOD, "db_id": db_id})
    assert seed.db_id == db_id
    assert _avro_round_trip(seed.model_dump())["db_id"] == db_id


def test_missing_required_field() -> None:
    with pytest.raises(ValidationError):
        Seed.model_validate({k: v for k, v in GOOD.items() if k != "instruction"})
