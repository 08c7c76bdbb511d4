"""Small real steps for exercising the runtime (loaded by dotted path from test pipelines)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

from pydantic import BaseModel, ConfigDict

from shared.step import AsyncStep, Row, Step, StepParams


class TextSeed(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    text: str
    fail: bool = False


class Shout(Step):
    """Upper-cases `text`; a row with `fail` set raises, to exercise the error policies."""

    name = "shout"

    def output_fields(self) -> list[dict[str, Any]]:
        return [{"name": "shout", "type": "string"}]

    def process_row(self, row: Row) -> Row | None:
        if row["fail"]:
            raise ValueError(f"row {row['source_index']} asked to fail")
        return row | {"shout": row["text"].upper()}


class StampParams(StepParams):
    #: CPU time each row costs (a busy wait), so a run lasts long enough for a kill or a join
    #: to land in the middle of it however fast the machine is
    row_cost_s: float = 0.0


class Stamp(Step):
    name = "stamp"
    Params = StampParams

    def output_fields(self) -> list[dict[str, Any]]:
        return [{"name": "stamp", "type": "string"}]

    def process_row(self, row: Row) -> Row | None:
        until = time.perf_counter() + self.params.row_cost_s  # type: ignore[attr-defined]
        while time.perf_counter() < until:
            pass
        return row | {"stamp": hashlib.sha256(row["shout"].encode()).hexdigest()}


class SlowParams(StepParams):
    delay_s: float = 0.05


class Slow(AsyncStep):
    """Awaits `delay_s` per row: a slow teacher stand-in for backpressure tests."""

    name = "slow"
    Params = SlowParams

    def output_fields(self) -> list[dict[str, Any]]:
        return [{"name": "slow", "type": "boolean"}]

    async def process_row_async(self, row: Row) -> Row | None:
        await asyncio.sleep(self.params.delay_s)  # type: ignore[attr-defined]
        return row | {"slow": True}
