"""End to end: a failed quality gate blocks the release of a run's dataset.

The example pipeline with gates no run can pass; the run finishes, its verdict lists readable
reasons, goes to the gates topic and the coordinator's metrics, and the sink marks the run
rejected instead of releasing it.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from pathlib import Path

import pytest

from fastdistill.runs import finished, run_dir
from services.sink.release import GATE_REJECTED
from shared.kafka.state import read_compacted
from tests.e2e.coordinator_stack import SEEDS, pipeline_copy, running_pipeline

pytestmark = pytest.mark.kafka

GATES = {"min_total": 1e9, "min_exec_pass_rate": 0.5, "min_gold_match_rate": 0.95}
HEAD = 80


def test_failed_gate_rejects_the_run(tmp_path: Path, kafka_bootstrap: str) -> None:
    with running_pipeline(tmp_path, kafka_bootstrap, pipeline_copy(tmp_path, gates=GATES)) as pipe:
        spec, run_id = pipe.spec, f"gated-{uuid.uuid4().hex[:6]}"
        pipe.produce_all(SEEDS, run_id, "--head", str(HEAD))
        result = pipe.wait(run_id)
        state = pipe.wait_state(run_id)
        quality = next(q for q in state["reports"]["quality"] if q["stage"] == spec.primary_leaf)
        expected = [
            f"total {quality['total']:.4f} < min_total 1000000000.0000",
            f"gold_match_rate {quality['gold_match_rate']:.4f} < min_gold_match_rate 0.9500",
        ]
        assert quality["exec_pass_rate"] >= 0.5 and quality["gold_match_rate"] < 0.95
        assert state["verdict"] == {"passed": False, "failures": expected}

        # Not released: marked rejected, with the reasons, the rows kept aside.
        assert result == finished(spec, run_id)
        assert not result["released"] and result["gate"]["failures"] == expected
        folder = run_dir(spec, run_id)
        assert not (folder / spec.primary_leaf).exists() and not (folder / "RELEASED.json").exists()
        aside = folder / GATE_REJECTED
        kept = (aside / spec.primary_leaf / "data.jsonl").read_text().splitlines()
        rejected = (aside / f"{spec.primary_leaf}.rejected" / "data.jsonl").read_text().splitlines()
        subset = result["subsets"][spec.primary_leaf]
        assert (
            (len(kept), len(rejected))
            == (subset["kept"], subset["rejected"])
            == (
                quality["kept"],
                quality["rejected"],
            )
        )
        assert len(kept) + len(rejected) == quality["total"] and result["rows"] == len(kept)
        assert max(json.loads(line)["source_index"] for line in kept + rejected) < HEAD
        assert all(name.startswith(f"{GATE_REJECTED}/") for name in subset["files"])

        verdict = json.loads(read_compacted(pipe.kafka, spec.gates_topic)[run_id])
        assert verdict == {"run_id": run_id, "passed": False, "failures": expected}
        port = pipe.stack.services["coordinator"].port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            metrics = resp.read().decode()
        assert f'fd_gate_verdicts_total{{pipeline="{spec.name}",verdict="fail"}} 1.0' in metrics
        assert f'fd_gate_passed{{pipeline="{spec.name}",run_id="{run_id}"}} 0.0' in metrics

        shown = pipe.cli("status", run_id)
        assert shown.returncode == 0 and "gate FAILED" in shown.stdout, shown
