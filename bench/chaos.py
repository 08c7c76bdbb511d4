"""Fault injection: the text-to-SQL example under SIGKILLs, a broker restart and teacher faults,
compared with a fault-free run of the same seeds.

    python -m bench.chaos [--kills 20] [--copies 12] [--fault-rate 0.2]   (or: make chaos)

Both runs use their own broker (port 19392 by default, data under .cache/kafka; the shared
19092 broker is never touched), every service as a process (`LocalStack`) and the teacher
simulator over HTTP. Each run has a fresh pipeline name, so topics, dedup keys and the
generation cache start empty. During the chaos run a seeded `random.Random` picks when and
which service instance gets SIGKILL (then restarted), and the broker is stopped and started
once half-way. Then the chaos dataset must equal the fault-free one, less the rows the
teacher dead-lettered after exhausting its retries (each such DLQ entry is "explained").
"""

from __future__ import annotations

import json
import random
import shutil
import threading
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from confluent_kafka import OFFSET_BEGINNING, TopicPartition
from rich.console import Console

from bench import measure
from fastdistill.dev import local_broker
from fastdistill.local_stack import SIM_NAME, LocalStack
from fastdistill.plan import PipelinePlan
from fastdistill.runs import finished, run_dir, run_states
from fastdistill.topics import pipeline_topics
from shared.config import KafkaSettings
from shared.kafka import clients
from shared.pipeline import PipelineSpec

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples/text2sql"
#: Seven attempts at 20% faults: a row exhausts them with probability 0.2**7 (~1 in 80,000).
TEACHER = {
    "max_retries": 6,
    "request_timeout_s": 5,
    "backoff_base_s": 0.05,
    "backoff_max_s": 1,
    "max_retry_after_s": 1,
}
#: A restarted instance leaves its group within this, so its partitions move on quickly.
SESSION_TIMEOUT_MS = "6000"
#: A stalled service ends itself after this (shared/runtime/watchdog.py), as a Kubernetes liveness
#: probe (3 x 15 s) would restart it; the 300 s default would make a stall cost the run minutes.
STALL_LIMIT_S = "45"

console = Console()


@dataclass
class RunResult:
    run_id: str
    seconds: float
    rows: list[dict[str, Any]]
    manifest: dict[str, dict[str, Any]]
    dead_letters: list[dict[str, Any]]
    sim: dict[str, Any]
    kills: list[str] = field(default_factory=list)
    broker_restarts: int = 0
    #: services found exited that the harness did not kill, with their exit code (restarted);
    #: 70 is the watchdog's (a stalled loop), 1 mostly a fenced producer after the broker restart
    crashes: list[str] = field(default_factory=list)


def make_seeds(copies: int, path: Path) -> Path:
    """The example's seeds `copies` times; copy k's task ids get a `~k` suffix, so every copy is a
    new sample (its own teacher call) while the example's own duplicates stay duplicates."""
    base = [json.loads(line) for line in (EXAMPLE / "seeds.jsonl").read_text().splitlines()]
    lines = []
    for k in range(copies):
        for seed in base:
            task_id = seed["task_id"] if k == 0 else f"{seed['task_id']}~{k}"
            lines.append(json.dumps(seed | {"task_id": task_id}))
    path.write_text("\n".join(lines) + "\n")
    return path


def pipeline_file(folder: Path, prefix: str) -> Path:
    """The example pipeline under a fresh name, writing into `folder`, with the chaos teacher budget."""
    raw = yaml.safe_load((EXAMPLE / "pipeline.yaml").read_text())
    raw["name"] = f"{prefix}-{uuid.uuid4().hex[:8]}"
    raw["sink"]["output_dir"] = str(folder / "out")
    for step in raw["steps"]:
        params = step.setdefault("params", {})
        if "db_path" in params:  # relative to the repository, where the services do not run
            params["db_path"] = str(REPO / params["db_path"])
        if step["id"] == "teacher":
            params["llm"] = params.get("llm", {}) | TEACHER
        if step["step"] == "sql_eval":
            # A query budget no load reaches: on a busy box the 1 s default turns verdicts, and
            # the two runs must agree on every row.
            params["time_budget_ms"] = 30_000
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


class Monkey(threading.Thread):
    """Kills a random service instance at each of `kill_at` (seconds into the run), restarts it,
    stops and starts the broker at each of `broker_at`, and restarts any service found dead."""

    def __init__(
        self,
        stack: LocalStack,
        rng: random.Random,
        port: int,
        kill_at: list[float],
        broker_at: list[float],
        done: threading.Event,
    ) -> None:
        super().__init__(daemon=True, name="chaos-monkey")
        self.stack, self.rng, self.port, self.done = stack, rng, port, done
        self.events = sorted([(t, "kill") for t in kill_at] + [(t, "broker") for t in broker_at])
        self.kills: list[str] = []
        self.broker_restarts = 0
        self.crashes: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the main thread, which owns the outcome
            self.error = exc

    def _run(self) -> None:
        started = time.monotonic()
        events = list(self.events)
        while not self.done.is_set():
            self._revive()
            if events and time.monotonic() - started >= events[0][0]:
                _, what = events.pop(0)
                if what == "kill":
                    self._kill()
                else:
                    self._restart_broker()
            self.done.wait(0.2)

    def _kill(self) -> None:
        names = [n for n in self.stack.services if n != SIM_NAME]
        name = self.rng.choice(names)
        console.print(f"  [red]SIGKILL[/] {name}")
        self.stack.kill(name)
        self.kills.append(name)
        self.stack.restart(name)

    def _restart_broker(self) -> None:
        console.print("  [red]broker down[/]")
        local_broker.down(self.port)
        time.sleep(self.rng.uniform(2, 6))
        local_broker.up(self.port)
        self.broker_restarts += 1
        console.print("  [green]broker up[/]")

    def _revive(self) -> None:
        for name in self.stack.dead():
            proc = self.stack.services[name].proc
            assert proc is not None
            console.print(f"  [yellow]{name} exited by itself ({proc.returncode}): restarted[/]")
            self.crashes.append(f"{name} (exit {proc.returncode})")
            self.stack.restart(name)


def run_pipeline(
    folder: Path,
    seeds: Path,
    bootstrap: str,
    fault_rate: float,
    latency: str,
    chaos: dict[str, Any] | None = None,
    timeout_s: float = 3600,
) -> RunResult:
    """One run of the example on a fresh pipeline; `chaos` = Monkey's rng, port, kill_at, broker_at."""
    path = pipeline_file(folder, "chaos" if chaos else "calm")
    spec = PipelineSpec.load(path)
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    clients.ensure_topics(clients.admin(kafka), pipeline_topics(spec))
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_SESSION_TIMEOUT_MS": SESSION_TIMEOUT_MS,
        "FD_STALL_LIMIT_S": STALL_LIMIT_S,
    }
    stack = LocalStack(path, folder / "stack", env)
    run_id = f"{spec.name}-run"
    done = threading.Event()
    monkey = None
    try:
        sim_url = stack.start_teacher_sim(EXAMPLE / "seeds.jsonl", latency=latency, fault_rate=fault_rate)
        stack.add_pipeline_services()
        stack.start(wait_healthy_s=180)
        started = time.monotonic()
        # Produced in a child, as a user would; ingest validates the seeds and partitions them.
        stack.produce(seeds, run_id, timeout_s=600)
        if chaos is not None:
            monkey = Monkey(stack, done=done, **chaos)
            monkey.start()
        while finished(spec, run_id) is None:
            if monkey is not None and monkey.error is not None:
                raise RuntimeError("chaos monkey failed") from monkey.error
            if monkey is None and stack.dead():
                raise RuntimeError(f"services exited in the fault-free run: {stack.dead()}")
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"run {run_id} not released after {timeout_s}s")
            time.sleep(0.5)
        seconds = time.monotonic() - started
        done.set()
        if monkey is not None:
            monkey.join(120)
        result = finished(spec, run_id)
        assert result is not None
        if not result["released"]:
            raise RuntimeError(f"run {run_id} was rejected: {result}")
        return RunResult(
            run_id=run_id,
            seconds=seconds,
            rows=_dataset(spec, run_id),
            manifest=_manifest(spec, run_id),
            dead_letters=_dead_letters(spec, kafka, run_id),
            sim=_http_json(sim_url.removesuffix("/v1") + "/stats"),
            kills=monkey.kills if monkey else [],
            broker_restarts=monkey.broker_restarts if monkey else 0,
            crashes=monkey.crashes if monkey else [],
        )
    finally:
        done.set()
        stack.stop()
        measure.delete_topics(clients.admin(kafka), f"fd.{spec.name}.")


def _dataset(spec: PipelineSpec, run_id: str) -> list[dict[str, Any]]:
    path = run_dir(spec, run_id) / spec.primary_leaf / "data.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _manifest(spec: PipelineSpec, run_id: str) -> dict[str, dict[str, Any]]:
    entries = json.loads((run_dir(spec, run_id) / "reports" / "manifest.json").read_text())
    return {m["stage"]: m for m in entries}


def _http_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return dict(json.load(resp))


def _dead_letters(spec: PipelineSpec, kafka: KafkaSettings, run_id: str) -> list[dict[str, Any]]:
    """The run's DLQ records: as many as the coordinator counted once the run is `done`."""
    deadline = time.monotonic() + 120
    while (state := run_states(spec, kafka).get(run_id) or {}).get("status") != "done":
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} not done in the runs topic")
        time.sleep(0.5)
    want = sum(n for by_type in state["dead_letters"].values() for n in by_type.values())
    serde = PipelinePlan.build(spec).serde()
    consumer = clients.consumer(kafka, f"chaos-dlq-{uuid.uuid4().hex[:6]}")
    letters: list[dict[str, Any]] = []
    try:
        count = clients.partition_count(consumer, spec.dlq_topic)
        consumer.assign([TopicPartition(spec.dlq_topic, p, OFFSET_BEGINNING) for p in range(count)])
        deadline = time.monotonic() + 120
        while len(letters) < want:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{spec.dlq_topic}: {len(letters)} of {want} dead letters read")
            for msg in consumer.consume(num_messages=500, timeout=0.5):
                if msg.error() is None:
                    _, record = serde.decode(msg.value())
                    if record.get("run_id") == run_id:
                        letters.append(record)
        # A little further, so a letter written twice shows up rather than being left unread.
        for msg in consumer.consume(num_messages=500, timeout=2):
            if msg.error() is None and (record := serde.decode(msg.value())[1]).get("run_id") == run_id:
                letters.append(record)
        return letters
    finally:
        consumer.close()


@dataclass
class Figures:
    seeds: int
    kills_survived: int
    broker_restarts: int
    crashes: list[str]
    rows_baseline: int
    rows_chaos: int
    rows_lost: int
    rows_duplicated: int
    rows_different: int
    dlq_explained: int
    dlq_unexplained: int
    dlq_by_reason: dict[str, int]
    teacher_calls_paid_twice: int
    teacher_requests: int
    faults_served: int
    manifest_mismatches: list[str]
    seconds_baseline: float
    seconds_chaos: float
    kills_by_service: dict[str, int]

    @property
    def ok(self) -> bool:
        return not (
            self.rows_lost
            or self.rows_duplicated
            or self.rows_different
            or self.dlq_unexplained
            or self.manifest_mismatches
        )


def _paid_twice(run: RunResult) -> int:
    """Successful teacher answers beyond one per row the teacher emitted: each row's generation
    is cached once answered, so anything more was an answer paid for and lost (a killed teacher
    before its transaction committed, or a response to a client that had gone)."""
    return int(run.sim["outcomes"].get("ok", 0)) - int(run.manifest["teacher"]["count"])


def compare(seeds: int, calm: RunResult, chaos: RunResult) -> Figures:
    letters = chaos.dead_letters
    explained = [d for d in letters if d["step"] == "teacher" and d["error_type"] == "GenerationFailed"]
    excused = {d["sample_id"] for d in explained}
    want = {r["sample_id"]: r for r in calm.rows if r["sample_id"] not in excused}
    got = Counter(r["sample_id"] for r in chaos.rows)
    different = sum(1 for r in chaos.rows if r["sample_id"] in want and r != want[r["sample_id"]])
    extra = sum(1 for s in got if s not in want)
    # Per stage, the count less the excused rows from the teacher on; the content hash only before
    # the teacher: later stages carry its volatile fetch columns (latency, cached), which differ.
    stages = list(calm.manifest)
    mismatches = []
    for at, (stage, entry) in enumerate(calm.manifest.items()):
        other = chaos.manifest.get(stage)
        late = at >= stages.index("teacher")
        if (
            other is None
            or other["count"] != entry["count"] - (len(excused) if late else 0)
            or (not late and other["content_hash"] != entry["content_hash"])
        ):
            mismatches.append(stage)
    reasons = Counter(f"{d['step']}: {d['error_type']}" for d in chaos.dead_letters)
    return Figures(
        seeds=seeds,
        kills_survived=len(chaos.kills),
        broker_restarts=chaos.broker_restarts,
        crashes=chaos.crashes,
        rows_baseline=len(calm.rows),
        rows_chaos=len(chaos.rows),
        rows_lost=sum(1 for s in want if s not in got),
        rows_duplicated=sum(n - 1 for n in got.values()) + extra,
        rows_different=different,
        dlq_explained=len(explained),
        dlq_unexplained=len(chaos.dead_letters) - len(explained),
        dlq_by_reason=dict(reasons),
        teacher_calls_paid_twice=_paid_twice(chaos),
        teacher_requests=int(chaos.sim["requests"]),
        faults_served=int(chaos.sim["faults_served"]),
        manifest_mismatches=mismatches,
        seconds_baseline=round(calm.seconds, 1),
        seconds_chaos=round(chaos.seconds, 1),
        kills_by_service=dict(Counter(chaos.kills)),
    )


def chaos(
    workdir: Path,
    kills: int = 20,
    broker_restarts: int = 1,
    copies: int = 12,
    fault_rate: float = 0.2,
    latency: str = "lognormal:150:0.5",
    port: int = 19392,
    seed: int = 1,
) -> Figures:
    """A fault-free run, then the same seeds under faults; the two compared."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    seeds = make_seeds(copies, workdir / "seeds.jsonl")
    count = len(seeds.read_text().splitlines())
    bootstrap = local_broker.up(port).bootstrap
    console.print(f"broker {bootstrap}; {count} seeds; fault-free run first")
    calm = run_pipeline(workdir / "calm", seeds, bootstrap, 0.0, latency)
    console.print(f"fault-free: {len(calm.rows)} rows in {calm.seconds:.0f} s")
    rng = random.Random(seed)
    # Spread over the first 80% of the fault-free duration; the chaos run is slower (every kill
    # costs a restart and a rebalance), so all of them land before its end.
    span = calm.seconds * 0.8
    plan = {
        "rng": rng,
        "port": port,
        "kill_at": sorted(rng.uniform(0.05, 1) * span for _ in range(kills)),
        "broker_at": [span * (0.4 + 0.2 * rng.random()) for _ in range(broker_restarts)],
    }
    console.print(f"chaos run: {kills} kills, {broker_restarts} broker restart(s), {fault_rate:.0%} faults")
    hurt = run_pipeline(workdir / "chaos", seeds, bootstrap, fault_rate, latency, chaos=plan)
    return compare(count, calm, hurt)


app = typer.Typer(add_completion=False)


@app.command()
def main(
    kills: int = 20,
    broker_restarts: int = 1,
    copies: Annotated[int, typer.Option(help="the example's 239 seeds this many times")] = 12,
    fault_rate: float = 0.2,
    latency: Annotated[str, typer.Option(help="teacher simulator latency")] = "lognormal:150:0.5",
    port: Annotated[int, typer.Option(help="the harness's own broker (never the shared 19092)")] = 19392,
    seed: int = 1,
    workdir: Path = REPO / ".cache/chaos",
) -> None:
    figures = chaos(workdir, kills, broker_restarts, copies, fault_rate, latency, port, seed)
    console.print_json(data=vars(figures) | {"ok": figures.ok})
    if not figures.ok:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
