"""A pipeline of real service processes on the broker, and timing one run through it.

Each scenario gets its own pipeline name, so its topics, consumer groups and state stores
(dedup keys, the generation cache) start empty, and are deleted when it ends.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from bench import measure
from bench.measure import ProcessSampler
from fastdistill.local_stack import SIM_NAME, LocalStack
from fastdistill.plan import PipelinePlan
from fastdistill.runs import RELEASED, run_dir
from fastdistill.topics import pipeline_topics
from shared.config import KafkaSettings
from shared.kafka import clients
from shared.kafka.run_producer import produce_run
from shared.pipeline import SEEDS_STAGE, PipelineSpec
from shared.step import Row

#: The broker's name among sampled processes: its CPU is reported, its RSS is not a service's.
BROKER = "kafka-broker"


@dataclass
class RunTiming:
    run_id: str
    rows: int
    seconds: float
    produce_seconds: float
    released_rows: int
    started: float = 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds


@dataclass
class BenchStack:
    workdir: Path
    name: str
    steps: list[dict[str, Any]]
    bootstrap: str
    batch_size: int = 500
    partitions: int = 4
    #: operator chaining (the pipeline's `chain:`): "none", one service per step, or "auto"
    chain: str = "none"
    stack: LocalStack = field(init=False)

    def __post_init__(self) -> None:
        self.name = f"{self.name}-{uuid.uuid4().hex[:6]}"
        self.workdir = self.workdir / self.name
        self.workdir.mkdir(parents=True, exist_ok=True)
        pipeline = {
            "name": self.name,
            "partitions": self.partitions,
            "batch_size": self.batch_size,
            "steps": self.steps,
            "chain": self.chain,
            # No coordinator runs in the bench: the sink releases as soon as a run has drained.
            "sink": {
                "output_dir": str(self.workdir / "out"),
                "formats": ["jsonl", "parquet"],
                "await_gate": False,
            },
        }
        self.path = self.workdir / "pipeline.yaml"
        self.path.write_text(yaml.safe_dump(pipeline, sort_keys=False))
        self.spec = PipelineSpec.load(self.path)
        self.plan = PipelinePlan.build(self.spec)
        self.serde = self.plan.serde()
        self.kafka = KafkaSettings(bootstrap_servers=self.bootstrap)
        self.admin = clients.admin(self.kafka)
        clients.ensure_topics(self.admin, pipeline_topics(self.spec))
        self.stack = LocalStack(
            self.path, self.workdir / "stack", {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap}
        )
        self._before: dict[str, str] = {}

    # -- lifecycle -----------------------------------------------------------------------------------
    def start_sim(self, seeds: Path, latency: str) -> str:
        return self.stack.start_teacher_sim(seeds, latency=latency)

    def start(self) -> None:
        self.stack.add_pipeline_services(with_coordinator=False)
        self.stack.start(wait_healthy_s=120)
        self._restart_port_losers()
        # one consumer group per service: per step, or per chain of steps
        groups = {f"fd.{self.spec.name}.{s}": self.spec.step(s).instances for s in self.plan.services}
        measure.wait_for_groups(self.admin, groups, timeout_s=120)

    def _restart_port_losers(self, settle_s: float = 2.0) -> None:
        """Start again, on a new port, a service that lost its metrics port to another process.

        On a shared machine another process may take a port between `free_port()` and the
        service's bind; when that process answers /health too, `LocalStack.start` takes the
        dead service for healthy. A service of ours still alive after `settle_s` bound its port.
        """
        time.sleep(settle_s)
        for _ in range(5):
            dead = self.stack.dead()
            if not dead:
                return
            for name in dead:
                self.stack.services[name].move_port()
            self.stack.start(dead, wait_healthy_s=120)
            time.sleep(settle_s)
        raise RuntimeError(f"services keep exiting at start: {self.stack.dead()}")

    def stop(self) -> None:
        self.stack.stop()
        measure.delete_topics(self.admin, f"fd.{self.spec.name}.")
        shutil.rmtree(self.workdir / "out", ignore_errors=True)

    @property
    def service_names(self) -> list[str]:
        return [n for n in self.stack.services if n != SIM_NAME]

    def pids(self) -> dict[str, int]:
        out = {}
        for name in self.service_names:
            proc = self.stack.services[name].proc
            assert proc is not None
            out[name] = proc.pid
        return out

    def sampler(self) -> ProcessSampler:
        pids = self.pids()
        sim = self.stack.services.get(SIM_NAME)
        if sim is not None and sim.proc is not None:
            pids[SIM_NAME] = sim.proc.pid
        broker = measure.broker_pid(self.bootstrap)
        if broker is not None:
            pids[BROKER] = broker
        return ProcessSampler(pids)

    # -- runs ----------------------------------------------------------------------------------------
    def run(self, rows: list[Row], run_id: str, timeout_s: float | None = None) -> RunTiming:
        """From the start of producing the seeds to the sink's RELEASED.json (its mtime).

        The default deadline grows with the run: 10 min plus 10 ms a row (a 100k-row first run
        through the teacher takes > 10 min of teacher CPU on a loaded 2-core machine)."""
        if timeout_s is None:
            timeout_s = 600 + len(rows) / 100
        started = time.time()
        produce_run(
            self.kafka,
            self.serde,
            run_id=run_id,
            topic=self.spec.topic(SEEDS_STAGE),
            schema=self.plan.schema_name(SEEDS_STAGE),
            dlq_topic=self.spec.dlq_topic,
            rows=rows,
            batch_size=self.spec.batch_size,
        )
        produced = time.time()
        released_path = run_dir(self.spec, run_id) / RELEASED
        finished = measure.wait_for_file(released_path, timeout_s, alive=self._check_alive)
        released = json.loads(released_path.read_text())
        return RunTiming(
            run_id, len(rows), finished - started, produced - started, int(released["rows"]), started
        )

    def released_jsonl(self, run_id: str) -> list[Path]:
        """The JSONL files of a released run's subsets, kept and rejected rows alike."""
        folder = run_dir(self.spec, run_id)
        return sorted(p for p in folder.glob("*/data.jsonl") if p.parent.name not in ("hf", "reports"))

    def _check_alive(self) -> None:
        dead = self.stack.dead()
        if dead:
            tail = (self.stack.services[dead[0]].log_path).read_text(errors="replace")[-3000:]
            raise RuntimeError(f"services exited mid-run: {dead}\n{tail}")

    def stage_timeline(self, run_id: str, started: float, timeout_s: float = 30) -> dict[str, dict[str, Any]]:
        """Per stage, when its first and last transaction for the run committed (s after `started`).

        Read from the progress topic every service writes inside its transactions; it shows
        where the end-to-end time goes (a stage that starts late waits on the one before it).
        """
        consumer = clients.consumer(
            self.kafka, f"bench-timeline-{uuid.uuid4().hex[:6]}", **{"enable.partition.eof": True}
        )
        consumer.assign([TopicPartition(self.spec.progress_topic, 0, OFFSET_BEGINNING)])
        out: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout_s
        try:
            at_end = False
            while not at_end and time.monotonic() < deadline:
                for msg in consumer.consume(num_messages=500, timeout=0.5):
                    err = msg.error()
                    if err is not None:
                        at_end = at_end or err.code() == KafkaError._PARTITION_EOF
                        continue
                    _, rec = self.serde.decode(msg.value())
                    if rec["run_id"] != run_id:
                        continue
                    entry = out.setdefault(
                        rec["stage"], {"first_commit_s": math.inf, "last_commit_s": 0.0, "transactions": 0}
                    )
                    at = rec["last_ms"] / 1000 - started
                    entry["first_commit_s"] = min(entry["first_commit_s"], round(at, 3))
                    entry["last_commit_s"] = max(entry["last_commit_s"], round(at, 3))
                    entry["transactions"] += 1
        finally:
            consumer.close()
        return out

    def mark_metrics(self) -> None:
        """Remember every service's metrics now, so `batch_latency` counts only what follows."""
        self._before = {n: measure.scrape(self.stack.services[n].port) for n in self.service_names}

    def batch_latency(self) -> dict[str, dict[str, Any]]:
        """p50/p95 of fd_batch_seconds per service since `mark_metrics`, from the buckets' difference."""
        out: dict[str, dict[str, Any]] = {}
        for name in self.service_names:
            now = measure.histogram(measure.scrape(self.stack.services[name].port), "fd_batch_seconds")
            if not now:
                continue  # the sink has no per-batch processing histogram
            before = dict(measure.histogram(self._before.get(name, ""), "fd_batch_seconds"))
            delta = [(bound, count - before.get(bound, 0.0)) for bound, count in now]
            out[name] = {
                "batches": int(delta[-1][1]),
                "buckets": delta,
                "p50_ms": _ms(measure.quantile(delta, 0.5)),
                "p95_ms": _ms(measure.quantile(delta, 0.95)),
            }
        return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)
