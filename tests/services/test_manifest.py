from __future__ import annotations

import hashlib
import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from services.coordinator.manifest import ManifestAgg, canonical_json, content_hash, field_hash
from services.sink.writer import write_dataset
from shared.topic_schema import dataset_columns

ROW = st.fixed_dictionaries(
    {"source_index": st.integers(0, 10_000), "sample_id": st.text(max_size=8)},
    optional={"x": st.one_of(st.none(), st.floats(allow_nan=False), st.text(max_size=5), st.booleans())},
)


def _agg(rows: list[dict]) -> ManifestAgg:
    agg = ManifestAgg()
    agg.add_rows(rows)
    return agg


def test_hand_computed_manifest() -> None:
    rows = [{"sample_id": "b", "source_index": 1}, {"sample_id": "a", "source_index": 0, "keep": True}]
    report = _agg(rows).report("run-1", "hash", created_ms=1_700_000_000_000)
    digests = [hashlib.sha256(canonical_json(r).encode()).digest() for r in rows]
    expected = sum(int.from_bytes(d, "big") for d in digests) % 2**256
    assert report == {
        "run_id": "run-1",
        "stage": "hash",
        "count": 2,
        "columns": ["keep", "sample_id", "source_index"],
        "field_hash": hashlib.sha256(b"keep,sample_id,source_index").hexdigest(),
        "content_hash": f"{expected:064x}",
        "min_sample_id": "a",
        "max_sample_id": "b",
        "created_at": "2023-11-14T22:13:20.000+00:00",
    }
    assert canonical_json(rows[1]) == '{"keep":true,"sample_id":"a","source_index":0}'


def test_empty_stage_and_rows_without_sample_id() -> None:
    report = _agg([{"source_index": 0, "blob": b"\x00\xff"}]).report("r", "seeds", None)
    assert report["count"] == 1
    assert report["min_sample_id"] is None and report["max_sample_id"] is None
    assert report["created_at"] is None
    empty = ManifestAgg().report("r", "seeds", None)
    assert empty["count"] == 0 and empty["content_hash"] == "0" * 64
    assert empty["field_hash"] == field_hash([])


def test_a_changed_row_changes_the_content_hash_but_not_the_field_hash() -> None:
    a = _agg([{"sample_id": "a", "v": 1}]).report("r", "s", None)
    b = _agg([{"sample_id": "a", "v": 2}]).report("r", "s", None)
    assert a["content_hash"] != b["content_hash"]
    assert a["field_hash"] == b["field_hash"]


@given(st.lists(ROW, max_size=30), st.randoms(use_true_random=False), st.integers(0, 30))
def test_manifest_is_independent_of_order_and_split(rows: list[dict], rnd, cut: int) -> None:
    whole = _agg(rows).report("r", "s", 5)
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    left, right = _agg(shuffled[:cut]), _agg(shuffled[cut:])
    right.merge(left)
    assert right.report("r", "s", 5) == whole
    assert ManifestAgg.from_json(right.to_json()).report("r", "s", 5) == whole


def test_a_duplicated_row_changes_the_content_hash() -> None:
    # A sum, unlike XOR, does not let two equal rows cancel out.
    once = _agg([{"sample_id": "a"}]).report("r", "s", None)
    twice = _agg([{"sample_id": "a"}, {"sample_id": "a"}]).report("r", "s", None)
    assert twice["content_hash"] != once["content_hash"]
    assert twice["content_hash"] != ManifestAgg().report("r", "s", None)["content_hash"]


def test_snapshot_is_json_text_and_round_trips() -> None:
    agg = _agg([{"sample_id": "b", "n": 1}, {"sample_id": "a", "blob": b"\x01"}])
    text = json.dumps(agg.to_json())
    restored = ManifestAgg.from_json(json.loads(text))
    assert restored == agg
    assert json.dumps(restored.to_json()) == text
    empty = ManifestAgg()
    empty.merge(ManifestAgg())
    assert empty == ManifestAgg()


def test_rows_are_hashed_as_released(tmp_path: Path) -> None:
    """Cut to the dataset columns, rows that differ only in volatile fields hash alike, and the
    hash recomputed from the data.jsonl the sink's writer makes is the manifest's."""
    fields = [
        {"name": "source_index", "type": "long"},
        {"name": "sample_id", "type": "string"},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "teacher_latency_ms", "type": "double", "volatile": True},
    ]
    columns = dataset_columns(fields)
    paid = [{"source_index": i, "sample_id": f"s{i}", "teacher_latency_ms": 10.0 + i} for i in range(5)]
    cached = [row | {"teacher_latency_ms": 0.0} for row in paid]
    a, b = ManifestAgg(), ManifestAgg()
    a.add_rows(paid, columns)
    b.add_rows(cached, columns)
    ra, rb = a.report("r", "s", None), b.report("r", "s", None)
    assert ra == rb and ra["columns"] == ["note", "sample_id", "source_index"]
    assert _agg(paid).report("r", "s", None)["content_hash"] != ra["content_hash"]  # not cut: differs
    files = write_dataset(paid, tmp_path, columns, ["jsonl"])
    lines = (files.folder / "data.jsonl").read_text().splitlines()
    assert content_hash(json.loads(line) for line in lines) == ra["content_hash"]
