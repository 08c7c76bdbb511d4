"""Scenarios 2 and 3: the teacher step against the simulator, and a replay of the same seeds.

The bound a concurrency cap allows is `concurrency / mean latency` (Little's law). The
simulator draws each request's latency from (seed, prompt, attempt), so the latencies a run
meets are known before it starts: the bound is taken on the run's own draws (their mean), not
on the distribution's mean (for lognormal(200 ms, sigma 1) `median · e^(sigma²/2)` = 329.7 ms,
which a finite run's draws miss by a few percent either way). A fresh simulator per
measurement makes every peer draw the very same latencies for the same prompts.
"""

from __future__ import annotations

import heapq
import logging
import math
from pathlib import Path
from typing import Any

from bench import measure
from bench.chain import SEED_FIELDS
from bench.stack import BenchStack
from fastdistill.dev.teacher_sim.faults import LatencySpec
from fastdistill.local_stack import SIM_NAME, LocalStack
from shared.step import Row

log = logging.getLogger("bench")

SIM_SEED = 0
#: the example teacher's prompt (examples/text2sql/pipeline.yaml), as the simulator sees it
PROMPT = "Schema: {schema}\nQuestion: {instruction}\nSQL:"
TEMPLATE = "Schema: {{ schema }}\nQuestion: {{ instruction }}\nSQL:"


def mean_latency_ms(latency: str) -> float:
    spec = LatencySpec.parse(latency)
    if spec.kind == "fixed":
        return spec.median_ms
    return spec.median_ms * math.exp(spec.sigma**2 / 2)


def drawn_latencies_ms(rows: list[Row], latency: str) -> list[float]:
    """The latencies a fresh simulator draws for these rows' first attempts, in row order."""
    spec = LatencySpec.parse(latency)
    return [spec.sample_ms(SIM_SEED, PROMPT.format_map(r), 0) for r in rows]


def drawn_latency_ms(rows: list[Row], latency: str) -> float:
    draws = drawn_latencies_ms(rows, latency)
    return sum(draws) / len(draws)


def ideal_rows_per_s(draws_ms: list[float], concurrency: int) -> float:
    """rows/s of a client with no overhead at all: `concurrency` slots, each row sent the
    instant a slot frees, in row order, on the rows' very draws (`drawn_latencies_ms`).

    The bound (concurrency ÷ mean latency) holds only for endless work: on a finite run the
    last slots drain while the slowest draws finish (lognormal sigma 1 has a long tail), so
    this is what any client could reach on this run.
    """
    slots = [0.0] * concurrency
    for ms in draws_ms:
        heapq.heappush(slots, heapq.heappop(slots) + ms / 1000)
    return len(draws_ms) / max(slots)


def teacher_steps(concurrency: int) -> list[dict[str, Any]]:
    # canonicalize and hash give rows the sample_id the generation cache is keyed by.
    return [
        {"id": "canonicalize", "step": "canonicalize", "params": {"fields": SEED_FIELDS}},
        {
            "id": "hash",
            "step": "hash",
            "params": {"fields": ["task_id", "canonical_input"], "output": "sample_id"},
        },
        {
            "id": "teacher",
            "step": "text_generation",
            "params": {"llm": {"model": "teacher-sim", "max_concurrency": concurrency}, "template": TEMPLATE},
            # Enough rows queued that a free slot never waits for the next message to arrive.
            "max_buffered_rows": 20 * concurrency,
        },
    ]


class SimWindow:
    """Differences of the simulator's counters over one measured run."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.before = measure.http_json(url)

    def close(self, seconds: float) -> dict[str, Any]:
        after = measure.http_json(self.url)
        area = after["inflight_area_s"] - self.before["inflight_area_s"]
        busy = after["busy_s"] - self.before["busy_s"]
        return {
            "requests": after["requests"] - self.before["requests"],
            "retried_requests": after["retried_requests"] - self.before["retried_requests"],
            "mean_inflight": round(area / busy, 2) if busy else 0.0,
            "mean_inflight_wall": round(area / seconds, 2) if seconds else 0.0,
            "max_inflight": after["max_inflight"],
        }


def _sim_stats_url(stack: LocalStack) -> str:
    return f"http://127.0.0.1:{stack.services[SIM_NAME].port}/stats"


def run_teacher(
    workdir: Path,
    bootstrap: str,
    answer_book: Path,
    rows: list[Row],
    warmup: list[Row],
    *,
    latency: str,
    concurrency: int,
    replay: bool = False,
    batch_size: int = 50,
    chain: str = "none",
) -> dict[str, Any]:
    tag = latency.split(":")[0]
    bench = BenchStack(
        workdir,
        f"bench-teacher-{tag}-c{concurrency}",
        teacher_steps(concurrency),
        bootstrap,
        batch_size=batch_size,
        chain=chain,
    )
    try:
        bench.start_sim(answer_book, latency)
        bench.start()
        bench.run(warmup, "warmup")
        url = _sim_stats_url(bench.stack)
        sampler = bench.sampler().start()
        window = SimWindow(url)
        timing = bench.run(rows, "measured")
        server = window.close(timing.seconds)
        procs = sampler.stop()
        timeline = bench.stage_timeline("measured", timing.started)
        replayed: dict[str, Any] | None = None
        if replay:
            # Same seeds, new run id: every generation must come from the cache.
            window = SimWindow(url)
            again = bench.run(rows, "replay")
            replay_server = window.close(again.seconds)
            replay_timeline = bench.stage_timeline("replay", again.started)
            replayed = {
                "rows": again.rows,
                "released_rows": again.released_rows,
                "seconds": round(again.seconds, 3),
                "produce_seconds": round(again.produce_seconds, 3),
                "rows_per_s": round(again.rows_per_s, 1),
                "teacher_requests": replay_server["requests"],
                "stage_timeline": replay_timeline,
            }
    finally:
        bench.stop()
    mean_ms = mean_latency_ms(latency)
    draws = drawn_latencies_ms(rows, latency)
    drawn_ms = sum(draws) / len(draws)
    ideal = ideal_rows_per_s(draws, concurrency)
    # the bound on this run's own draws; the distribution's is kept beside it
    bound = concurrency / (drawn_ms / 1000)
    dist_bound = concurrency / (mean_ms / 1000)
    teacher = procs.get("teacher")
    result: dict[str, Any] = {
        "peer": "fastdistill",
        "layout": chain,
        "batch_size": batch_size,
        "latency": latency,
        "concurrency": concurrency,
        "rows": timing.rows,
        "released_rows": timing.released_rows,
        "seconds": round(timing.seconds, 3),
        "rows_per_s": round(timing.rows_per_s, 2),
        "mean_latency_ms": round(mean_ms, 1),
        "drawn_latency_ms": round(drawn_ms, 1),
        "bound_rows_per_s": round(bound, 2),
        "ratio_to_bound": round(timing.rows_per_s / bound, 3),
        "bound_on": "the run's own draws",
        "dist_bound_rows_per_s": round(dist_bound, 2),
        "ratio_to_dist_bound": round(timing.rows_per_s / dist_bound, 3),
        "max_draw_ms": round(max(draws), 1),
        "ideal_rows_per_s": round(ideal, 2),
        "ratio_to_ideal": round(timing.rows_per_s / ideal, 3),
        "server": server,
        "teacher_cpu_s": round(teacher.cpu_s, 2) if teacher else None,
        "teacher_rss_hwm_mb": round(teacher.rss_hwm_mb, 1) if teacher else None,
        "cpu_s": {name: round(st.cpu_s, 2) for name, st in procs.items()},
        "stage_timeline": timeline,
    }
    if replayed is not None:
        result["replay"] = replayed
    log.info(
        "teacher %s c=%d: %.1f rows/s = %.0f%% of the bound on its draws %.1f, %.1f in flight",
        latency,
        concurrency,
        timing.rows_per_s,
        100 * result["ratio_to_bound"],
        bound,
        server["mean_inflight"],
    )
    return result


class StandaloneSim:
    """A simulator alone (for the distilabel peer), stopped with `close`."""

    def __init__(self, workdir: Path, answer_book: Path, latency: str) -> None:
        # LocalStack wants a pipeline path only for the environment it hands to services.
        self.stack = LocalStack(workdir / "unused.yaml", workdir / "sim")
        self.url = self.stack.start_teacher_sim(answer_book, latency=latency)
        self.stats_url = _sim_stats_url(self.stack)

    def close(self) -> None:
        self.stack.stop()
