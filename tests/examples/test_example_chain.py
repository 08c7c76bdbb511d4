"""The example pipeline's steps chained in process, teacher faked: row shapes match each topic's Avro."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fastavro
import yaml

from services.seeds import Seed
from shared.schemas import load_avsc
from shared.step import Row, Step, build_step
from shared.topic_schema import row_fields

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "text2sql"


def _fake_teacher(row: Row) -> Row:
    """Right answers, answers that run but differ, and prose, by source index."""
    gold = row["gold_sql"]
    generation = [
        f"<think>easy</think>\n```sql\n{gold}\n```",
        "SELECT 1;\nExplanation: a guess.",
        "I am not sure what you mean.",
    ][row["source_index"] % 3]
    return {
        **row,
        "generation": generation,
        "teacher_model": "fake",
        "teacher_cached": False,
        "teacher_latency_ms": 0.0,
        "prompt_tokens": None,
        "completion_tokens": None,
    }


def _steps() -> list[tuple[str, Step]]:
    spec = yaml.safe_load((EXAMPLE / "pipeline.yaml").read_text())
    steps = []
    for entry in spec["steps"]:
        params: dict[str, Any] = dict(entry.get("params") or {})
        if entry["step"] == "sql_eval":
            params["db_path"] = str(EXAMPLE / "shop.sqlite")  # the YAML's path is relative to the repo
        steps.append((entry["id"], build_step(entry["step"], params)))
    return steps


def test_chain_rows_fit_every_topic_schema() -> None:
    lines = (EXAMPLE / "seeds.jsonl").read_text(encoding="utf-8").splitlines()
    seeds = [Seed.model_validate(json.loads(line)).model_dump() for line in lines]
    rows: list[Row] = [{"source_index": i, **seed} for i, seed in enumerate(seeds)]
    added: list[list[dict[str, Any]]] = []
    seed_fields = load_avsc("rows/seed.avsc")["fields"]
    for step_id, step in _steps():
        if step_id == "teacher":
            rows = [_fake_teacher(r) for r in rows]
        else:
            rows = [out for r in rows if (out := step.process_row(r)) is not None]
        added.append(step.output_fields())
        schema = fastavro.parse_schema(
            {"type": "record", "name": f"Row_{step_id}", "fields": row_fields(seed_fields, *added)}
        )
        for row in rows:
            assert fastavro.validate(row, schema, raise_errors=True)

    duplicates = len(lines) - len({json.dumps(json.loads(line), sort_keys=True) for line in lines})
    assert len(rows) == len(lines) - duplicates
    scores: dict[int, set[tuple[float, bool]]] = {0: set(), 1: set(), 2: set()}
    for r in rows:
        scores[r["source_index"] % 3].add((r["teacher_score"], r["keep"]))
    assert scores[0] == {(1.0, True)}
    assert (0.5, True) in scores[1]
    assert scores[2] == {(0.0, False)}
