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

from services.sink.staging import PartStager
from services.sink.writer import formats_named, write_dataset, write_part

ROWS = [
    {"source_index": 2, "sample_id": "c", "decode_profile": {"temperature": 0.2}, "score": 1, "ok": True},
    {"source_index": 0, "sample_id": "a", "decode_profile": None, "score": 0.5, "ok": False, "sql": "é"},
    {"source_index": 1, "sample_id": "b", "decode_profile": {"max_tokens": 8}, "score": None, "ok": None},
]


def test_jsonl_is_sorted_with_keys_in_column_order(tmp_path: Path) -> None:
    files = write_dataset(ROWS, tmp_path, ["sample_id", "source_index", "sql"], ["jsonl"])
    text = (tmp_path / "data.jsonl").read_text(encoding="utf-8")
    assert text == (
        '{"sample_id": "a", "source_index": 0, "sql": "é"}\n'
        '{"sample_id": "b", "source_index": 1, "sql": null}\n'
        '{"sample_id": "c", "source_index": 2, "sql": null}\n'
    )
    digest = hashlib.sha256(text.encode()).hexdigest()
    assert files == files.sha256 == {"data.jsonl": digest}
    assert files.paths == {"data.jsonl": tmp_path / "data.jsonl"}
    assert json.loads(json.dumps(files)) == {"data.jsonl": digest}  # the sink's release record
    assert not (tmp_path / "data.parquet").exists()


def test_rows_without_source_index_go_last_and_odd_values_survive(tmp_path: Path) -> None:
    rows = [
        {"sample_id": "z", "big": 2**70, "blob": b"\x00"},
        {"source_index": 3, "sample_id": "y", "big": 1},
    ]
    write_dataset(rows, tmp_path, ["sample_id", "big", "blob"])
    assert (tmp_path / "data.jsonl").read_text().splitlines() == [
        '{"sample_id": "y", "big": 1, "blob": null}',
        f'{{"sample_id": "z", "big": {2**70}, "blob": "AA=="}}',
    ]
    table = pq.read_table(tmp_path / "data.parquet")
    # an integer beyond int64 makes its column JSON text rather than failing the write
    assert table.column("big").to_pylist() == ["1", str(2**70)]
    assert table.column("blob").to_pylist() == [None, '"AA=="']


def test_parquet_schema_is_explicit_and_free_of_pandas_metadata(tmp_path: Path) -> None:
    files = write_dataset(ROWS, tmp_path, None)
    assert set(files) == {"data.jsonl", "data.parquet"}
    for name, path in files.paths.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == files.sha256[name]
    metadata = pq.ParquetFile(tmp_path / "data.parquet").metadata
    assert metadata.row_group(0).column(0).compression == "SNAPPY"
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
    assert first.sha256 == second.sha256
    for name in first:
        assert first.paths[name].read_bytes() == second.paths[name].read_bytes()


def test_writing_the_same_rows_twice_gives_byte_identical_files(tmp_path: Path) -> None:
    rows = [{"source_index": i, "sample_id": f"s{i}", "v": i / 7, "d": {"k": i}} for i in range(500)]
    first = write_dataset(rows, tmp_path / "one", None)
    second = write_dataset(list(reversed(rows)), tmp_path / "two", None)
    assert first.sha256 == second.sha256
    assert [p.read_bytes() for p in first.paths.values()] == [p.read_bytes() for p in second.paths.values()]


def test_staged_rows_write_the_same_files_as_rows_in_memory(tmp_path: Path) -> None:
    rows = [
        {"source_index": i % 700, "sample_id": f"s{i}", "v": i / 7, "d": {"k": i % 5}, "ok": i % 3 == 0}
        for i in range(1_500)
    ]
    random.Random(7).shuffle(rows)
    columns = ["source_index", "sample_id", "v", "d", "ok"]
    # Small sorted runs, as the sink stages a long run: many of them to merge.
    staged = PartStager(tmp_path / "staging", columns, run_rows=64)
    for row in rows:
        staged.add(row)
    assert len(staged) == len(rows)
    formats = formats_named(["jsonl", "parquet"])
    expected = write_dataset(rows, tmp_path / "memory", columns)
    assert write_part(staged.merge(), tmp_path / "staged", formats) == expected
    # A limit keeps the first rows of the dataset's order, exactly as if only they were given.
    ordered = [json.loads(line) for line in (tmp_path / "memory" / "data.jsonl").read_text().splitlines()]
    limited = write_part(staged.merge(limit=100), tmp_path / "limited", formats)
    assert limited == write_dataset(ordered[:100], tmp_path / "first", columns)
