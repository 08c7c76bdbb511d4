"""sql_eval before and after the worker pool: rows/s and CPU per row on the example database.

    python -m bench.sql_eval [--ref d4cd965] [--rows 2000] [--repeats 5]

"before" is `services/sql_eval/step.py` at `--ref` (in-process SQLite, a synchronous step, called
row after row as the runtime calls one); "after" is the working tree's step, its rows awaited
32 at a time (the runtime's default `max_in_flight`) with the worker pool doing the SQL. Both see
the same rows: every row's SQL is its gold SQL, so each gold runs once and is then cached, and
every row costs one query. Runs alternate and the best of `--repeats` is kept (the machine is
shared). The pool's workers are started before the clock starts (steady state). CPU is this
process's (the service's) user+system time per row; "workers" is the worker processes' CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from services.sql_eval import SqlEvalStep

REPO = Path(__file__).resolve().parents[1]
DB = REPO / "examples" / "text2sql" / "shop.sqlite"
SEEDS = REPO / "examples" / "text2sql" / "seeds.jsonl"
IN_FLIGHT = 32


def workloads(rows: int) -> dict[str, list[dict[str, Any]]]:
    golds = [json.loads(line)["gold_sql"] for line in SEEDS.read_text(encoding="utf-8").splitlines()]
    point = [f"SELECT name, city FROM customers WHERE id = {i % 120 + 1}" for i in range(rows)]
    example = [golds[i % len(golds)] for i in range(rows)]
    return {
        "point queries": [{"source_index": i, "sql": q, "gold_sql": q} for i, q in enumerate(point)],
        "example gold SQL": [{"source_index": i, "sql": q, "gold_sql": q} for i, q in enumerate(example)],
    }


def old_step_class(ref: str) -> Any:
    command = ["git", "show", f"{ref}:services/sql_eval/step.py"]
    source = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "sql_eval_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("sql_eval_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.SqlEvalStep


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _process_cpu(pids: list[int]) -> float:
    """utime + stime of live processes, from /proc (workers are not reaped while measured)."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _result(rows: int, elapsed: float, service: float, workers: float) -> dict[str, float]:
    return {
        "rows_per_s": rows / elapsed,
        "service_cpu_us_per_row": service / rows * 1e6,
        "worker_cpu_us_per_row": workers / rows * 1e6,
    }


def before(step_class: Any, data: list[dict[str, Any]]) -> dict[str, float]:
    step = step_class(db_path=str(DB))
    step.process_row(data[0])  # the connection opened
    cpu, started = _cpu(), time.perf_counter()
    matched = sum(bool(step.process_row(row)["gold_match"]) for row in data)
    elapsed, cpu = time.perf_counter() - started, _cpu() - cpu
    step.close()
    assert matched == len(data)
    return _result(len(data), elapsed, cpu, 0.0)


def after(data: list[dict[str, Any]], workers: int) -> dict[str, float]:
    step = SqlEvalStep(db_path=str(DB), workers=workers)

    async def run() -> dict[str, float]:
        slots = asyncio.Semaphore(IN_FLIGHT)

        async def one(row: dict[str, Any]) -> bool:
            async with slots:
                out = await step.process_row_async(row)
            return bool(out is not None and out["gold_match"])

        # Every worker started first: the measure is the steady state, not interpreter starts.
        warm = [{**row, "gold_sql": None} for row in data[: 8 * workers]]
        await asyncio.gather(*(one(row) for row in warm))
        pids = step.pool().pids()
        assert len(pids) == workers
        cpu, worker_cpu, started = _cpu(), _process_cpu(pids), time.perf_counter()
        matched = sum(await asyncio.gather(*(one(row) for row in data)))
        elapsed = time.perf_counter() - started
        cpu, worker_cpu = _cpu() - cpu, _process_cpu(pids) - worker_cpu
        assert matched == len(data) and step.pool().pids() == pids
        return _result(len(data), elapsed, cpu, worker_cpu)

    try:
        return asyncio.run(run())
    finally:
        step.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="d4cd965", help="git ref of the in-process sql_eval")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    step_class = old_step_class(args.ref)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name, data in workloads(args.rows).items():
        runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
        for _ in range(args.repeats):
            runs["before"].append(before(step_class, data))
            runs["after"].append(after(data, args.workers))
        results[name] = {
            side: {key: (max if key == "rows_per_s" else min)(r[key] for r in rs) for key in rs[0]}
            for side, rs in runs.items()
        }
    json.dump(results, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
