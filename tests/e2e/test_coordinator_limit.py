"""End to end: early stop. `fastdistill produce --limit N` ends a run once N rows passed the
final stage; its dataset is exactly N rows, and what the run fetched beyond need is measured.

The teacher is made the bottleneck (simulated latency, few requests in flight), as a real LLM
is: the first steps race through every seed, and the stop saves the teacher calls of the rows
still waiting for it.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from shared.kafka.state import read_compacted
from tests.e2e.coordinator_stack import SEED_COUNT, SEEDS, pipeline_copy, running_pipeline

pytestmark = pytest.mark.kafka

LIMIT = 20


def test_limited_run_stops_early_with_exactly_n_rows(tmp_path: Path, kafka_bootstrap: str) -> None:
    path = pipeline_copy(tmp_path, gates={"min_total": LIMIT}, max_concurrency=4)
    with running_pipeline(tmp_path, kafka_bootstrap, path, latency="fixed:300") as pipe:
        spec, run_id = pipe.spec, f"limited-{uuid.uuid4().hex[:6]}"
        pipe.produce_all(SEEDS, run_id, "--limit", str(LIMIT))
        result = pipe.wait(run_id)
        state = pipe.wait_state(run_id)

        # The limit counts the final stage's rows: the kept and the rejected ones together.
        subset = result["subsets"][spec.primary_leaf]
        assert (
            result["released"] and subset["kept"] + subset["rejected"] == LIMIT and result["limit"] == LIMIT
        )
        rows = pipe.dataset(run_id)
        assert len(rows) == LIMIT and result["rows"] == subset["kept"] == sum(r["keep"] for r in rows)
        early = state["reports"]["early_stop"]
        assert early == state["early_stop"]
        assert early["limit"] == LIMIT and early["stopped_at"] is not None
        assert early["released_rows"] == LIMIT <= early["final_rows"]
        assert early["final_rows_over_limit"] == early["final_rows"] - LIMIT
        # The dataset is the N rows of lowest source index among those that passed.
        fresh = pipe.recompute(run_id)
        assert [r["source_index"] for r in rows] == fresh.taken
        assert early["seeds_needed"] == rows[-1]["source_index"] + 1
        assert early["seeds_over_fetch"] == early["seeds_consumed"] - early["seeds_needed"]

        # Stopped rows are dropped rows, counted per step; the teacher was spared work.
        teacher = state["stages"]["teacher"]
        assert early["rows_stopped"]["teacher"] == teacher["rows_stopped"] > 0
        assert early["rows_processed"]["teacher"] == teacher["rows_in"] - teacher["rows_stopped"]
        assert teacher["rows_dropped"] >= teacher["rows_stopped"]
        assert early["rows_processed"]["teacher"] < SEED_COUNT - 12  # fewer than every distinct seed
        # The run still drained everywhere (markers flowed past the stop) and passed its gate.
        for stage, info in state["stages"].items():
            assert info["drained_partitions"] == info["partitions"], stage
        assert state["verdict"] == {"passed": True, "failures": []}
        stop = json.loads(read_compacted(pipe.kafka, spec.control_topic)[run_id])
        assert stop == {"run_id": run_id, "limit": LIMIT, "stop": True}
        shown = pipe.cli("status", run_id)
        assert shown.returncode == 0 and f"limit {LIMIT}: stopped at" in shown.stdout, shown
