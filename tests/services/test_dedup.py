"""dedup: first row with a key wins; later ones dropped or flagged; keys kept in a state store."""

from __future__ import annotations

import pytest

from services.dedup import DedupStep
from tests.fakes import DictContext


def _rows(*keys: str) -> list[dict[str, object]]:
    return [{"source_index": i, "sample_id": k} for i, k in enumerate(keys)]


def test_drop_mode_keeps_first_occurrence() -> None:
    step = DedupStep()
    out = [step.process_row(r) for r in _rows("a", "b", "a", "c", "b")]
    assert [r["source_index"] if r else None for r in out] == [0, 1, None, 3, None]
    assert step.output_fields() == []


def test_flag_mode_marks_instead_of_dropping() -> None:
    step = DedupStep(mode="flag")
    out = [step.process_row(r) for r in _rows("a", "a")]
    assert [r["is_duplicate"] for r in out if r] == [False, True]
    assert [f["name"] for f in step.output_fields()] == ["is_duplicate"]


def test_custom_field() -> None:
    step = DedupStep(field="task_id")
    assert step.process_row({"source_index": 0, "task_id": 7}) is not None
    assert step.process_row({"source_index": 1, "task_id": 7}) is None


def test_state_store_survives_a_new_instance() -> None:
    ctx = DictContext()
    first = DedupStep()
    first.open(ctx)
    assert first.process_row(_rows("a")[0]) is not None
    assert ctx.stores["dedup_keys"].data == {"a": b"1"}
    assert ctx.durable["dedup_keys"] is False  # dedup keys commit with the output rows

    restarted = DedupStep()
    restarted.open(ctx)
    assert restarted.process_row(_rows("a")[0]) is None
    assert restarted.process_row(_rows("b")[0]) is not None


def test_the_store_is_the_only_memory_once_open() -> None:
    # The runtime rebuilds the store when a transaction aborts (and scopes it per run): keys it
    # forgets must be new again, or the replayed rows would be lost as "duplicates".
    ctx = DictContext()
    step = DedupStep()
    step.open(ctx)
    assert step.process_row(_rows("a")[0]) is not None
    ctx.stores["dedup_keys"].data.clear()
    assert step.process_row(_rows("a")[0]) is not None
    assert step.process_row(_rows("a")[0]) is None


def test_missing_key_is_an_error() -> None:
    with pytest.raises(ValueError, match="sample_id"):
        DedupStep().process_row({"source_index": 0})


def test_mode_validated() -> None:
    with pytest.raises(ValueError):
        DedupStep(mode="delete")
