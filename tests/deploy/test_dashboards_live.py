"""Every dashboard query answers with data from a real run.

The example pipeline runs as local processes on the real broker (LocalStack, the teacher simulator
with faults so that errors and retries exist), Prometheus scrapes every service, one undecodable
message goes to the seeds topic (so the dead-letter series exists), the example seeds are produced
as one run, and once the run is released every PromQL expression of every panel is evaluated
through Prometheus' HTTP API. An empty result means a panel that would show "No data".
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Producer

from fastdistill.local_stack import LocalStack, free_port
from fastdistill.prometheus_local import start_prometheus, stop_prometheus, write_config
from fastdistill.runs import run_states, wait_for_release
from fastdistill.topics import pipeline_topics
from shared.config import KafkaSettings
from shared.kafka import clients
from shared.pipeline import SEEDS_STAGE, PipelineSpec
from tests.deploy.support import PIPELINE, REPO, concrete, exprs

pytestmark = pytest.mark.kafka

SEEDS = REPO / "examples/text2sql/seeds.jsonl"
#: Not 1 s: a step answers /metrics inside its event loop, which Kafka calls hold for up to ~2 s, and a
#: failed scrape blanks the target's gauges at exactly the instant a query may look.
SCRAPE_S = 5.0
#: Fault rate of the simulator: every run then has failed attempts (errors by code) and retries.
FAULT_RATE = 0.1


def _pipeline_copy(folder: Path) -> Path:
    """The example pipeline under a fresh name (own topics, groups and state), writing into `folder`,
    with teacher timeouts and backoffs short enough that the simulator's faults cost seconds."""
    raw = yaml.safe_load(PIPELINE.read_text())
    raw["name"] = f"dash-{uuid.uuid4().hex[:8]}"
    raw["sink"]["output_dir"] = str(folder / "out")
    for step in raw["steps"]:
        params = step.setdefault("params", {})
        if "db_path" in params:  # relative to the repository, where the services do not run here
            params["db_path"] = str(REPO / params["db_path"])
        if step["step"] == "teacher":
            params |= {"request_timeout_s": 2, "backoff_base_s": 0.05, "backoff_max_s": 0.5}
            params |= {"max_retry_after_s": 1}
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _query(port: int, expr: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return dict(json.load(resp))
    except urllib.error.HTTPError as exc:  # 400 for a bad expression carries the parser's message
        return dict(json.load(exc))


def _wait_for_series(port: int, expr: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _query(port, expr).get("data", {}).get("result"):
            return
        time.sleep(0.5)
    raise TimeoutError(f"Prometheus has no {expr} after {timeout_s}s")


def test_every_panel_query_returns_data_after_a_run(tmp_path: Path, kafka_bootstrap: str) -> None:
    path = _pipeline_copy(tmp_path)
    spec = PipelineSpec.load(path)
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, session_timeout_ms=6000)
    clients.ensure_topics(clients.admin(kafka), pipeline_topics(spec))
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "KAFKA_SESSION_TIMEOUT_MS": "6000"}
    stack = LocalStack(path, tmp_path / "stack", env)
    prometheus = None
    try:
        stack.start_teacher_sim(SEEDS, fault_rate=FAULT_RATE)
        stack.add_pipeline_services()
        stack.start()
        targets = {name: svc.port for name, svc in stack.services.items()}
        prom_port = free_port()
        config = write_config(
            targets, tmp_path / "prometheus.yml", scrape_interval=f"{SCRAPE_S:g}s", pipeline=spec.name
        )
        prometheus = start_prometheus(config, tmp_path / "prometheus", prom_port)

        # Not Avro at all: the first step dead-letters it as UndecodableMessage.
        producer = Producer(kafka.client_conf())
        producer.produce(spec.topic(SEEDS_STAGE), value=b"\x00garbage, not a batch", key=b"garbage")
        assert producer.flush(30) == 0

        run_id = f"run-{uuid.uuid4().hex[:8]}"
        stack.produce(SEEDS, run_id)
        wait_for_release(spec, run_id, 300, stack)
        # The coordinator exports a run's quality once its verdict is committed; then two more
        # scrapes so that every rate() has two samples after the last change.
        _wait_for_series(prom_port, f'fd_gate_passed{{run_id="{run_id}"}}', 60)
        time.sleep(2 * SCRAPE_S + 1)

        # Each panel as Grafana asks it with this pipeline and this run chosen: the services' own
        # series carry the pipeline's scrape label, the coordinator's per-run series the run id.
        empty = []
        for board, panel, expr in exprs():
            query = concrete(expr, pipeline=spec.name, run_id=run_id)
            answer = _query(prom_port, query)
            assert answer.get("status") == "success", f"{board} / {panel}: {query}: {answer}"
            if not answer["data"]["result"]:
                empty.append(f"{board} / {panel}: {query}")
        assert not empty, "queries without data:\n" + "\n".join(empty)
        # Another pipeline's name selects nothing: the filter is real.
        other = concrete('sum(fd_rows_in_total{pipeline=~"$pipeline"})', pipeline="no-such-pipeline")
        assert _query(prom_port, other)["data"]["result"] == []
        # A run's series are its own: the rows per stage of this run are the run's counts.
        rows = _query(
            prom_port, f'fd_run_stage_rows{{run_id="{run_id}", stage="{spec.primary_leaf}", kind="out"}}'
        )
        counted = run_states(spec, kafka)[run_id]["stages"][spec.primary_leaf]["rows_out"]
        assert [float(r["value"][1]) for r in rows["data"]["result"]] == [counted]
    finally:
        if prometheus is not None:
            stop_prometheus(prometheus)
        stack.stop()
