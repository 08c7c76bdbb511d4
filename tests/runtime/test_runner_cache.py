"""`StepContext.cache_enabled()` answers for the run of the row being processed, from the run
control (a run produced with `--no-cache`), in the runtime core through the in-memory transport."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from shared.step import AsyncStep, Row, StepContext
from tests.runtime.test_runner_core import PARTITIONS, Harness, rows


class CacheProbe(AsyncStep):
    """Records, per row, what the runtime says of the cache (as the teacher asks it)."""

    name: ClassVar[str] = "cache_probe"

    def open(self, ctx: StepContext) -> None:
        self.ctx = ctx

    def output_fields(self) -> list[dict[str, Any]]:
        return [{"name": "cache_on", "type": "boolean"}]

    async def process_row_async(self, row: Row) -> Row | None:
        await asyncio.sleep(0.001)  # rows of both runs in flight at once
        return row | {"cache_on": self.ctx.cache_enabled()}


def test_cache_enabled_follows_each_rows_run() -> None:
    h = Harness("tests.runtime.test_runner_cache:CacheProbe")
    h.control.no_cache.add("fresh")
    for partition in range(PARTITIONS):
        h.batch("cached", rows(10 * partition, 5), partition)
        h.batch("fresh", rows(100 + 10 * partition, 5), partition)
    h.end("cached")
    h.end("fresh")
    h.run(lambda: h.markers() == 2 * PARTITIONS * PARTITIONS)
    out = h.out_rows()
    assert len(out) == 4 * 5
    assert {r["cache_on"] for r in out if r["source_index"] < 100} == {True}
    assert {r["cache_on"] for r in out if r["source_index"] >= 100} == {False}
