"""structured_generation: JSON schema validation, invalid answers retried up to k times against
the simulator process, then a row error carrying the validation error."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from fastdistill.dev.teacher_sim.server import SimConfig
from services.structured_generation.step import StructuredGenerationStep, StructuredOutputInvalid
from tests.fakes import DictContext
from tests.sim import sim_process

SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 3},
        "year": {"type": "integer", "minimum": 1900, "maximum": 2030},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3},
        "rating": {"enum": ["good", "bad"]},
    },
    "required": ["title", "year", "tags"],
    "additionalProperties": False,
}


def test_validation_says_what_is_wrong() -> None:
    step = StructuredGenerationStep(json_schema=SCHEMA)
    good = {"title": "Dune", "year": 1965, "tags": ["sf"]}
    assert step.validate(json.dumps(good)) == good
    assert step.validate(f"```json\n{json.dumps(good)}\n```") == good
    for text, reason in (
        ('{"title": "Dune", "tags": ["sf"]}', "at (root): 'year' is a required property"),
        ('{"title": "Dune", "year": "1965", "tags": ["sf"]}', "at year: '1965' is not of type 'integer'"),
        ('{"title": "Dune", "year": 1965, "tags": []}', "at tags: [] should be non-empty"),
        ('{"title": "Dune", "year": 1965', "not JSON"),
    ):
        with pytest.raises(
            ValueError,
            match=reason.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]"),
        ):
            step.validate(text)


def test_the_request_carries_the_schema_and_a_bad_schema_does_not_load() -> None:
    step = StructuredGenerationStep(json_schema=SCHEMA, template="Describe {{ film }} as JSON.")
    request = step.request({"film": "Dune"})
    assert request.response_format == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": SCHEMA, "strict": True},
    }
    assert step.reads() == {"film"}
    assert [f["name"] for f in step.output_fields()][:2] == ["structured_output", "structured_attempts"]
    with pytest.raises(ValueError, match="not a valid JSON schema"):
        StructuredGenerationStep(json_schema={"type": "objekt"})


def _rows(n: int) -> list[dict[str, Any]]:
    return [{"sample_id": f"s{i}", "instruction": f"Describe film number {i} as JSON."} for i in range(n)]


async def _run(step: StructuredGenerationStep, rows: list[dict[str, Any]]) -> list[Any]:
    try:
        return await asyncio.gather(*(step.process_row_async(dict(r)) for r in rows), return_exceptions=True)
    finally:
        await step.aclose()


def test_invalid_answers_are_retried_up_to_k_times(tmp_path: Path) -> None:
    with sim_process(tmp_path, SimConfig(json_invalid_rate=0.4)) as sim:
        step = StructuredGenerationStep(
            json_schema=SCHEMA, max_invalid_retries=3, llm={"base_url": sim.base_url, "model": "json-sim"}
        )
        step.open(DictContext())
        out = asyncio.run(_run(step, _rows(100)))
        stats = sim.stats()
    ok = [r for r in out if isinstance(r, dict)]
    failed = [r for r in out if isinstance(r, StructuredOutputInvalid)]
    assert len(ok) + len(failed) == 100
    for row in ok:
        jsonschema.validate(json.loads(row["structured_output"]), SCHEMA)
        assert 1 <= row["structured_attempts"] <= 4
    # retried rows exist, and each answer beyond the first was a request of its own (not the cache)
    attempts = sum(r["structured_attempts"] for r in ok) + 4 * len(failed)
    assert any(r["structured_attempts"] > 1 for r in ok)
    assert stats["requests"] == attempts and stats["broken_answers"] == attempts - len(ok)
    assert len(failed) <= 5  # 0.4^4 = 2.6 % per row
    print(
        f"structured: 100 rows, {stats['requests']} requests ({stats['broken_answers']} invalid answers), "
        f"{len(failed)} rows failed; {stats['prompt_tokens']} prompt + {stats['completion_tokens']} "
        "completion tokens"
    )


def test_a_row_that_never_validates_fails_with_the_validation_error(tmp_path: Path) -> None:
    with sim_process(tmp_path, SimConfig(json_invalid_rate=1.0)) as sim:
        step = StructuredGenerationStep(
            json_schema=SCHEMA, max_invalid_retries=2, llm={"base_url": sim.base_url}
        )
        out = asyncio.run(_run(step, _rows(6)))
        stats = sim.stats()
    assert all(isinstance(r, StructuredOutputInvalid) for r in out)
    messages = [str(r) for r in out]
    assert all(m.startswith("no valid answer in 3 attempts; the last: ") for m in messages)
    assert any("schema violation at" in m or "not JSON" in m for m in messages)
    assert stats["requests"] == 18


def test_the_anthropic_client_states_the_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with sim_process(tmp_path, SimConfig(json_invalid_rate=0.0)) as sim:
        step = StructuredGenerationStep(
            json_schema=SCHEMA, llm={"provider": "anthropic", "base_url": sim.root}
        )
        out = asyncio.run(_run(step, _rows(5)))
        stats = sim.stats()
    assert all(isinstance(r, dict) and r["structured_attempts"] == 1 for r in out), out
    assert stats["routes"] == {"anthropic": 5} and stats["kinds"] == {"json": 5}
