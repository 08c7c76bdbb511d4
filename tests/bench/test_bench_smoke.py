"""A small run of the benchmark harness: it must produce complete, sane results.

Timing targets are the bench's business (`make bench`), never a test's: these assert shapes,
counts and invariants only (rows arrive, the replay makes no teacher request, ...).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import measure, report

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.kafka
def test_small_bench_run_writes_sane_results(tmp_path: Path, kafka_bootstrap: str) -> None:
    out, docs = tmp_path / "latest.json", tmp_path / "benchmarks.md"
    cmd = [sys.executable, "-m", "bench", "--skip-distilabel", "--cpu-rows", "2000", "--teacher-rows", "200"]
    cmd += ["--concurrency", "32", "--latency", "fixed:20", "--scale", "1,2"]
    cmd += ["--out", str(out), "--docs", str(docs), "--workdir", str(tmp_path / "work")]
    env = os.environ | {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(out.read_text())

    assert results["environment"]["cores"] == os.cpu_count()
    cpu = results["cpu_chain"]
    ours = cpu["fastdistill"]
    assert ours["rows"] == 2000 and ours["rows_per_s"] > 0
    expected = cpu["unique_rows"] if cpu["dedup_mode"] == "drop" else 2000
    assert ours["released_rows"] == expected
    assert set(ours["services"]) == {"canonicalize", "hash", "dedup", "rule_filter", "sink"}
    for name, svc in ours["services"].items():
        assert svc["rss_hwm_mb"] > 10 and svc["cpu_s"] >= 0, name
        if name != "sink":
            assert svc["batches"] > 0 and 0 < svc["p50_batch_ms"] <= svc["p95_batch_ms"], name
    assert set(ours["stage_timeline"]) == {"canonicalize", "hash", "dedup", "rule_filter"}
    assert cpu["passthrough"]["rows"] == 2000 and cpu["passthrough"]["rows_per_s"] > 0

    (run,) = results["teacher"]["runs"]
    teacher = run["fastdistill"]
    assert teacher["released_rows"] == 200
    assert teacher["server"]["requests"] == 200  # one request per row, no fault injected
    assert teacher["bound_rows_per_s"] == pytest.approx(32 / 0.020)
    assert 0 < teacher["ratio_to_bound"] <= 1.05
    assert teacher["replay"]["teacher_requests"] == 0
    assert teacher["replay"]["released_rows"] == 200

    assert [r["instances"] for r in results["scale_out"]["runs"]] == [1, 2]
    assert all(r["rows_per_s"] > 0 for r in results["scale_out"]["runs"])

    text = docs.read_text()
    assert "## Targets" in text and results["environment"]["date"] in text
    verdicts = {t.name: t.verdict for t in report.targets(results)}
    assert verdicts["replay teacher requests"] == "PASS"
    assert all(v in ("PASS", "MISS", "n/a") for v in verdicts.values())


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    text = "\n".join(
        [
            'fd_batch_seconds_bucket{le="0.01",step="a"} 10.0',
            'fd_batch_seconds_bucket{le="0.1",step="a"} 30.0',
            'fd_batch_seconds_bucket{le="+Inf",step="a"} 40.0',
        ]
    )
    buckets = measure.histogram(text, "fd_batch_seconds")
    assert buckets == [(0.01, 10.0), (0.1, 30.0), (math.inf, 40.0)]
    assert measure.quantile(buckets, 0.25) == pytest.approx(0.01)
    assert measure.quantile(buckets, 0.5) == pytest.approx(0.01 + 0.09 * 10 / 20)
    assert measure.quantile(buckets, 0.95) == pytest.approx(0.1)  # beyond the last finite bound
    assert measure.quantile([], 0.5) is None


def test_lognormal_bound_uses_the_mean_not_the_median() -> None:
    from bench.teacher import mean_latency_ms

    assert mean_latency_ms("fixed:200") == 200
    assert mean_latency_ms("lognormal:200:1.0") == pytest.approx(200 * math.exp(0.5))


def test_the_ideal_client_reaches_the_bound_only_without_a_tail() -> None:
    from bench.seeds import generate
    from bench.teacher import drawn_latencies_ms, ideal_rows_per_s, mean_latency_ms

    rows = generate(64, duplicate_rate=0.0, prefix="ideal")
    # Fixed latency, rows a multiple of the slots: every slot busy until the end, exactly the bound.
    assert ideal_rows_per_s(drawn_latencies_ms(rows, "fixed:200"), 8) == pytest.approx(8 / 0.2)
    # A long tail: the run waits for its slowest draw, so even no overhead stays under the bound.
    bound = 32 / (mean_latency_ms("lognormal:200:1.0") / 1000)
    assert ideal_rows_per_s(drawn_latencies_ms(rows, "lognormal:200:1.0"), 32) < bound
