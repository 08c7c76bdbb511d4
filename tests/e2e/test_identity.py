"""End to end: what identifies a generation (the cache key) and a dataset (the manifest hash).

The example pipeline with every service a process on the real broker and two teacher simulator
processes, A and B, serving the same model name. Each simulator counts the requests it received
(`/stats`): that count, not the client's view, is the evidence. (1) A run against A pays A once per
row reaching the teacher. (2) OPENAI_BASE_URL switched to B and the teacher restarted, as an
operator would: the same seeds as a new run send B every request and A none. (3) The same seeds
again cost nothing; (4) with `produce --no-cache` they cost B every row again, and (5) a replay of
that run from the teacher costs nothing (the fresh answers were stored).

The final stage's manifest `content_hash` is the hash of the rows as released: recomputed from
data.jsonl by the rule the manifest documents, it is equal, and it is equal for two runs whose
files are byte-identical though one paid the teacher and one read its cache (the volatile
columns, latency and cache flag, differ between them and are in no file).
"""

from __future__ import annotations

import hashlib
import json
import signal
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from fastdistill.plan import PipelinePlan
from fastdistill.replay import read_run
from fastdistill.runs import run_dir
from tests.e2e.coordinator_stack import RELEASED_ROWS, SEEDS, Pipeline, pipeline_copy, running_pipeline

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Pipeline]:
    folder = tmp_path_factory.mktemp("cache")
    with running_pipeline(folder, kafka_bootstrap, pipeline_copy(folder)) as pipeline:
        yield pipeline


def _requests(base_url: str) -> int:
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/stats", timeout=10) as resp:
        return int(json.load(resp)["requests"])


def _run(pipe: Pipeline, *options: str) -> str:
    run_id = f"cache-{uuid.uuid4().hex[:6]}"
    pipe.produce_all(SEEDS, run_id, *options)
    assert pipe.wait(run_id)["released"]
    return run_id


def test_switching_the_endpoint_and_no_cache_send_requests_to_the_server(pipe: Pipeline) -> None:
    sim_a = pipe.stack.env["OPENAI_BASE_URL"]
    first = _run(pipe)
    reaching = pipe.wait_state(first)["stages"]["dedup"]["rows_out"]
    assert reaching >= RELEASED_ROWS
    assert _requests(sim_a) == reaching

    sim_b = pipe.stack.start_teacher_sim(SEEDS, name="teacher-sim-b")
    pipe.stack.env["OPENAI_BASE_URL"] = sim_b
    teacher = pipe.stack.services["teacher"]
    teacher.signal(signal.SIGTERM)
    assert teacher.wait(30) is not None
    pipe.stack.restart("teacher")

    second = _run(pipe)
    assert (_requests(sim_a), _requests(sim_b)) == (reaching, reaching)
    assert pipe.dataset(second) == pipe.dataset(first)  # same answers: both simulate one model

    _run(pipe)
    assert _requests(sim_b) == reaching  # B's answers are cached now

    no_cache = _run(pipe, "--no-cache")
    assert (_requests(sim_a), _requests(sim_b)) == (reaching, 2 * reaching)

    replay_id = f"{no_cache}.replay-{uuid.uuid4().hex[:6]}"
    proc = pipe.cli("replay", no_cache, "--run-id", replay_id, "--from", "teacher")
    assert proc.returncode == 0, proc.stderr
    assert pipe.wait(replay_id)["released"]
    assert _requests(sim_b) == 2 * reaching  # the no-cache run's answers serve its replay
    assert pipe.dataset(replay_id) == pipe.dataset(no_cache)


def _released_hash(data_jsonl: bytes) -> str:
    """The manifest's documented rule, applied by hand to a released data.jsonl."""
    total = 0
    for line in data_jsonl.splitlines():
        canonical = json.dumps(json.loads(line), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        total += int.from_bytes(hashlib.sha256(canonical.encode("utf-8")).digest(), "big")
    return f"{total % 2**256:064x}"


def test_final_manifest_hashes_the_released_rows(pipe: Pipeline) -> None:
    final = pipe.spec.primary_leaf
    cached, paid = _run(pipe), _run(pipe, "--no-cache")
    files = {run: (run_dir(pipe.spec, run) / final / "data.jsonl").read_bytes() for run in (cached, paid)}
    assert files[cached] == files[paid]
    manifests = {
        run: next(m for m in pipe.report_files(run)["manifest"] if m["stage"] == final) for run in files
    }
    released = json.loads((run_dir(pipe.spec, paid) / "RELEASED.json").read_text())
    assert (
        released["subsets"][final]["files"][f"{final}/data.jsonl"] == hashlib.sha256(files[paid]).hexdigest()
    )
    # The manifest covers the stage's every row: the kept ones and the rejected subset's (as the
    # stage wrote them, without the sink's `rejected_because`).
    stage_rows = [json.dumps(row) for row in pipe.dataset(paid)]
    subset = released["subsets"][final]
    assert manifests[paid]["count"] == subset["kept"] + subset["rejected"] == len(stage_rows)
    assert subset["kept"] == len(files[paid].splitlines())
    assert manifests[paid]["content_hash"] == _released_hash("\n".join(stage_rows).encode())
    assert manifests[cached]["content_hash"] == manifests[paid]["content_hash"]
    assert "teacher_latency_ms" not in manifests[paid]["columns"]
    # The two runs' rows did differ on the topic, in how they were fetched (the volatile columns).
    topic_rows = {run: _final_topic_rows(pipe, run) for run in files}
    assert set(topic_rows[paid]) == set(topic_rows[cached])
    assert all(row["teacher_cached"] is False for row in topic_rows[paid].values())
    assert any(
        (row["teacher_cached"], row["teacher_latency_ms"])
        != (topic_rows[cached][sample]["teacher_cached"], topic_rows[cached][sample]["teacher_latency_ms"])
        for sample, row in topic_rows[paid].items()
    )


def _final_topic_rows(pipe: Pipeline, run_id: str) -> dict[str, dict[str, Any]]:
    plan = PipelinePlan.build(pipe.spec)
    final = pipe.spec.primary_leaf
    records = read_run(pipe.kafka, plan.serde(), pipe.spec.topic(final), plan.schema_name(final), run_id)
    return {row["sample_id"]: row for _, record in records for row in record["rows"]}
