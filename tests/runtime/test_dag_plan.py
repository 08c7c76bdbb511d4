"""Pipelines as DAGs, broker-free: the model, validation before anything starts, the views, the
join/group/union steps through the runtime core."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from fastdistill.cli import app
from fastdistill.dag_view import mermaid, text_tree
from fastdistill.plan import PipelinePlan, PlanError
from shared.pipeline import PipelineSpec
from tests.runtime.test_runner_core import PARTITIONS, Harness, rows

SEED_SCHEMA = str(Path(__file__).with_name("text_seed.avsc"))


def spec_of(steps: list[dict[str, Any]], **extra: Any) -> PipelineSpec:
    raw = {
        "name": "dag",
        "partitions": PARTITIONS,
        "seed_schema": SEED_SCHEMA,
        "seed_model": "tests.runtime.steps:TextSeed",
        "steps": steps,
    } | extra
    return PipelineSpec.model_validate(raw)


DIAMOND = [
    {"id": "keyed", "step": "tests.runtime.steps:Keyed"},
    {"id": "left", "step": "tests.runtime.steps:Tag", "params": {"tag": "l"}, "inputs": ["keyed"]},
    {"id": "right", "step": "tests.runtime.steps:Tag", "params": {"tag": "r"}, "inputs": ["keyed"]},
    {"id": "both", "step": "join", "inputs": ["left", "right"]},
]


def test_a_diamond_has_its_order_leaves_fields_and_wiring() -> None:
    spec = spec_of(DIAMOND)
    assert spec.stages == ["seeds", "keyed", "left", "right", "both"]
    assert spec.successors("keyed") == ["left", "right"] and spec.leaves == ["both"]
    assert spec.downstream("left") == ["left", "both"]
    assert spec.replay_stages("left") == (["keyed", "right"], ["left", "both"])
    plan = PipelinePlan.build(spec)
    names = [f["name"] for f in plan.fields["both"]]
    assert names == ["source_index", "text", "fail", "sample_id", "tag_l", "tag_r", "join_missing"]
    wiring = plan.wiring("both")
    assert [i.stage for i in wiring.inputs] == ["left", "right"]
    assert wiring.replay_scope == {"keyed", "left", "right", "both"}
    assert plan.wiring("left").replay_scope == {"keyed", "left"}


def test_a_plain_list_is_still_a_chain() -> None:
    spec = spec_of(
        [{"id": "a", "step": "tests.runtime.steps:Shout"}, {"id": "b", "step": "tests.runtime.steps:Stamp"}]
    )
    assert spec.inputs("a") == ["seeds"] and spec.inputs("b") == ["a"] and spec.leaves == ["b"]


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (
            [{"id": "a", "step": "x", "inputs": ["b"]}, {"id": "b", "step": "x", "inputs": ["a"]}],
            "form a cycle",
        ),
        ([{"id": "a", "step": "x", "inputs": ["nowhere"]}], "input 'nowhere' is no stage"),
        ([{"id": "a", "step": "x", "inputs": ["a"]}], "reads itself"),
        (
            [
                {"id": "a", "step": "x", "route": {"b": {"field": "f", "equals": 1}}},
                {"id": "b", "step": "x"},
                {"id": "c", "step": "x", "inputs": ["a"]},
            ],
            r"route names \['b'\] but its successors are \['b', 'c'\]",
        ),
    ],
)
def test_a_malformed_dag_is_refused_at_load(steps: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        spec_of(steps)


def test_every_problem_is_one_line_naming_its_step() -> None:
    spec = spec_of(
        [
            {"id": "keyed", "step": "tests.runtime.steps:Keyed"},
            {"id": "filter", "step": "rule_filter", "params": {"field": "sqll"}},
            {"id": "typo", "step": "sql_evall", "inputs": ["keyed"]},
            {"id": "bad", "step": "dedup", "params": {"fild": "x"}, "inputs": ["keyed"]},
        ]
    )
    with pytest.raises(PlanError) as info:
        PipelinePlan.build(spec)
    problems = info.value.problems
    assert len(problems) == 3
    assert problems[0] == "step 'typo' (sql_evall): unknown step 'sql_evall'; did you mean 'sql_eval'?"
    assert problems[1] == "step 'bad' (dedup): unknown param 'fild'; did you mean 'field'?"
    assert problems[2].startswith(
        "step 'filter' reads 'sqll', which its input (keyed) does not carry; it has: "
    )
    assert all("\n" not in p for p in problems)


def test_validate_prints_the_tree_and_the_problems(tmp_path: Path) -> None:
    path = tmp_path / "dag.yaml"
    path.write_text(
        yaml.safe_dump(spec_of(DIAMOND).model_dump(mode="json", exclude_unset=True, by_alias=True))
    )
    runner = CliRunner()
    shown = runner.invoke(app, ["validate", str(path)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert (
        "both (join) leaf + reads right" in shown.output
        and "also reads this; shown under left" in shown.output
    )
    graph = runner.invoke(app, ["validate", str(path), "--mermaid"])
    assert graph.output.startswith("flowchart TD\n") and "    left --> both\n" in graph.output
    broken = yaml.safe_load(path.read_text())
    broken["steps"][1]["step"] = "no_such_step"
    path.write_text(yaml.safe_dump(broken))
    failed = runner.invoke(app, ["validate", str(path)], env={"COLUMNS": "200"})
    assert failed.exit_code == 2
    assert f"{path}: step 'left' (no_such_step): unknown step 'no_such_step'" in failed.output


def test_routes_show_their_conditions() -> None:
    spec = spec_of(
        [
            {
                "id": "split",
                "step": "tests.runtime.steps:Keyed",
                "route": {
                    "left": {"field": "fail", "equals": True},
                    "right": {"field": "fail", "not_equals": True},
                },
            },
            {"id": "left", "step": "tests.runtime.steps:Shout", "inputs": ["split"]},
            {"id": "right", "step": "tests.runtime.steps:Shout", "inputs": ["split"]},
        ]
    )
    assert 'split -- "fail equals True" --> left' in mermaid(spec)
    assert len(text_tree(spec).children[0].children) == 2


SIDES = [
    {"id": "a", "step": "tests.runtime.steps:Shout"},
    {"id": "b", "step": "tests.runtime.steps:Shout", "inputs": ["seeds"]},
]


def test_a_join_merges_both_sides_and_settles_the_incomplete_at_the_end() -> None:
    h = Harness(
        "join", before=SIDES, inputs=["a", "b"], params={"by": "text", "collect": {"shout": "shouts"}}
    )
    shout = [r | {"shout": r["text"].upper()} for r in rows(0, 8)]
    h.batch("r", shout[0:3], 0, stage="a")
    h.batch("r", shout[1:3] + shout[7:8], 0, stage="b")  # 0 never comes from b; 7 never from a
    h.end("r", stage="a")
    h.end("r", stage="b")
    h.run(lambda: h.markers() == PARTITIONS * PARTITIONS)
    out = {r["text"]: r for r in h.out_rows()}
    assert set(out) == {"row 0", "row 1", "row 2", "row 7"}
    assert out["row 1"]["join_missing"] == [] and out["row 1"]["shouts"] == ["ROW 1", "ROW 1"]
    assert out["row 0"]["join_missing"] == ["b"] and out["row 0"]["shouts"] == ["ROW 0", None]
    assert out["row 7"]["join_missing"] == ["a"] and out["row 7"]["shouts"] == [None, "ROW 7"]
    assert "shout" not in out["row 1"]
    assert h.totals()["rows_in"] == 6 and h.totals()["rows_out"] == 4
    # what waited was committed as state, and removed once settled
    assert h.broker.read(f"{h.wiring.state_topic_prefix}.join") == {}


def test_a_join_that_drops_the_incomplete_dead_letters_them() -> None:
    h = Harness("join", before=SIDES, inputs=["a", "b"], params={"by": "text", "on_missing": "drop"})
    h.batch("r", [r | {"shout": ""} for r in rows(0, 2)], 0, stage="a")
    h.end("r", stage="a")
    h.end("r", stage="b")
    h.run(lambda: h.markers() == PARTITIONS * PARTITIONS)
    assert h.out_rows() == []
    letters = h.dead_letters()
    assert [d["error_type"] for d in letters] == ["JoinIncomplete", "JoinIncomplete"]
    assert all(d["error_message"].startswith("no row from b for text ") for d in letters)


def test_a_join_survives_an_abort_without_losing_what_waits() -> None:
    h = Harness("join", before=SIDES, inputs=["a", "b"], params={"by": "text"})
    shout = [r | {"shout": "x"} for r in rows(0, 4)]
    h.batch("r", shout, 0, stage="a")
    h.transport.abort_next = 1
    h.batch("r", shout, 0, stage="b")
    h.end("r", stage="a")
    h.end("r", stage="b")
    h.run(lambda: h.markers() == PARTITIONS * PARTITIONS)
    out = h.out_rows()
    assert sorted(r["source_index"] for r in out) == [0, 1, 2, 3]
    assert all(r["join_missing"] == [] for r in out)


def test_children_are_grouped_back_into_their_parent() -> None:
    h = Harness(
        "group_generations",
        before=[{"id": "fan", "step": "tests.runtime.steps:Fan", "params": {"n": 4}}],
        params={"collect": {"variant": "variants"}},
    )
    from shared.fanout import children

    kids = [
        c
        for r in rows(0, 3)
        for c in children(
            r | {"sample_id": f"s{r['source_index']}"}, [{"variant": f"v{i}"} for i in range(4)]
        )
    ]
    assert [k["sample_id"] for k in kids[:4]] == ["s0:0", "s0:1", "s0:2", "s0:3"]
    h.batch("r", kids[:5], 0, stage="fan")
    h.batch("r", kids[5:10], 0, stage="fan")  # s2 loses two children on the way
    h.end("r", stage="fan")
    h.run(lambda: h.markers() == PARTITIONS * PARTITIONS)
    out = {r["sample_id"]: r for r in h.out_rows()}
    assert out["s0"]["variants"] == ["v0", "v1", "v2", "v3"] and out["s0"]["group_missing"] == []
    assert out["s2"]["variants"] == ["v0", "v1"] and out["s2"]["group_missing"] == [2, 3]
    assert "generation_index" not in out["s0"] and "parent_id" not in out["s0"]
