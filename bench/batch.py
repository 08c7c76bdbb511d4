"""Batch vs online: the same rows through text_generation in each mode against the simulator,
counting what went over the wire (HTTP requests) and what was billed (tokens, by the simulator).

    python -m bench.batch [--rows 2000] [--latency fixed:200] [--batch-delay-s 2]

No broker: the step runs with in-memory state stores; the simulator runs in the same process
(aiohttp, its own port). Batch API prices are half the online ones at OpenAI, so the line
reports tokens at online-equivalent cost too. Wall time is printed, never asserted: a batch's
latency is the provider's completion window (up to 24 h), the simulator's is a setting.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from fastdistill.dev.teacher_sim.server import SimConfig, create_app
from fastdistill.local_stack import free_port
from services.text_generation.step import TextGenerationStep
from shared.step import Row

#: what the Batch API costs per token, relative to online requests (OpenAI: 50 % off)
BATCH_PRICE = 0.5


class _Store:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def put(self, key: str, value: bytes) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def flush(self, timeout_s: float = 10.0) -> bool:
        return True

    def scan(self, prefix: str = "") -> list[tuple[str, bytes]]:
        return sorted((k, v) for k, v in self.data.items() if k.startswith(prefix))


class _Context:
    inputs: list[str] = ["seeds"]

    def __init__(self) -> None:
        self.stores: dict[str, _Store] = {}

    def state_store(self, name: str, **_: Any) -> _Store:
        return self.stores.setdefault(name, _Store())

    def cache_enabled(self) -> bool:
        return True

    def current_input(self) -> str:
        return "seeds"

    def current_partition(self) -> int:
        return 0


@dataclass
class Measured:
    mode: str
    rows: int
    http_requests: int
    prompt_tokens: int
    completion_tokens: int
    billed_twice: int
    wall_s: float

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def cost_tokens(self) -> float:
        """Tokens at online price: what the bill is proportional to."""
        return self.tokens * (BATCH_PRICE if self.mode == "batch" else 1.0)


async def measure(mode: Literal["online", "batch"], rows: int, config: SimConfig) -> Measured:
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    batch = {"max_rows": 1000, "window_s": 0.5, "poll_every_s": 0.2, "max_jobs": 4}
    llm = {"base_url": f"http://127.0.0.1:{port}/v1", "mode": mode, "batch": batch, "max_concurrency": 64}
    step = TextGenerationStep(llm=llm)
    step.open(_Context())
    seeds: list[Row] = [{"instruction": f"Summarise fact number {i} about rivers."} for i in range(rows)]
    started = time.perf_counter()
    try:
        semaphore = asyncio.Semaphore(step.concurrency())

        async def one(row: Row) -> Any:
            async with semaphore:
                return await step.process_row_async(row)

        await asyncio.gather(*(one(r) for r in seeds))
        wall = time.perf_counter() - started
    finally:
        await step.aclose()
        stats = app["sim"].stats.snapshot()
        await runner.cleanup()
    calls = sum(stats["batch"]["calls"].get(k, 0) for k in ("file_upload", "file_content", "batch_create"))
    calls += sum(stats["batch"]["calls"].get(k, 0) for k in ("batch_retrieve", "batch_list"))
    return Measured(
        mode,
        rows,
        http_requests=stats["requests"] + calls,
        prompt_tokens=stats["prompt_tokens"] + stats["batch"]["prompt_tokens"],
        completion_tokens=stats["completion_tokens"] + stats["batch"]["completion_tokens"],
        billed_twice=stats["rows_billed_twice"],
        wall_s=wall,
    )


def line(online: Measured, batch: Measured) -> str:
    return (
        f"batch vs online, {online.rows} rows: online {online.http_requests} HTTP requests, "
        f"{online.tokens} tokens ({online.prompt_tokens} prompt + {online.completion_tokens} completion), "
        f"{online.wall_s:.1f} s; batch {batch.http_requests} HTTP requests, {batch.tokens} tokens "
        f"({batch.prompt_tokens} + {batch.completion_tokens}) billed at {BATCH_PRICE:g}x = "
        f"{batch.cost_tokens:.0f} online-equivalent "
        f"({batch.cost_tokens / online.cost_tokens:.0%} of online's cost), "
        f"{batch.wall_s:.1f} s; billed twice: online {online.billed_twice}, batch {batch.billed_twice}"
    )


def compare(rows: int, latency: str = "fixed:200", batch_delay_s: float = 2.0) -> tuple[Measured, Measured]:
    config = SimConfig.model_validate({"latency": latency, "batch_delay_s": batch_delay_s})
    online = asyncio.run(measure("online", rows, config))
    batch = asyncio.run(measure("batch", rows, config))
    return online, batch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.batch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument(
        "--latency", default="fixed:200", help="online latency: fixed:MS | lognormal:MS:SIGMA"
    )
    parser.add_argument("--batch-delay-s", type=float, default=2.0, help="the simulator's batch completion")
    args = parser.parse_args(argv)
    print(line(*compare(args.rows, args.latency, args.batch_delay_s)), flush=True)


if __name__ == "__main__":
    main()
