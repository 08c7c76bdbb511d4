"""What the coordinator end-to-end tests share.

The example pipeline runs under a fresh name (own topics, consumer groups and state) with every
service as a local process on the real broker and the teacher simulator over HTTP; the CLI is
run as a subprocess, as a user would. `recompute` folds a run's records from the topics into a
fresh `RunState` with the coordinator's own code, so a restarted coordinator's reports can be
compared with reports nobody interrupted.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from fastdistill.local_stack import LocalStack
from fastdistill.plan import PipelinePlan
from fastdistill.runs import run_dir, run_states, wait_for_release
from fastdistill.services.coordinator import CoordinatorService
from fastdistill.topics import pipeline_topics
from services.coordinator.run_state import RunState
from services.sink.subsets import REJECTED_BECAUSE
from shared.config import KafkaSettings, ServiceSettings
from shared.kafka import clients
from shared.pipeline import PipelineSpec

REPO = Path(__file__).resolve().parents[2]
PIPELINE = REPO / "examples/text2sql/pipeline.yaml"
SEEDS = REPO / "examples/text2sql/seeds.jsonl"
SEED_COUNT = 239
RELEASED_ROWS = 227  # rows of the final stage: the example's seeds minus duplicates
#: Of those, kept (`keep` not false) and rejected: what the sink releases as keep_by_score/ and
#: keep_by_score.rejected/ (tests.e2e.test_expected derives both from tests.e2e.expected).
KEPT_ROWS = 189
REJECTED_ROWS = 38


def pipeline_copy(folder: Path, gates: dict[str, float] | None = None, **teacher: Any) -> Path:
    """The example pipeline under a fresh name writing into `folder`; `teacher` overrides the
    teacher step's `llm:` endpoint settings."""
    raw = yaml.safe_load(PIPELINE.read_text())
    raw["name"] = f"e2e-{uuid.uuid4().hex[:8]}"
    raw["sink"]["output_dir"] = str(folder / "out")
    if gates is not None:
        raw["gates"] = gates
    for step in raw["steps"]:
        params = step.setdefault("params", {})
        if "db_path" in params:  # relative to the repository, where the services do not run here
            params["db_path"] = str(REPO / params["db_path"])
        if step["id"] == "teacher":
            params["llm"] = params.get("llm", {}) | teacher
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@dataclass
class Pipeline:
    path: Path
    spec: PipelineSpec
    kafka: KafkaSettings
    stack: LocalStack

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.stack.cli(*args, "--pipeline", str(self.path)),
            env=self.stack.base_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def popen_cli(self, *args: str) -> subprocess.Popen[str]:
        """`cli` in the background."""
        return subprocess.Popen(
            self.stack.cli(*args, "--pipeline", str(self.path)),
            env=self.stack.base_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def produce(self, seeds: Path, run_id: str, *options: str) -> subprocess.Popen[str]:
        """`fastdistill produce` in the background (two of them may run at once)."""
        return subprocess.Popen(
            self.stack.cli("produce", str(seeds), "--run-id", run_id, *options),
            env=self.stack.base_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def produce_all(self, seeds: Path, run_id: str, *options: str) -> str:
        """`fastdistill produce` to the end; its summary (stdout)."""
        return self.stack.produce(seeds, run_id, *options, timeout_s=120)

    def wait(self, run_id: str, timeout_s: float = 300) -> dict[str, Any]:
        return wait_for_release(self.spec, run_id, timeout_s, self.stack)

    def state(self, run_id: str) -> dict[str, Any]:
        return run_states(self.spec, self.kafka)[run_id]

    def wait_state(self, run_id: str, status: str = "done", timeout_s: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = run_states(self.spec, self.kafka).get(run_id)
            if state is not None and state["status"] == status:
                return state
            time.sleep(0.5)
        raise TimeoutError(f"run {run_id} not {status} after {timeout_s}s")

    def teacher_requests(self) -> int:
        """Requests the teacher simulator has answered so far (its /stats)."""
        url = self.stack.env["OPENAI_BASE_URL"].removesuffix("/v1") + "/stats"
        with urllib.request.urlopen(url, timeout=10) as resp:
            return int(json.load(resp)["requests"])

    def kept(self, run_id: str, subset: str | None = None) -> list[dict[str, Any]]:
        """A subset's released (kept) rows, as data.jsonl holds them."""
        path = run_dir(self.spec, run_id) / (subset or self.spec.primary_leaf) / "data.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]

    def dataset(self, run_id: str, subset: str | None = None) -> list[dict[str, Any]]:
        """Every row a subset's stage released, kept and rejected (without the sink's
        `rejected_because`), by source index."""
        subset = subset or self.spec.primary_leaf
        path = run_dir(self.spec, run_id) / f"{subset}.rejected" / "data.jsonl"
        rejected = [json.loads(line) for line in path.read_text().splitlines()]
        for row in rejected:
            del row[REJECTED_BECAUSE]
        return sorted(
            [*self.kept(run_id, subset), *rejected], key=lambda r: (r["source_index"], r["sample_id"])
        )

    def report_files(self, run_id: str) -> dict[str, Any]:
        folder = run_dir(self.spec, run_id) / "reports"
        return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}

    def recompute(self, run_id: str) -> RunState:
        """The run's state folded from scratch from every topic the coordinator reads."""
        plan = PipelinePlan.build(self.spec)
        fold = CoordinatorService(plan, plan.serde(), self.kafka, ServiceSettings())
        spec = self.spec
        topics = [*fold.stage_of_topic, spec.progress_topic, spec.dlq_topic, spec.control_topic]
        fold.read_limits()
        consumer = clients.consumer(self.kafka, f"recompute-{uuid.uuid4().hex}")
        try:
            fold.partitions = {t: clients.partition_count(consumer, t) for t in topics}
            ends: dict[tuple[str, int], int] = {}
            assignment = []
            for topic, count in fold.partitions.items():
                for p in range(count):
                    low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
                    if high > low:
                        ends[(topic, p)] = high
                        assignment.append(TopicPartition(topic, p, OFFSET_BEGINNING))
            consumer.assign(assignment)
            deadline = time.monotonic() + 120
            while ends and time.monotonic() < deadline:
                for msg in consumer.consume(num_messages=500, timeout=0.5):
                    if msg.error() is None:
                        fold._on_message(msg)
                for tp in consumer.position(assignment):
                    if tp.offset >= ends.get((tp.topic, tp.partition), 0):
                        ends.pop((tp.topic, tp.partition), None)
            assert not ends, f"topics not read to their end: {ends}"
        finally:
            consumer.close()
        return fold.runs[run_id]


@contextmanager
def running_pipeline(
    folder: Path, bootstrap: str, path: Path, latency: str = "fixed:0", env: dict[str, str] | None = None
) -> Iterator[Pipeline]:
    """Topics, the teacher simulator and every service of the pipeline at `path` as processes
    (`env`: more environment for every service)."""
    spec = PipelineSpec.load(path)
    kafka = KafkaSettings(bootstrap_servers=bootstrap, session_timeout_ms=6000)
    clients.ensure_topics(clients.admin(kafka), pipeline_topics(spec))
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_SESSION_TIMEOUT_MS": "6000", **(env or {})}
    stack = LocalStack(path, folder / "stack", env)
    try:
        stack.start_teacher_sim(SEEDS, latency=latency)
        stack.add_pipeline_services()
        stack.start()
        yield Pipeline(path, spec, kafka, stack)
    finally:
        stack.stop()
