from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.sink.writer import write_dataset

ROWS = [
    {"source_index": 2, "sample_id": "c", "decode_profile": {"temperature": 0.2}, "score": 1, "ok": True},
    {"source_index": 0, "sample_id": "a", "decode_profile": None, "score": 0.5, "ok": False, "sql": "é"},
    {"source_index": 1, "sample_id": "b", "decode_profile": {"max_tokens": 8}, "score": None, "ok": None},
]


def test_jsonl_is_sorted_with_keys_in_column_order(tmp_path: Path) -> None:
    digests = write_dataset(ROWS, tmp_path, ["sample_id", "source_index", "sql"], ["jsonl"])
    text = (tmp_path / "data.jsonl").read_text(encoding="utf-8")
    assert text == (
        '{"sample_id": "a", "source_index": 0, "sql": "é"}\n'
        '{"sample_id": "b", "source_index": 1, "sql": null}\n'
        '{"sample_id": "c", "source_index": 2, "sql": null}\n'
    )
    assert digests == {"data.jsonl": hashlib.sha256(text.encode()).hexdigest()}
    assert not (tmp_path / "data.parquet").exists()


def test_parquet_schema_is_explicit_and_free_of_pandas_metadata(tmp_path: Path) -> None:
    digests = write_dataset(ROWS, tmp_path, None)
    assert set(digests) == {"data.jsonl", "data.parquet"}
    table = pq.read_table(tmp_path / "data.parquet")
    assert table.schema == pa.schema(
        [
            ("source_index", pa.int64()),
            ("sample_id", pa.string()),
            ("decode_profile", pa.string()),
            ("score", pa.float64()),
            ("ok", pa.bool_()),
            ("sql", pa.string()),
        ]
    )
    assert b"pandas" not in (pq.read_schema(tmp_path / "data.parquet").metadata or {})
    assert table.column("decode_profile").to_pylist() == [None, '{"max_tokens":8}', '{"temperature":0.2}']
    assert table.column("score").to_pylist() == [0.5, None, 1.0]
    jsonl = [json.loads(line) for line in (tmp_path / "data.jsonl").read_text().splitlines()]
    assert [r["sample_id"] for r in jsonl] == table.column("sample_id").to_pylist()


def test_unknown_format_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="csv"):
        write_dataset(ROWS, tmp_path, None, ["csv"])


VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.lists(st.integers(), max_size=3),
)
ROW = st.builds(
    lambda index, extra: {"source_index": index, **extra},
    st.integers(0, 50),
    st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), VALUE, max_size=4),
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=50)
@given(st.lists(ROW, max_size=25), st.randoms(use_true_random=False))
def test_shuffled_rows_give_byte_identical_files(
    tmp_path: Path, rows: list[dict], rnd: random.Random
) -> None:
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    first = write_dataset(rows, tmp_path / "one", None)
    second = write_dataset(shuffled, tmp_path / "two", None)
    assert first == second
    for name in first:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
