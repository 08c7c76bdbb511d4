"""What a run of a pipeline should produce, computed in process without Kafka or HTTP.

Each step's pure `process_row` is applied in pipeline order to the seeds as ingest validates
them; the teacher's answer is the simulator's own answer book and seeded style rule for the
prompt the teacher step would send. None of the services, the runtime, the sink or the
coordinator is involved, so the counts and rows here are an independent check of theirs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastdistill.dev.teacher_sim.answers import AnswerBook
from fastdistill.dev.teacher_sim.server import SimConfig
from fastdistill.plan import PipelinePlan
from services.text_generation.step import TextGenerationStep
from shared.pipeline import SEEDS_STAGE, PipelineSpec
from shared.step import Row


@dataclass
class Expected:
    #: stage -> rows on that stage's topic
    counts: dict[str, int]
    #: the final stage's rows by source index
    rows: dict[int, Row]
    #: stage -> source indices of the rows that step dropped
    dropped: dict[str, set[int]] = field(default_factory=dict)
    #: stage -> the rows on that stage's topic
    stage_rows: dict[str, list[Row]] = field(default_factory=dict)

    @property
    def accepted(self) -> int:
        return self.counts[SEEDS_STAGE]


def compute(spec: PipelineSpec, seeds: Path, sim: SimConfig) -> Expected:
    plan = PipelinePlan.build(spec)
    model = plan.seed_model()
    book = AnswerBook.load(sim.seeds_path)
    rows: list[Row] = []
    for index, line in enumerate(seeds.read_text(encoding="utf-8").splitlines()):
        rows.append({"source_index": index, **model.model_validate(json.loads(line)).model_dump()})
    expected = Expected(counts={SEEDS_STAGE: len(rows)}, rows={})
    for step_id, step in plan.steps.items():
        if isinstance(step, TextGenerationStep):
            out = [_answered(step, book, sim, row) for row in rows]
        else:
            out = [step.process_row(row) for row in rows]
        expected.dropped[step_id] = {r["source_index"] for r, o in zip(rows, out, strict=True) if o is None}
        rows = [o for o in out if o is not None]
        expected.counts[step_id] = len(rows)
        expected.stage_rows[step_id] = rows
    expected.rows = {r["source_index"]: r for r in rows}
    return expected


def _answered(step: TextGenerationStep, book: AnswerBook, sim: SimConfig, row: Row) -> Row:
    """The row as the teacher step emits it, with the generation the simulator answers."""
    prompt = step.messages(row)[-1]["content"]
    text, _ = book.answer(prompt, sim.seed, sim.style_mix)
    return {**row, step.params.output: text}


def summary(rows: list[Row]) -> dict[str, Any]:
    """The final stage's counts the quality report states, counted directly from rows."""
    reasons: dict[str, int] = {}
    errors: dict[str, int] = {}
    for row in rows:
        reasons[row["reject_reason"]] = reasons.get(row["reject_reason"], 0) + 1
        if row["exec_error"]:
            errors[row["exec_error"]] = errors.get(row["exec_error"], 0) + 1
    return {
        "total": len(rows),
        "kept": sum(r["keep"] is not False for r in rows),
        "exec_passed": sum(bool(r["exec_pass"]) for r in rows),
        "gold_matched": sum(bool(r["gold_match"]) for r in rows),
        "reject_reasons": reasons,
        "exec_errors": errors,
    }
