"""The sink's staging: rows staged in sorted runs as they arrive, merged in release order."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.sink.staging import PartStager, shared_limit
from services.sink.writer import formats_named, write_dataset, write_part

FORMATS = formats_named(["jsonl", "parquet"])


def _staged(folder: Path, rows: list[dict[str, Any]], columns: list[str], run_rows: int) -> PartStager:
    stager = PartStager(folder, columns, run_rows=run_rows)
    for row in rows:
        stager.add(row)
    return stager


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


#: Values whose mix decides a column's type: a run typed on a few of them must convert exactly.
VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**65), 2**65),
    st.floats(allow_nan=False),
    st.text(max_size=4),
    st.binary(max_size=3),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 40), VALUE, st.sampled_from([None, 1, 2.5])), max_size=120),
    st.integers(1, 17),
    st.randoms(use_true_random=False),
)
def test_any_run_size_and_arrival_order_give_the_same_files(
    tmp_path_factory: Any, cells: list[tuple[int, Any, Any]], run_rows: int, rnd: random.Random
) -> None:
    tmp = tmp_path_factory.mktemp("staging")
    rows = [{"source_index": i, "v": v, "w": w} for i, v, w in cells]
    columns = ["source_index", "v", "w"]
    expected = write_dataset(rows, tmp / "memory", columns)
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    # Many small sorted runs, overlapping in their indices: the merge decides every position.
    merged = _staged(tmp / "staging", shuffled, columns, run_rows).merge()
    assert write_part(merged, tmp / "staged", FORMATS) == expected


def test_rows_are_released_by_index_then_by_record_and_without_index_last(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [
        {"source_index": None, "v": "z"},
        {"source_index": 2, "v": "b"},
        {"source_index": 2, "v": "a"},
        {"v": "y"},
        {"source_index": 0, "v": "c"},
    ]
    merged = _staged(tmp_path, rows, ["source_index", "v"], run_rows=2).merge()
    assert [r["v"] for r in merged.records()] == ["c", "a", "b", "y", "z"]
    assert len(merged) == 5


def test_no_memory_per_staged_row(tmp_path: Path) -> None:
    stager = _staged(
        tmp_path, [{"source_index": i, "v": "x" * 100} for i in range(1000)], ["source_index", "v"], 100
    )
    runs = stager.runs
    assert len(runs) == 10 and all(r.count == 100 for r in runs)
    assert not stager._buffer  # everything is on disk: lines, Arrow, and keys with line offsets
    assert all(r.index.stat().st_size == (100 + 101) * 8 for r in runs)
    assert list(runs[3].keys()) == list(range(300, 400))
    assert runs[3].offsets()[1] == len(b'{"source_index": 300, "v": "' + b"x" * 100 + b'"}\n')


def test_a_limit_types_columns_on_the_rows_it_keeps(tmp_path: Path) -> None:
    # `v` is an int for the first rows and a float, a string and a huge int only later: cut
    # before them, the column must be int64 exactly as if the later rows never arrived.
    rows: list[dict[str, Any]] = [{"source_index": i, "v": i, "late": None} for i in range(10)]
    rows += [
        {"source_index": 10, "v": 0.5, "late": True},
        {"source_index": 11, "v": "text", "late": 1},
        {"source_index": 12, "v": 2**70, "late": None},
    ]
    random.Random(3).shuffle(rows)
    stager = _staged(tmp_path / "staging", rows, ["source_index", "v", "late"], run_rows=4)
    ordered = sorted(rows, key=lambda r: r["source_index"])
    for limit in (5, 10, 11, 12, 13):
        files = write_part(stager.merge(limit), tmp_path / f"limit{limit}", FORMATS)
        assert files == write_dataset(
            ordered[:limit], tmp_path / f"given{limit}", ["source_index", "v", "late"]
        )
    schema = pq.read_schema(tmp_path / "limit10" / "data.parquet")
    assert str(schema.field("v").type) == "int64" and str(schema.field("late").type) == "string"
    assert str(pq.read_schema(tmp_path / "limit11" / "data.parquet").field("v").type) == "double"


def test_a_shared_limit_counts_the_first_rows_over_every_part(tmp_path: Path) -> None:
    kept = _staged(tmp_path / "kept", [{"source_index": i} for i in range(0, 40, 2)], ["source_index"], 3)
    rejected = _staged(
        tmp_path / "rejected", [{"source_index": i} for i in range(1, 40, 4)], ["source_index"], 3
    )
    # The first 10 rows of both: indices 0..13 minus 3, 7, 11 of the rejected ones.
    assert shared_limit([kept, rejected], 10) == [7, 3]
    assert [r["source_index"] for r in kept.merge(7).records()] == [0, 2, 4, 6, 8, 10, 12]
    assert shared_limit([kept, rejected], 1000) == [20, 10]


def test_an_empty_part_writes_empty_files(tmp_path: Path) -> None:
    files = write_part(PartStager(tmp_path / "staging", ["a", "b"]).merge(), tmp_path / "out", FORMATS)
    assert (tmp_path / "out" / "data.jsonl").read_bytes() == b""
    table = pq.read_table(tmp_path / "out" / "data.parquet")
    assert table.num_rows == 0 and table.column_names == ["a", "b"]
    assert files == write_dataset([], tmp_path / "memory", ["a", "b"])


def test_parts_are_read_again_as_records_and_tables(tmp_path: Path) -> None:
    rows = [{"source_index": i, "d": {"k": i}, "b": b"\x00" if i == 3 else None} for i in range(20)]
    merged = _staged(tmp_path, rows, ["source_index", "d", "b"], run_rows=6).merge()
    records = list(merged.records())
    assert records[3] == {"source_index": 3, "d": {"k": 3}, "b": "AA=="}
    assert records == list(merged.records())  # readable twice
    tables = list(merged.tables(8))
    assert [t.num_rows for t in tables] == [8, 8, 4]
    assert tables[0].column("d").to_pylist()[:2] == ['{"k":0}', '{"k":1}']
    assert merged.column_types() == [("source_index", "int64"), ("d", "json"), ("b", "json")]


@given(st.lists(VALUE, max_size=5))
def test_the_prebuilt_canonical_encoder_is_canonical_json(values: list[Any]) -> None:
    from services.coordinator import manifest
    from services.sink import columns

    for value in [values, *values, {"k": values, "é": 1}]:
        assert columns.canonical_json(value) == manifest.canonical_json(value)
