"""Operator chaining through the runtime core (no broker): several synchronous steps in one
service, each keeping its own accounting, dead letters, lineage and replay point."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fastdistill.plan import PipelinePlan, PlanError
from services.coordinator.manifest import ManifestAgg
from shared.pipeline import PipelineSpec
from tests.runtime.test_runner_core import PARTITIONS, SEED_SCHEMA, Harness, rows

SHOUT = {"id": "a", "step": "tests.runtime.steps:Shout"}


def test_a_chain_writes_only_its_last_topic_and_reports_every_step() -> None:
    h = Harness("tests.runtime.steps:Stamp", before=[SHOUT], chain=[["a", "s"]], service="a", stats=True)
    h.batch("r", rows(0, 6, frozenset({4})), 0)
    h.end("r")
    h.run(lambda: h.markers() == PARTITIONS * PARTITIONS)
    out = h.out_rows()
    assert sorted(r["source_index"] for r in out) == [0, 1, 2, 3, 5]
    assert all(r["shout"] == r["text"].upper() and len(r["stamp"]) == 64 for r in out)
    assert h.broker.values(h.spec.topic("a")) == []  # the inner step's topic is not written
    by_stage: dict[str, dict[str, int]] = {}
    for p in h.progress():
        counts = by_stage.setdefault(p.stage, {"in": 0, "out": 0, "errored": 0})
        counts["in"] += p.rows_in
        counts["out"] += p.rows_out
        counts["errored"] += p.rows_errored
    assert by_stage == {"a": {"in": 6, "out": 5, "errored": 1}, "s": {"in": 5, "out": 5, "errored": 0}}
    ended = {
        p.stage: sorted(e for q in h.progress() if q.stage == p.stage for e in q.partitions_ended)
        for p in h.progress()
    }
    assert ended == {"a": [0, 1], "s": [0, 1]}
    # the inner stage's statistics ride in its progress records; its dead letter names it
    stats = [json.loads(p.stats) for p in h.progress() if p.stage == "a" and p.stats]
    manifest = ManifestAgg()
    for blob in stats:
        manifest.merge(ManifestAgg.from_json(blob["manifest"]))
    assert manifest.count == 5
    assert all(p.stats is None for p in h.progress() if p.stage == "s")
    assert [(d["step"], d["row_index"]) for d in h.dead_letters()] == [("a", 4)]
    # each step adds its signature to the lineage
    lineage = h.records(h.spec.topic("s"))[0]["lineage"]
    assert lineage == [h.plan.steps["a"].signature(), h.plan.steps["s"].signature()]


def test_a_materialized_inner_step_writes_its_topic_too() -> None:
    h = Harness(
        "tests.runtime.steps:Stamp",
        before=[SHOUT | {"materialize": True}],
        chain=[["a", "s"]],
        service="a",
    )
    h.batch("r", rows(0, 3), 1)
    h.end("r")
    h.run(lambda: h.markers() == PARTITIONS * PARTITIONS)
    inner = h.records(h.spec.topic("a"))
    assert sorted(r["source_index"] for rec in inner for r in rec["rows"]) == [0, 1, 2]
    assert sum(1 for rec in inner if rec["end_of_run"]) == PARTITIONS * PARTITIONS
    assert inner[0]["lineage"] == [h.plan.steps["a"].signature()]


def test_rows_a_chained_step_releases_at_the_end_go_through_the_steps_after_it() -> None:
    h = Harness(
        "tests.runtime.steps:Tag",
        before=[
            {"id": "fan", "step": "tests.runtime.steps:Fan", "params": {"n": 3}},
            {"id": "grouped", "step": "group_generations", "params": {"collect": {"variant": "variants"}}},
        ],
        params={"tag": "t"},
        chain=[["grouped", "s"]],
        service="grouped",
    )
    from shared.fanout import children

    variants = [{"variant": f"v{i}"} for i in range(3)]
    kids = [c for r in rows(0, 2) for c in children(r | {"sample_id": f"s{r['source_index']}"}, variants)]
    h.batch("r", kids[:5], 0, stage="fan")  # the second parent lacks its last child
    h.end("r", stage="fan")
    h.run(lambda: h.markers() == PARTITIONS * PARTITIONS)
    out = {r["sample_id"]: r for r in h.out_rows()}
    assert out["s1"]["variants"] == ["v0", "v1"] and out["s1"]["group_missing"] == [2]
    assert out["s1"]["tag_t"] == "t:row 1"  # released at the end, then tagged by the next step


def _spec(steps: list[dict[str, Any]], chain: Any) -> PipelineSpec:
    return PipelineSpec.model_validate(
        {
            "name": "c",
            "partitions": PARTITIONS,
            "seed_schema": SEED_SCHEMA,
            "seed_model": "tests.runtime.steps:TextSeed",
            "steps": steps,
            "chain": chain,
        }
    )


def test_auto_chains_the_straight_synchronous_segments() -> None:
    spec = PipelineSpec.load("examples/text2sql/pipeline.yaml").model_copy(update={"chain": "auto"})
    plan = PipelinePlan.build(spec)
    # hash re-partitions by sample_id, the teacher and sql_eval are asynchronous
    assert plan.chains == [
        ["canonicalize", "hash"],
        ["dedup"],
        ["teacher"],
        ["clean_sql", "rule_filter"],
        ["sql_eval"],
        ["score", "keep_by_score"],
    ]
    assert plan.services == ["canonicalize", "dedup", "teacher", "clean_sql", "sql_eval", "score"]
    assert not plan.written("canonicalize") and plan.written("hash")
    with pytest.raises(KeyError, match="runs in the chain of 'canonicalize'"):
        plan.wiring("hash")


def test_an_explicit_chain_that_cannot_be_is_refused_with_the_reason() -> None:
    steps = [
        SHOUT,
        {"id": "slow", "step": "tests.runtime.steps:Slow"},
        {"id": "b", "step": "tests.runtime.steps:Stamp"},
    ]
    with pytest.raises(PlanError) as info:
        PipelinePlan.build(_spec(steps, [["a", "slow", "b"], ["b"]]))
    assert info.value.problems == [
        "chain ['a', 'slow', 'b']: 'slow' cannot follow 'a': asynchronous steps run alone",
        "chain ['a', 'slow', 'b']: 'b' cannot follow 'slow': asynchronous steps run alone",
        "chain: step 'b' is in two chains",
    ]
