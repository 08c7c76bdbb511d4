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


class Shout(Step[StepParams]):
    """Upper-cases `text`; a row with `fail` set raises, to exercise the error policies."""

    name = "shout"

    outputs = ("shout",)
    schema = {"type": "record", "name": "ShoutFields", "fields": [{"name": "shout", "type": "string"}]}

    def process_row(self, row: Row) -> Row | None:
        if row["fail"]:
            raise ValueError(f"row {row['source_index']} asked to fail")
        return row | {"shout": row["text"].upper()}


class StampParams(StepParams):
    #: CPU time each row costs (a busy wait), so a run lasts long enough for a kill or a join
    #: to land in the middle of it however fast the machine is
    row_cost_s: float = 0.0


class Stamp(Step[StampParams]):
    name = "stamp"

    outputs = ("stamp",)
    schema = {"type": "record", "name": "StampFields", "fields": [{"name": "stamp", "type": "string"}]}

    def process_row(self, row: Row) -> Row | None:
        until = time.perf_counter() + self.params.row_cost_s
        while time.perf_counter() < until:
            pass
        return row | {"stamp": hashlib.sha256(row["shout"].encode()).hexdigest()}


class SlowParams(StepParams):
    delay_s: float = 0.05


class Slow(AsyncStep[SlowParams]):
    """Awaits `delay_s` per row: a slow teacher stand-in for backpressure tests."""

    name = "slow"

    outputs = ("slow",)
    schema = {"type": "record", "name": "SlowFields", "fields": [{"name": "slow", "type": "boolean"}]}

    async def process_row_async(self, row: Row) -> Row | None:
        await asyncio.sleep(self.params.delay_s)
        return row | {"slow": True}


class SplitParams(StepParams):
    parts: int = 3


class Split(Step[SplitParams]):
    """One row in, `parts` rows out (one-to-many), each with its index."""

    name = "split"

    outputs = ("part",)
    schema = {"type": "record", "name": "SplitFields", "fields": [{"name": "part", "type": "int"}]}

    def process_row(self, row: Row) -> list[Row]:
        return [row | {"part": i} for i in range(self.params.parts)]


#: source_index -> an event the row waits for (tests open the gates in the order they choose)
GATES: dict[int, asyncio.Event] = {}


class Gated(AsyncStep[StepParams]):
    """Finishes a row when the test opens its gate (rows without a gate finish at once)."""

    name = "gated"

    outputs = ("gated",)
    schema = {"type": "record", "name": "GatedFields", "fields": [{"name": "gated", "type": "boolean"}]}

    async def process_row_async(self, row: Row) -> Row | None:
        gate = GATES.get(row["source_index"])
        if gate is not None:
            await gate.wait()
        if row["fail"]:
            raise ValueError(f"row {row['source_index']} asked to fail")
        return row | {"gated": True}


class FirstText(Step[StepParams]):
    """Keeps the first row of each text (a dedup in miniature: transactional state)."""

    name = "first_text"

    def open(self, ctx: Any) -> None:
        self.seen = ctx.state_store("seen")
        self.paid = ctx.state_store("paid", durable_immediately=True, scope="global")

    def process_row(self, row: Row) -> Row | None:
        self.paid.put(row["text"], b"1")
        if self.seen.get(row["text"]) is not None:
            return None
        self.seen.put(row["text"], b"1")
        return row


class TagParams(StepParams):
    tag: str = "a"
    #: CPU time each row costs (a busy wait): long enough runs for a kill to land mid-run
    row_cost_s: float = 0.0


class Tag(Step[TagParams]):
    """Adds `tag_<tag>`: the text with the tag, so branches of a DAG are told apart."""

    name = "tag"

    @property
    def field(self) -> str:
        return f"tag_{self.params.tag}"

    def output_fields(self) -> list[dict[str, Any]]:
        return [{"name": self.field, "type": "string"}]

    def process_row(self, row: Row) -> Row | None:
        until = time.perf_counter() + self.params.row_cost_s
        while time.perf_counter() < until:
            pass
        return row | {self.field: f"{self.params.tag}:{row['text']}"}


class FanParams(StepParams):
    n: int = 4


class Fan(Step[FanParams]):
    """N children per row (shared.fanout), each with a `variant` of the text."""

    name = "fan"

    def output_fields(self) -> list[dict[str, Any]]:
        from shared.schemas import load_avsc

        children_fields = load_avsc("rows/children.avsc")["fields"]
        sample_id = {"name": "sample_id", "type": ["null", "string"], "default": None}
        return [{"name": "variant", "type": "string"}, sample_id, *children_fields]

    def process_row(self, row: Row) -> list[Row]:
        from shared.fanout import children

        parent = row | {"sample_id": f"s{row['source_index']}"}
        return children(parent, [{"variant": f"{row['text']}#{i}"} for i in range(self.params.n)])


class Keyed(Step[StepParams]):
    """Gives the row a `sample_id` (from its source index), as the hash step would."""

    name = "keyed"
    outputs = ("sample_id",)
    schema = {"type": "record", "name": "KeyedFields", "fields": [{"name": "sample_id", "type": "string"}]}

    def process_row(self, row: Row) -> Row:
        return row | {"sample_id": f"s{row['source_index']}"}


#: what `Holdable.ready()` answers (None: ready)
HOLD: dict[str, str | None] = {"reason": None}


class Holdable(AsyncStep[StepParams]):
    """Not ready while HOLD says why (an LLM step whose endpoint is down); rows pass unchanged."""

    name = "holdable"

    def ready(self) -> str | None:
        return HOLD["reason"]

    async def process_row_async(self, row: Row) -> Row | None:
        return row


def pick_branch(row: Row) -> list[str]:
    """A route function: rows with an even source index go left, odd ones right, every tenth both."""
    index = int(row["source_index"])
    chosen = ["left" if index % 2 == 0 else "right"]
    if index % 10 == 0:
        chosen.append("right")
    return chosen


#: set to let Parked's rows go (a batch job completing); None: they wait
PARKED: dict[str, bool] = {"released": False}


class Parked(AsyncStep[StepParams]):
    """Holds every row it takes until PARKED is released, as a batch-mode LLM step holds the rows
    of a job in flight; takes up to 1,000 rows at once (its own concurrency, like a job's size)."""

    name = "parked"

    def concurrency(self) -> int:
        return 1000

    async def process_row_async(self, row: Row) -> Row | None:
        while not PARKED["released"]:
            await asyncio.sleep(0.005)
        return row
