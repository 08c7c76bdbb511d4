"""End to end: a Spider-style seed file over three databases through sql_eval with per-row
databases (`db_field: db_id`, `db_dir`), every step its own process on the real broker, the
teacher simulator over HTTP, the databases built here.

Among the seeds: a gold that fails on its own database (`gold_error`, scored 0.0), a gold that
would run for an hour in one function call (`printf(...)` x400: killed at the wall limit, a
`timeout` gold error; it froze the service before), and a seed naming a database the folder does
not have (a dead letter saying so). Everything else is compared row by row with an in-process
computation of the same steps.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fastdistill.dev.teacher_sim.answers import AnswerBook
from fastdistill.dev.teacher_sim.server import SimConfig
from fastdistill.local_stack import LocalStack
from fastdistill.plan import PipelinePlan
from fastdistill.topics import pipeline_topics
from services.text_generation.step import TextGenerationStep
from shared.config import KafkaSettings
from shared.kafka import clients
from shared.pipeline import PipelineSpec
from shared.step import Row
from tests.e2e.coordinator_stack import Pipeline
from tests.runtime.harness import read_all
from tests.services.spider_dbs import build_databases, schema_of, seeds

pytestmark = pytest.mark.kafka

WALL_MS = 4000
POISON_GOLD = "SELECT " + " || ".join(["printf('%.*c', 1000000000, 'x')"] * 400)
FETCH_COLUMNS = {"teacher_cached", "teacher_latency_ms"}


def _all_seeds() -> list[dict[str, Any]]:
    extra = [
        {
            "task_id": "spider-poison",
            "schema": schema_of("pets_1"),
            "instruction": "Print the letter x a billion times, four hundred times over.",
            "gold_sql": POISON_GOLD,
            "system_prompt": "Return SQL only.",
            "db_id": "pets_1",
        },
        {
            "task_id": "spider-missing-db",
            "schema": "flight(id)",
            "instruction": "How many flights are there?",
            "gold_sql": "SELECT count(*) FROM flight",
            "system_prompt": "Return SQL only.",
            "db_id": "flight_2",
        },
    ]
    rows = seeds()
    return [*rows[:5], extra[0], *rows[5:9], extra[1], *rows[9:]]


def _pipeline(folder: Path, db_dir: Path) -> Path:
    raw = {
        "name": f"e2e-spider-{uuid.uuid4().hex[:8]}",
        "partitions": 2,
        "batch_size": 4,
        "seed_schema": "rows/seed.avsc",
        "seed_model": "services.seeds.model:Seed",
        "steps": [
            {
                "id": "canonicalize",
                "step": "canonicalize",
                # db_id belongs to the input: the same question on two databases is two samples.
                "params": {
                    "fields": ["task_id", "schema", "instruction", "gold_sql", "system_prompt", "db_id"]
                },
            },
            {
                "id": "hash",
                "step": "hash",
                "params": {"fields": ["task_id", "canonical_input"], "output": "sample_id"},
            },
            {
                "id": "teacher",
                "step": "text_generation",
                "params": {
                    "llm": {"model": "teacher-sim", "request_timeout_s": 8},
                    "template": "Schema: {{ schema }}\nQuestion: {{ instruction }}\nSQL:",
                },
            },
            {"id": "clean_sql", "step": "clean_sql", "params": {"field": "generation", "output": "sql"}},
            {
                "id": "sql_eval",
                "step": "sql_eval",
                "params": {
                    "db_field": "db_id",
                    "db_dir": str(db_dir),
                    # A budget no load reaches for the real queries; the poison gold still ends at
                    # the wall limit, in the service and in the computation alike.
                    "time_budget_ms": WALL_MS - 1000,
                    "wall_limit_ms": WALL_MS,
                },
            },
            {"id": "score", "step": "score"},
            {"id": "keep_by_score", "step": "keep_by_score", "params": {"min_score": 0.5}},
        ],
        "sink": {"output_dir": str(folder / "out"), "formats": ["jsonl"]},
        "gates": {"min_total": 1},
    }
    path = folder / "pipeline.yaml"
    path.write_text(json.dumps(raw, indent=2))  # JSON is YAML
    return path


@dataclass
class Computed:
    rows: dict[int, Row] = field(default_factory=dict)
    #: source index -> (step, error type, message)
    dead: dict[int, tuple[str, str, str]] = field(default_factory=dict)


def _compute(spec: PipelineSpec, seeds_path: Path) -> Computed:
    """The same steps in process; a row error is where the service would dead-letter the row."""
    plan = PipelinePlan.build(spec)
    model = plan.seed_model()
    book = AnswerBook.load(seeds_path)
    sim = SimConfig.model_validate({"seeds_path": seeds_path})
    lines = seeds_path.read_text(encoding="utf-8").splitlines()
    rows = [
        {"source_index": i, **model.model_validate(json.loads(line)).model_dump()}
        for i, line in enumerate(lines)
    ]
    computed = Computed()
    try:
        for step_id, step in plan.steps.items():
            out = []
            for row in rows:
                if isinstance(step, TextGenerationStep):
                    text, _ = book.answer(step.messages(row)[-1]["content"], sim.seed, sim.style_mix)
                    out.append({**row, step.params.output: text})
                    continue
                try:
                    result = step.process_row(row)
                except Exception as exc:
                    computed.dead[row["source_index"]] = (step_id, type(exc).__name__, str(exc))
                    continue
                out += result if isinstance(result, list) else [] if result is None else [result]
            rows = out
    finally:
        for step in plan.steps.values():
            step.close()
    computed.rows = {r["source_index"]: r for r in rows}
    return computed


@contextmanager
def _running(folder: Path, bootstrap: str, path: Path, seeds_path: Path) -> Iterator[Pipeline]:
    spec = PipelineSpec.load(path)
    kafka = KafkaSettings(bootstrap_servers=bootstrap, session_timeout_ms=6000)
    clients.ensure_topics(clients.admin(kafka), pipeline_topics(spec))
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_SESSION_TIMEOUT_MS": "6000"}
    stack = LocalStack(path, folder / "stack", env)
    try:
        stack.start_teacher_sim(seeds_path)
        stack.add_pipeline_services()
        stack.start()
        yield Pipeline(path, spec, kafka, stack)
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def spider(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[tuple[Pipeline, Path]]:
    folder = tmp_path_factory.mktemp("spider")
    db_dir = folder / "database"
    db_dir.mkdir()
    build_databases(db_dir)
    seeds_path = folder / "seeds.jsonl"
    seeds_path.write_text("".join(json.dumps(s) + "\n" for s in _all_seeds()), encoding="utf-8")
    with _running(folder, kafka_bootstrap, _pipeline(folder, db_dir), seeds_path) as pipe:
        yield pipe, seeds_path


def test_spider_seeds_run_against_their_own_databases(spider: tuple[Pipeline, Path]) -> None:
    pipe, seeds_path = spider
    computed = _compute(pipe.spec, seeds_path)
    run_id = f"spider-{uuid.uuid4().hex[:6]}"
    pipe.produce_all(seeds_path, run_id)
    result = pipe.wait(run_id, timeout_s=300)
    assert result["released"], result

    # The row naming a database the folder does not have: dead-lettered by sql_eval, with why.
    missing = next(i for i, s in enumerate(_all_seeds()) if s["db_id"] == "flight_2")
    assert set(computed.dead) == {missing}
    state = pipe.wait_state(run_id)
    assert state["dead_letters"] == {"sql_eval": {"FileNotFoundError": 1}}
    letters = [
        r
        for _, r in read_all(
            pipe.kafka,
            PipelinePlan.build(pipe.spec).serde(),
            pipe.spec.dlq_topic,
            until=lambda recs: any(r.get("run_id") == run_id for _, r in recs),
        )
        if r.get("run_id") == run_id
    ]
    assert [(x["step"], x["error_type"], x["row_index"]) for x in letters] == [
        ("sql_eval", "FileNotFoundError", missing)
    ]
    assert "no database 'flight_2'" in letters[0]["error_message"]

    # Every other row as computed in process, the per-row verdicts included.
    rows = pipe.dataset(run_id)
    assert [r["source_index"] for r in rows] == sorted(computed.rows)
    for got in rows:
        want = computed.rows[got["source_index"]]
        assert {k: got[k] for k in want if k not in FETCH_COLUMNS} == {
            k: v for k, v in want.items() if k not in FETCH_COLUMNS
        }, got["source_index"]

    by_task = {r["task_id"]: r for r in rows}
    # One question, one gold text, three databases: each row judged against its own.
    items = [r for r in rows if r["instruction"] == "How many items are there?"]
    assert sorted(r["db_id"] for r in items) == ["concert_singer", "pets_1", "world_1"]
    assert len({r["result_signature"] for r in items if r["exec_pass"]}) == sum(r["exec_pass"] for r in items)
    # Gold errors: their own outcome, scored 0.0, never kept.
    singer = next(r for r in rows if r["db_id"] == "world_1" and "singers" in r["instruction"])
    assert (singer["gold_error"], singer["gold_match"], singer["teacher_score"], singer["keep"]) == (
        "no such table: singer",
        None,
        0.0,
        False,
    )
    poison = by_task["spider-poison"]
    assert (poison["gold_error"], poison["gold_match"], poison["teacher_score"], poison["keep"]) == (
        f"timeout: no answer in {WALL_MS} ms",
        None,
        0.0,
        False,
    )
    assert sum(r["gold_match"] is True for r in rows) > 0

    quality = next(q for q in pipe.report_files(run_id)["quality"] if q["stage"] == pipe.spec.primary_leaf)
    assert quality["gold_errored"] == 2
    assert quality["gold_errors"] == {"no such table: singer": 1, f"timeout: no answer in {WALL_MS} ms": 1}
    assert quality["gold_evaluated"] == len(rows) - 2
    assert quality["gold_error_rate"] == pytest.approx(2 / len(rows))
    assert pipe.stack.dead() == []
