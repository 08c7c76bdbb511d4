"""Batch mode over real HTTP: text_generation with `llm.mode: batch` against the simulator process
(the OpenAI SDK's files and batches calls, the simulator's Batch API and its billing counts)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastdistill.dev.teacher_sim.server import SimConfig
from services.text_generation.step import TextGenerationStep
from shared.step import Row
from tests.fakes import DictContext
from tests.sim import sim_process

ROWS = 300


def _step(base_url: str, mode: str) -> TextGenerationStep:
    batch = {"max_rows": 200, "window_s": 0.2, "poll_every_s": 0.1}
    return TextGenerationStep(llm={"base_url": base_url, "mode": mode, "batch": batch})


def _run(step: TextGenerationStep, rows: list[Row]) -> list[Any]:
    async def scenario() -> list[Any]:
        try:
            return list(await asyncio.gather(*(step.process_row_async(r) for r in rows)))
        finally:
            await step.aclose()

    return asyncio.run(scenario())


def test_batch_answers_match_online_answers_and_no_row_is_billed_twice(tmp_path: Path) -> None:
    rows: list[Row] = [{"instruction": f"Name a use of the number {i}."} for i in range(ROWS)]
    config = SimConfig(batch_delay_s=0.3, batch_failure_rate=0.05)
    with sim_process(tmp_path, config) as sim:
        batch_step = _step(sim.base_url, "batch")
        batch_step.open(DictContext())
        batched = _run(batch_step, rows)
        stats = sim.stats()
    with sim_process(tmp_path, SimConfig()) as sim:
        online_step = _step(sim.base_url, "online")
        online_step.open(DictContext())
        online = _run(online_step, rows)
    assert [r["generation"] for r in batched] == [r["generation"] for r in online]
    failed = stats["batch"]["rows"]["failed"]
    assert 0 < failed < ROWS // 5  # the simulator failed some rows: asked online instead
    assert stats["batch"]["calls"]["batch_create"] == 2  # 200 + 100 rows
    assert stats["rows_billed"] == {"batch": ROWS - failed, "online": failed}
    assert stats["rows_billed_twice"] == 0
    assert stats["requests"] == failed  # online chat requests: only the failed rows
    assert stats["batch"]["prompt_tokens"] > 0 and stats["batch"]["completion_tokens"] > 0
    assert all(r["prompt_tokens"] and r["completion_tokens"] for r in batched)
