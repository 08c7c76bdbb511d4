"""Operator chaining on the real broker: the text-to-SQL example with `chain: auto` runs 6 step
processes instead of 9 and gives the dataset an unchained run gives (both equal the independent
computation), every stage reported, the manifest of a stage whose topic is never written equal
to one computed from its rows, and a replay from inside a chain that changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import yaml

from fastdistill.dev.teacher_sim.server import SimConfig
from fastdistill.plan import PipelinePlan
from fastdistill.runs import run_dir
from services.coordinator.manifest import ManifestAgg
from shared.topic_schema import dataset_columns
from tests.e2e.coordinator_stack import SEEDS, Pipeline, pipeline_copy, running_pipeline
from tests.e2e.expected import Expected, compute

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Pipeline]:
    folder = tmp_path_factory.mktemp("chained")
    path = pipeline_copy(folder)
    raw = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump(raw | {"chain": "auto"}, sort_keys=False))
    with running_pipeline(folder, kafka_bootstrap, path) as pipeline:
        yield pipeline


def test_a_chained_pipeline_gives_the_computed_dataset_and_reports_every_stage(pipe: Pipeline) -> None:
    spec = pipe.spec
    plan = PipelinePlan.build(spec)
    assert sorted(n for n in pipe.stack.services if n in plan.steps) == sorted(plan.services)
    assert len(plan.services) == 6 and not plan.written("canonicalize") and not plan.written("clean_sql")
    expected: Expected = compute(spec, SEEDS, SimConfig(seeds_path=SEEDS))

    run_id = f"chained-{uuid.uuid4().hex[:6]}"
    pipe.produce_all(SEEDS, run_id)
    assert pipe.wait(run_id, timeout_s=240)["released"]

    rows = pipe.dataset(run_id)
    want = [expected.rows[i] for i in sorted(expected.rows)]
    assert [(r["source_index"], r["sample_id"]) for r in rows] == [
        (r["source_index"], r["sample_id"]) for r in want
    ]
    for got, row in zip(rows, want, strict=True):
        assert {k: got[k] for k in row} == row

    manifests = {m["stage"]: m for m in pipe.report_files(run_id)["manifest"]}
    assert {stage: m["count"] for stage, m in manifests.items()} == expected.counts
    # canonicalize's topic is never written: its manifest comes from the chain's progress records
    for stage in ("canonicalize", "hash"):
        agg = ManifestAgg()
        agg.add_rows(expected.stage_rows[stage], dataset_columns(plan.fields[stage]))
        assert manifests[stage]["content_hash"] == f"{agg.content:064x}", stage
    state = pipe.wait_state(run_id)
    assert state["stages"]["canonicalize"]["rows_out"] == expected.counts["canonicalize"]
    assert state["stages"]["clean_sql"]["rows_in"] == expected.counts["teacher"]

    # a replay from inside a chain starts at the chain's first step and changes nothing
    requests = pipe.teacher_requests()
    replay_id = f"{run_id}.replay"
    proc = pipe.cli("replay", run_id, "--from", "rule_filter", "--run-id", replay_id)
    assert proc.returncode == 0, proc.stderr
    assert pipe.wait(replay_id)["released"]
    assert pipe.teacher_requests() == requests
    replayed = pipe.wait_state(replay_id)
    assert replayed["replay"] == {"replay_of": run_id, "from_step": "clean_sql"}
    leaf = spec.primary_leaf
    for name in ("data.jsonl", "data.parquet"):
        original = (run_dir(spec, run_id) / leaf / name).read_bytes()
        assert (run_dir(spec, replay_id) / leaf / name).read_bytes() == original, name
