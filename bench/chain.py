"""Scenario 1 and 4: the CPU-only chain canonicalize → hash → dedup → rule_filter → sink."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from bench.stack import BROKER, BenchStack
from shared.step import Row

log = logging.getLogger("bench")

SEED_FIELDS = ["task_id", "schema", "instruction", "gold_sql", "system_prompt", "decode_profile"]


def dedup_mode() -> str:
    """ "drop" (the example's dedup) unless this checkout cannot run it, then "flag".

    A dedup that drops adds no field, so its topic's Avro schema equals the hash topic's; the
    serde resolves a fingerprint to one name, and the dedup service then rejects its own input
    as "not input of step dedup". Until the runtime tells equal schemas apart, the bench runs
    dedup in "flag" mode (the same lookups and state writes, duplicates kept and marked) and
    says so in the results.
    """
    from fastdistill.plan import PipelinePlan
    from shared.pipeline import PipelineSpec

    spec = PipelineSpec(name="probe", steps=cpu_steps(mode="drop"))
    serde = PipelinePlan.build(spec).serde()
    name = PipelinePlan.schema_name("hash")
    record = {
        "run_id": "r",
        "stage": "hash",
        "producer": "p",
        "batch_seq": 0,
        "lineage": [],
        "rows": [],
        "end_of_run": None,
        "origin_ms": 0,
    }
    decoded, _ = serde.decode(serde.encode(name, record), expect=name)
    return "drop" if decoded == name else "flag"


def cpu_steps(instances: dict[str, int] | None = None, mode: str = "drop") -> list[dict[str, Any]]:
    """The chain as the text-to-SQL example declares it, minus the teacher and everything after it."""
    steps: list[dict[str, Any]] = [
        {"id": "canonicalize", "step": "canonicalize", "params": {"fields": SEED_FIELDS}},
        {
            "id": "hash",
            "step": "hash",
            "params": {"fields": ["task_id", "canonical_input"], "output": "sample_id"},
            # dedup must meet every copy of a key in one instance (as in the example)
            "partition_by": "sample_id",
        },
        {"id": "dedup", "step": "dedup", "params": {"field": "sample_id", "mode": mode}},
        {
            "id": "rule_filter",
            "step": "rule_filter",
            "params": {"field": "gold_sql", "min_chars": 8, "max_chars": 4000},
        },
    ]
    for step in steps:
        step["instances"] = (instances or {}).get(step["id"], 1)
    return steps


def run_cpu_chain(
    workdir: Path,
    bootstrap: str,
    rows: list[Row],
    warmup: list[Row],
    *,
    label: str,
    batch_size: int,
    instances: dict[str, int] | None = None,
    expected_rows: int | None = None,
    mode: str = "drop",
    chain: str = "none",
    keep_rows: Path | None = None,
) -> dict[str, Any]:
    """One measured run of the chain; with `keep_rows`, the released JSONL files are copied
    there (the peer's rows are checked against them)."""
    steps = cpu_steps(instances, mode)
    bench = BenchStack(workdir, f"bench-{label}", steps, bootstrap, batch_size=batch_size, chain=chain)
    try:
        bench.start()
        # A warm-up run: every service has joined its group, opened its transactions and
        # touched every code path before the clock starts.
        bench.run(warmup, "warmup")
        bench.mark_metrics()
        sampler = bench.sampler().start()
        timing = bench.run(rows, "measured")
        procs = sampler.stop()
        latency = bench.batch_latency()
        timeline = bench.stage_timeline("measured", timing.started)
        kept: list[str] = []
        if keep_rows is not None:
            keep_rows.mkdir(parents=True, exist_ok=True)
            for i, path in enumerate(bench.released_jsonl("measured")):
                kept.append(str(shutil.copy(path, keep_rows / f"{i}-{path.parent.name}.jsonl")))
    finally:
        bench.stop()
    if expected_rows is not None and timing.released_rows != expected_rows:
        raise AssertionError(f"{label}: sink released {timing.released_rows} rows, expected {expected_rows}")
    services: dict[str, dict[str, Any]] = {}
    broker = procs.pop(BROKER, None)
    for name, st in procs.items():
        lat = latency.get(name, {})
        services[name] = {
            "p50_batch_ms": lat.get("p50_ms"),
            "p95_batch_ms": lat.get("p95_ms"),
            "batches": lat.get("batches"),
            "rss_peak_mb": round(st.rss_peak_mb, 1),
            "rss_hwm_mb": round(st.rss_hwm_mb, 1),
            "cpu_s": round(st.cpu_s, 2),
            "cpu_share": round(st.cpu_s / timing.seconds, 3),
        }
    cpu_all = sum(s["cpu_s"] for s in services.values()) + (broker.cpu_s if broker else 0.0)
    result = {
        "layout": chain,
        "service_count": len(services),
        "rows": timing.rows,
        "released_rows": timing.released_rows,
        "seconds": round(timing.seconds, 3),
        "produce_seconds": round(timing.produce_seconds, 3),
        "rows_per_s": round(timing.rows_per_s, 1),
        "batch_size": batch_size,
        "instances": {s["id"]: s["instances"] for s in steps},
        "dedup_mode": mode,
        "services": services,
        "broker_cpu_s": round(broker.cpu_s, 2) if broker else None,
        # every service process and the broker, over the measured run
        "cpu_us_per_row": round(cpu_all / timing.rows * 1e6, 1),
        "released_files": kept,
        "stage_timeline": timeline,
    }
    log.info(
        "%s (chain: %s): %.0f rows/s (%d rows in %.2fs), %.0f us CPU a row",
        label,
        chain,
        timing.rows_per_s,
        timing.rows,
        timing.seconds,
        result["cpu_us_per_row"],
    )
    return result
