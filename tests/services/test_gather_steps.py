"""join and group_generations on an in-memory store (shared/gather.py): a key is emitted once all
its parts are in, whatever their order; a partition's drain settles only that partition's short
keys, partial or dead-lettered by `on_missing`; nothing stays held."""

from __future__ import annotations

from typing import Any

from services.group.step import GroupGenerationsStep
from services.join.step import JoinStep
from tests.fakes import DictContext


class _Context(DictContext):
    def __init__(self, inputs: list[str]) -> None:
        super().__init__()
        self.inputs = inputs
        self.input, self.partition = inputs[0], 0

    def current_input(self) -> str:
        return self.input

    def current_partition(self) -> int:
        return self.partition


def _feed(step: Any, ctx: _Context, stage: str, partition: int, row: dict[str, Any]) -> Any:
    ctx.input, ctx.partition = stage, partition
    return step.process_row(row)


def test_a_join_emits_a_key_once_every_input_delivered_it_in_inputs_order() -> None:
    ctx = _Context(["a", "b"])
    join = JoinStep(collect={"answer": "answers"})
    join.open(ctx)  # type: ignore[arg-type]
    assert _feed(join, ctx, "b", 0, {"sample_id": "s1", "answer": "B", "extra": 2}) is None
    merged = _feed(join, ctx, "a", 0, {"sample_id": "s1", "answer": "A"})
    assert merged == {"sample_id": "s1", "extra": 2, "answers": ["A", "B"], "join_missing": []}
    assert ctx.stores["join"].data == {}


def test_a_drained_partition_settles_its_own_short_keys_only() -> None:
    ctx = _Context(["a", "b"])
    join = JoinStep(collect={"answer": "answers"}, on_missing="drop")
    join.open(ctx)  # type: ignore[arg-type]
    _feed(join, ctx, "a", 0, {"sample_id": "s1", "answer": "A"})
    _feed(join, ctx, "b", 1, {"sample_id": "s2", "answer": "B"})
    done = join.finish("run", 0)
    assert done.rows == []
    [(row, error, reason)] = done.rejected
    assert (row["answers"], row["join_missing"], error) == (["A", None], ["b"], "JoinIncomplete")
    assert reason == "no row from b for sample_id s1"
    assert [k for k in ctx.stores["join"].data] == ["1|s2"]  # partition 1 still waits


def test_group_gathers_children_in_index_order_and_emits_a_short_group_partial() -> None:
    ctx = _Context(["gen"])
    group = GroupGenerationsStep(collect={"generation": "generations"})
    group.open(ctx)  # type: ignore[arg-type]

    def child(parent: str, i: int, n: int) -> dict[str, Any]:
        return {"parent_id": parent, "generation_index": i, "generation_count": n, "generation": f"g{i}"}

    assert _feed(group, ctx, "gen", 0, child("p", 1, 2)) is None
    full = _feed(group, ctx, "gen", 0, child("p", 0, 2))
    assert full == {"sample_id": "p", "generations": ["g0", "g1"], "group_missing": []}
    _feed(group, ctx, "gen", 0, child("q", 2, 3))
    done = group.finish("run", 0)
    assert done.rows == [{"sample_id": "q", "generations": ["g2"], "group_missing": [0, 1]}]
    assert ctx.stores["groups"].data == {}


def test_a_short_group_dropped_is_dead_lettered_with_the_missing_children() -> None:
    ctx = _Context(["gen"])
    group = GroupGenerationsStep(on_missing="drop")
    group.open(ctx)  # type: ignore[arg-type]
    _feed(group, ctx, "gen", 0, {"parent_id": "q", "generation_index": 1, "generation_count": 2})
    [(_, error, reason)] = group.finish("run", 0).rejected
    assert (error, reason) == ("GroupIncomplete", "children [0] of q never arrived")
