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
    # One chained CPU stack: the harness end to end in < 30 s (the replay's invariant, 0 teacher
    # requests, is the generation cache's e2e tests' business; `make bench` checks it again).
    out, docs = tmp_path / "latest.json", tmp_path / "benchmarks.md"
    cmd = [sys.executable, "-m", "bench", "--skip-distilabel", "--only", "cpu", "--layouts", "auto"]
    cmd += ["--cpu-rows", "1000"]
    cmd += ["--out", str(out), "--docs", str(docs), "--workdir", str(tmp_path / "work")]
    env = os.environ | {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(out.read_text())

    assert results["environment"]["cores"] == os.cpu_count()
    cpu = results["cpu_chain"]
    ours = cpu["fastdistill"]
    assert ours["layout"] == "auto" and ours["rows"] == 1000 and ours["rows_per_s"] > 0
    assert ours["released_rows"] == cpu["unique_rows"] < 1000  # dedup dropped the copies
    # chained: canonicalize+hash and dedup+rule_filter, each one process
    assert set(ours["services"]) == {"canonicalize", "dedup", "sink"}
    for name, svc in ours["services"].items():
        assert svc["rss_hwm_mb"] > 10 and svc["cpu_s"] >= 0, name
        if name != "sink":
            assert svc["batches"] > 0 and 0 < svc["p50_batch_ms"] <= svc["p95_batch_ms"], name
    assert ours["cpu_us_per_row"] > 0 and len(ours["load_avg"]) == 3
    # every stage still reports its commits through progress records, chained or not
    assert set(ours["stage_timeline"]) == {"canonicalize", "hash", "dedup", "rule_filter"}
    assert cpu["passthrough"]["rows"] == 1000 and cpu["passthrough"]["rows_per_s"] > 0

    text = docs.read_text()
    assert "## Targets" in text and results["environment"]["date"] in text
    verdicts = {t.name: t.verdict for t in report.targets(results)}
    assert verdicts["CPU per row, all processes (chained)"] in ("PASS", "MISS")
    assert all(v in ("PASS", "MISS", "n/a") for v in verdicts.values())


def test_steady_rate_leaves_out_start_up_and_drain() -> None:
    from bench.distilabel_peer import steady_rate

    # 10 batches of 100 rows: a slow first batch (start-up), then one every 0.1 s, a slow last.
    times = [5.0, 5.1, 5.2, 5.3, 5.4, 5.5, 5.6, 5.7, 5.8, 9.0]
    rate = steady_rate([(t, 100) for t in times])
    # from the batch reaching 10 % (5.0, 100 rows) to the one reaching 90 % (5.8, 900 rows)
    assert rate == pytest.approx(800 / 0.8)
    assert steady_rate([(1.0, 100)]) is None


def test_rows_compare_on_the_peer_columns_in_order(tmp_path: Path) -> None:
    from bench.distilabel_peer import compare_rows

    peer = tmp_path / "peer.jsonl"
    peer.write_text('{"a": 1, "b": {"y": 2, "x": 1}}\n{"a": 2, "b": null}\n')
    kept, rejected = tmp_path / "kept.jsonl", tmp_path / "rejected.jsonl"
    # FastDistill's rows carry more columns (and keys in another order): only the peer's count
    kept.write_text('{"b": {"x": 1, "y": 2}, "a": 1, "extra": 7}\n')
    rejected.write_text('{"a": 2, "b": null, "rejected_because": "x"}\n')
    same = compare_rows(peer, [kept, rejected], ["a", "b"])
    assert same["identical"] and same["same_order"] and same["peer_rows"] == 2
    rejected.write_text('{"a": 3, "b": null}\n')
    differ = compare_rows(peer, [kept, rejected], ["a", "b"])
    assert not differ["identical"] and differ["differing_rows"] == 2


def test_the_peer_lock_pins_every_package_and_distilabel_1_5_3() -> None:
    from bench import distilabel_peer

    pins = distilabel_peer.pins()
    assert pins["distilabel"] == "1.5.3"
    # the versions distilabel 1.5.3 shipped against, not today's
    assert pins["datasets"].startswith("3.") and pins["pandas"].startswith("2.")
    assert int(pins["pyarrow"].split(".")[0]) <= 19 and pins["pydantic"].startswith("2.10")
    assert all(v and v[0].isdigit() for v in pins.values())


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
