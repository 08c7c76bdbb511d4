"""End to end: the text-to-SQL example through every step as its own process, on the real broker,
against the teacher simulator over HTTP, checked against an independent in-process computation.

One stack serves the module: a first run (counts of every stage and the dataset's rows against
`tests.e2e.expected`), the same seeds again (byte-identical files), then a run against a second
simulator serving 20% faults, to which only the teacher service is switched. The teacher retries
once (`max_retries: 1`), so some rows do exhaust their attempts and the dead-letter path is
exercised as well as the retries.
"""

from __future__ import annotations

import hashlib
import json
import signal
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fastdistill.dev.teacher_sim.server import SimConfig
from fastdistill.local_stack import SIM_NAME
from fastdistill.plan import PipelinePlan
from fastdistill.runs import finished, release_summary, run_dir
from shared.pipeline import SEEDS_STAGE
from tests.e2e.coordinator_stack import (
    KEPT_ROWS,
    REJECTED_ROWS,
    SEEDS,
    Pipeline,
    pipeline_copy,
    running_pipeline,
)
from tests.e2e.expected import Expected, compute, summary
from tests.runtime.harness import read_all

pytestmark = pytest.mark.kafka

FAULT_RATE = 0.2
#: Short timeouts and backoffs so faults cost seconds; one retry, so some rows run out of attempts.
TEACHER = {
    "request_timeout_s": 8,
    "backoff_base_s": 0.05,
    "backoff_max_s": 0.5,
    "max_retry_after_s": 1,
    "max_retries": 1,
}
DATASET_FILES = ("data.jsonl", "data.parquet")
#: Columns that say how a row was fetched, not what it is: they differ between runs by design,
#: so dataset files leave them out.
FETCH_COLUMNS = {"teacher_cached", "teacher_latency_ms"}


def _pipeline(folder: Path) -> Path:
    path = pipeline_copy(folder, **TEACHER)
    raw = yaml.safe_load(path.read_text())
    for step in raw["steps"]:
        if step["step"] == "sql_eval":
            # The 1 s query budget can run out on a busy 2-core box and turn a row's verdict; the
            # comparison with the computation needs a budget no load reaches.
            step["params"]["time_budget_ms"] = 30_000
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


#: Every service has it, as a real teacher's would: no released file may contain it.
API_KEY = "sk-e2e-must-never-be-released"


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Pipeline]:
    folder = tmp_path_factory.mktemp("text2sql")
    env = {"OPENAI_API_KEY": API_KEY}
    with running_pipeline(folder, kafka_bootstrap, _pipeline(folder), env=env) as pipeline:
        yield pipeline


@pytest.fixture(scope="module")
def expected(pipe: Pipeline) -> Expected:
    return compute(pipe.spec, SEEDS, SimConfig(seeds_path=SEEDS))


def _run(pipe: Pipeline, seeds: Path, prefix: str) -> str:
    run_id = f"{prefix}-{uuid.uuid4().hex[:6]}"
    pipe.produce_all(seeds, run_id)
    result = pipe.wait(run_id, timeout_s=240)
    assert result["released"], result
    return run_id


@pytest.fixture(scope="module")
def first_run(pipe: Pipeline) -> str:
    return _run(pipe, SEEDS, "first")


def _stage_counts(pipe: Pipeline, run_id: str) -> dict[str, int]:
    manifests = pipe.report_files(run_id)["manifest"]
    return {m["stage"]: m["count"] for m in manifests}


def _final_quality(pipe: Pipeline, run_id: str) -> dict[str, Any]:
    return next(q for q in pipe.report_files(run_id)["quality"] if q["stage"] == pipe.spec.primary_leaf)


def _assert_rows_as_computed(rows: list[dict[str, Any]], expected: Expected, missing: set[int]) -> None:
    """The dataset is the computed final rows, less `missing`, in source index order."""
    want = [expected.rows[i] for i in sorted(expected.rows) if i not in missing]
    assert [(r["source_index"], r["sample_id"]) for r in rows] == [
        (r["source_index"], r["sample_id"]) for r in want
    ]
    for got, row in zip(rows, want, strict=True):
        assert {k: got[k] for k in row} == row, row["source_index"]
        assert not FETCH_COLUMNS & got.keys()


def test_every_stage_count_and_row_matches_the_independent_computation(
    pipe: Pipeline, expected: Expected, first_run: str
) -> None:
    assert expected.accepted == len(SEEDS.read_text().splitlines())
    assert 0 < expected.counts[pipe.spec.primary_leaf] < expected.accepted  # dedup has work to do
    assert _stage_counts(pipe, first_run) == expected.counts
    assert list(_stage_counts(pipe, first_run)) == pipe.spec.stages

    rows = pipe.dataset(first_run)
    assert len(rows) == expected.counts[pipe.spec.primary_leaf]
    _assert_rows_as_computed(rows, expected, missing=set())
    # The styles the simulator mixes in reach the dataset: right, wrong and failing answers.
    quality = _final_quality(pipe, first_run)
    computed = summary(list(expected.rows.values()))
    assert {k: quality[k] for k in computed} == computed
    assert 0 < computed["gold_matched"] < computed["exec_passed"] < computed["total"]
    assert pipe.wait_state(first_run)["dead_letters"] == {}


def _reason(row: dict[str, Any]) -> str:
    return row["reject_reason"] if row["reject_reason"] not in (None, "ok") else "keep=false"


def test_the_kept_set_is_released_and_the_rejected_rows_beside_it(
    pipe: Pipeline, expected: Expected, first_run: str
) -> None:
    final = [expected.rows[i] for i in sorted(expected.rows)]
    kept = [r for r in final if r["keep"] is not False]
    rejected = [r for r in final if r["keep"] is False]
    assert (len(kept), len(rejected)) == (KEPT_ROWS, REJECTED_ROWS)
    result = finished(pipe.spec, first_run)
    assert result is not None
    subset = result["subsets"][pipe.spec.primary_leaf]
    assert (result["rows"], subset["kept"], subset["rejected"]) == (KEPT_ROWS, KEPT_ROWS, REJECTED_ROWS)
    assert subset["rejected_because"] == dict(sorted(Counter(map(_reason, rejected)).items()))
    _assert_rows_as_computed(pipe.kept(first_run), Expected({}, {r["source_index"]: r for r in kept}), set())
    folder = run_dir(pipe.spec, first_run)
    aside = [json.loads(line) for line in (folder / f"{pipe.spec.primary_leaf}.rejected/data.jsonl").open()]
    assert [(r["source_index"], r["rejected_because"]) for r in aside] == [
        (r["source_index"], _reason(r)) for r in rejected
    ]
    # The SFT conversations of the kept rows, as the pipeline's chat format maps them.
    chat = [json.loads(line) for line in (folder / pipe.spec.primary_leaf / "chat.jsonl").open()]
    assert chat == [
        {
            "messages": [
                {"role": "system", "content": r["system_prompt"]},
                {"role": "user", "content": f"Schema: {r['schema']}\nQuestion: {r['instruction']}\nSQL:"},
                {"role": "assistant", "content": r["sql"]},
            ]
        }
        for r in kept
    ]
    lines = release_summary(result)
    assert lines[0] == (
        f"run {first_run}: {KEPT_ROWS} rows kept in {folder / pipe.spec.primary_leaf}/; "
        f"{REJECTED_ROWS} rejected in {folder / pipe.spec.primary_leaf}.rejected/"
    )


def test_the_card_lists_how_the_run_was_made_and_no_secret(pipe: Pipeline, first_run: str) -> None:
    folder = run_dir(pipe.spec, first_run)
    card = (folder / "README.md").read_text()
    assert f"Seed file `seeds.jsonl`, SHA-256 `{hashlib.sha256(SEEDS.read_bytes()).hexdigest()}`" in card
    plan = PipelinePlan.build(pipe.spec)
    for step_id, step in plan.steps.items():
        assert f"| {step_id} | {pipe.spec.step(step_id).step} | `{step.signature()}` |" in card
    sim = pipe.stack.env["OPENAI_BASE_URL"]
    assert f"| teacher | teacher-sim | {sim} (OPENAI_BASE_URL, as the sink sees it) |" in card
    for stage, info in pipe.wait_state(first_run)["stages"].items():
        assert f"| {stage} | {info['rows_out']} |" in card
    assert "**Passed.**" in card and "| exec_pass_rate |" in card
    for path in folder.rglob("*"):
        if path.is_file():
            assert API_KEY.encode() not in path.read_bytes(), path


def _sha256s(pipe: Pipeline, run_id: str) -> dict[str, str]:
    """Every file of the final stage's subset (kept, rejected; data and chat), by its bytes."""
    folder = run_dir(pipe.spec, run_id)
    names = [f"{pipe.spec.primary_leaf}/{n}" for n in (*DATASET_FILES, "chat.jsonl")]
    names += [f"{pipe.spec.primary_leaf}.rejected/{n}" for n in DATASET_FILES]
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in names}


def test_same_seeds_twice_give_byte_identical_files(pipe: Pipeline, first_run: str) -> None:
    second = _run(pipe, SEEDS, "second")
    assert second != first_run
    assert _stage_counts(pipe, second) == _stage_counts(pipe, first_run)
    assert _sha256s(pipe, second) == _sha256s(pipe, first_run)


def _switch_teacher_to_faulty_sim(pipe: Pipeline) -> None:
    """A fresh simulator at FAULT_RATE, and the teacher service restarted to talk to it."""
    stack = pipe.stack
    assert stack.retire(SIM_NAME) is not None
    stack.start_teacher_sim(SEEDS, fault_rate=FAULT_RATE)
    teacher = stack.services["teacher"]
    teacher.signal(signal.SIGTERM)
    assert teacher.wait(30) is not None
    stack.restart("teacher")


def test_teacher_faults_lose_no_row_and_duplicate_none(
    pipe: Pipeline, first_run: str, tmp_path: Path
) -> None:
    _switch_teacher_to_faulty_sim(pipe)
    # Another system prompt gives new sample ids, so the generation cache of the runs before
    # answers nothing; the simulator answers by question, so the answers stay the same.
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(SEEDS.read_text().replace('"Return SQL only."', '"Return SQL only, please."'))
    expected = compute(pipe.spec, seeds, SimConfig(seeds_path=SEEDS, fault_rate=FAULT_RATE))
    run_id = _run(pipe, seeds, "faults")

    state = pipe.wait_state(run_id)
    dead = sum(n for by_type in state["dead_letters"].values() for n in by_type.values())
    records = read_all(
        pipe.kafka,
        PipelinePlan.build(pipe.spec).serde(),
        pipe.spec.dlq_topic,
        until=lambda recs: sum(r.get("run_id") == run_id for _, r in recs) >= dead,
    )
    letters = [r for _, r in records if r.get("run_id") == run_id]
    assert len(letters) == dead
    for letter in letters:
        # The only step that may give up on a row here is the teacher, and it says why.
        assert letter["step"] == "teacher" and letter["error_type"] == "GenerationFailed", letter
        prefix = "gave up after 2 attempts: "
        assert letter["error_message"].startswith(prefix) and letter["error_message"][len(prefix) :], letter
        assert letter["sample_id"] and letter["row_index"] is not None

    rows = pipe.dataset(run_id)
    in_dataset = Counter(r["source_index"] for r in rows)
    in_dlq = Counter(letter["row_index"] for letter in letters)
    dropped = Counter(i for indices in expected.dropped.values() for i in indices)
    assert max([*in_dataset.values(), *in_dlq.values(), *dropped.values()]) == 1, "a row twice"
    assert not (in_dataset.keys() & in_dlq.keys()) and not (dropped.keys() & (in_dataset | in_dlq).keys())
    assert sorted([*in_dataset, *in_dlq, *dropped]) == list(range(expected.accepted)), "a row lost"
    for letter in letters:
        assert letter["sample_id"] == expected.rows[letter["row_index"]]["sample_id"]
    assert len({r["sample_id"] for r in rows} | {letter["sample_id"] for letter in letters}) == len(
        expected.rows
    )
    _assert_rows_as_computed(rows, expected, missing=set(in_dlq))

    # Every stage from the teacher on is short of exactly the dead-lettered rows.
    stages = pipe.spec.stages
    teacher_at = stages.index("teacher")
    counts = _stage_counts(pipe, run_id)
    for stage in stages:
        assert counts[stage] == expected.counts[stage] - (
            len(letters) if stages.index(stage) >= teacher_at else 0
        )
    assert counts[SEEDS_STAGE] == expected.accepted
    stats = _sim_stats(pipe)
    assert stats["faults_served"] > 0 and stats["retried_requests"] > 0
    assert letters, "no row exhausted its retries at this fault rate: the DLQ path went untested"


def _sim_stats(pipe: Pipeline) -> dict[str, Any]:
    port = pipe.stack.services[SIM_NAME].port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as resp:
        return dict(json.load(resp))
