"""The deterministic split: a row's split is a function of its split_by value alone."""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from pathlib import Path
from typing import Any

from services.sink.split import split_of, split_point
from services.sink.subsets import SubsetStaging

RATIOS = [("train", 0.8), ("valid", 0.1), ("test", 0.1)]


def test_the_point_is_the_first_8_bytes_of_sha256_as_a_fraction() -> None:
    digest = hashlib.sha256(b"abc").digest()
    assert split_point("abc") == int.from_bytes(digest[:8], "big") / 2**64
    assert split_point(7) == split_point("7")  # non-strings by their canonical JSON
    assert split_point({"b": 1, "a": 2}) == split_point('{"a":2,"b":1}')


def test_the_order_the_splits_are_written_in_changes_nothing() -> None:
    ids = [f"sample-{i}" for i in range(500)]
    assert [split_of(i, RATIOS) for i in ids] == [split_of(i, list(reversed(RATIOS))) for i in ids]
    # intervals by name: test [0, 0.1), train [0.1, 0.9), valid [0.9, 1)
    assert all(
        split_of(i, RATIOS) == ("test" if p < 0.1 else "train" if p < 0.9 else "valid")
        for i in ids
        for p in [split_point(i)]
    )


def test_ratios_are_honoured_over_many_ids() -> None:
    counts = Counter(split_of(f"sample-{i}", RATIOS) for i in range(20_000))
    assert abs(counts["train"] / 20_000 - 0.8) < 0.01
    assert abs(counts["valid"] / 20_000 - 0.1) < 0.01 and abs(counts["test"] / 20_000 - 0.1) < 0.01


def _split_rows(folder: Path, rows: list[dict[str, Any]]) -> dict[str | None, list[str]]:
    subset = SubsetStaging("final", ["source_index", "sample_id", "keep"], folder, split=RATIOS)
    subset.add(rows)
    return {name: [r["sample_id"] for r in stager.merge().records()] for name, stager in subset.kept.items()}


def test_a_split_is_identical_across_runs_whatever_else_they_hold(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [
        {"source_index": i, "sample_id": hashlib.sha256(str(i).encode()).hexdigest(), "keep": True}
        for i in range(3000)
    ]
    first = _split_rows(tmp_path / "one", rows)
    shuffled = list(rows)
    random.Random(1).shuffle(shuffled)
    # Another run: other arrival order, a third of the rows missing, other rows added.
    others: list[dict[str, Any]] = [
        {"source_index": 10_000 + i, "sample_id": f"other-{i}", "keep": True} for i in range(500)
    ]
    second = _split_rows(tmp_path / "two", [r for r in shuffled if int(r["source_index"]) % 3] + others)
    for name in ("train", "valid", "test"):
        assert set(first[name]) & set(second[name]) == {
            r["sample_id"] for r in rows if int(r["source_index"]) % 3
        } & set(first[name])
    assert sum(len(v) for v in first.values()) == 3000
    assert not (set(first["train"]) & (set(second["valid"]) | set(second["test"])))  # no leak into training
