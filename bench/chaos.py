"""Fault injection: the text-to-SQL example under SIGKILLs, broker restarts and kills, a stopped
backpressured step, a woken zombie, a burst of joins and 20% teacher faults, compared with a
fault-free run of the same seeds.

    python -m bench.chaos [--kills 20] [--broker-kills 2] [--copies 12] [--fault-rate 0.2]
    (or: make chaos)

Both runs use the harness's own broker (port 19392 by default, data under the work folder; the
shared 19092 broker is never touched), every service as a process (`LocalStack`) and the teacher
simulator over HTTP. Each run has a fresh pipeline name, so topics, dedup keys and the
generation cache start empty. The faults (bench/chaos_faults.py) fire at fractions of the run's
rows at the last stage. A supervisor (bench/chaos_supervisor.py) restarts services that exit,
as Kubernetes would, and nothing else: a run that only goes on once a live process is killed,
or does not finish within a bound, needs a hand, and the chaos run fails. Then the chaos
dataset must equal the fault-free one, less the rows the teacher dead-lettered after
exhausting its retries (each such DLQ entry is "explained").
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from confluent_kafka import OFFSET_BEGINNING, TopicPartition
from rich.console import Console

from bench import measure
from bench.chaos_diagnose import diagnose
from bench.chaos_faults import Director, Fault, FaultRecord, FaultSettings, plan_faults
from bench.chaos_flow import FlowWatcher
from bench.chaos_logs import by_fault
from bench.chaos_supervisor import Supervisor, pipeline_services
from fastdistill.dev import local_broker
from fastdistill.local_stack import LocalStack
from fastdistill.plan import PipelinePlan
from fastdistill.runs import finished, run_dir, run_states
from fastdistill.supervision import Exit
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
SESSION_TIMEOUT_MS = 6000
#: A stalled service ends itself after this (shared/runtime/watchdog.py), as a Kubernetes liveness
#: probe (3 x 15 s) would restart it; the 300 s default would make a stall cost the run minutes.
STALL_LIMIT_S = "45"
#: The issue's target for rows to flow again at the last stage after the broker answers.
RECOVERY_TARGET_S = 60.0

console = Console()


@dataclass(frozen=True)
class ChaosOptions:
    kills: int = 20
    #: controlled broker restarts (SIGTERM)
    broker_restarts: int = 1
    #: broker crashes (SIGKILL of the JVM), restarted on the same data folder
    broker_kills: int = 2
    backpressure_target: str | None = "teacher"
    zombie_target: str | None = "sql_eval"
    burst_target: str | None = "teacher"
    copies: int = 12
    fault_rate: float = 0.2
    latency: str = "lognormal:150:0.5"
    port: int = 19392
    seed: int = 1
    #: the teacher's max_buffered_rows (None: the example's); a small run needs a small buffer for
    #: the teacher to be full when it is stopped
    teacher_buffer: int | None = None
    #: a run not released within this needs a hand (and fails)
    timeout_s: float = 3600.0
    #: no new row at the last stage for this long, the run not released: it needs a hand
    stuck_after_s: float = 240.0


@dataclass
class RunResult:
    run_id: str
    seconds: float
    rows: list[dict[str, Any]]
    manifest: dict[str, dict[str, Any]]
    dead_letters: list[dict[str, Any]]
    sim: dict[str, Any]
    #: rows seen at the last stage (read_committed) during the run
    last_stage_rows: int
    faults: list[FaultRecord] = field(default_factory=list)
    skipped: list[Fault] = field(default_factory=list)
    #: services found exited that the harness did not kill (restarted, like a pod)
    exits: list[Exit] = field(default_factory=list)
    #: why the run needed a hand (a live process killed, a bound exceeded)
    needs_hand: list[str] = field(default_factory=list)
    log_digest: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ChaosPlan:
    faults: list[Fault]
    rng: random.Random
    broker: tuple[int, Path]
    settings: FaultSettings
    expected_rows: int


def make_seeds(copies: int, path: Path) -> Path:
    """The example's seeds `copies` times; copy k's task ids get a `~k` suffix and its max_tokens
    grows by k, so every copy is a new sample and a new request (the teacher's cache keys on the
    request body: same prompt and decode params would be answered from it), while the example's
    own duplicates stay duplicates. The simulator's answer does not depend on max_tokens."""
    base = [json.loads(line) for line in (EXAMPLE / "seeds.jsonl").read_text().splitlines()]
    lines = []
    for k in range(copies):
        for seed in base:
            copy = dict(seed)
            if k:
                copy["task_id"] = f"{seed['task_id']}~{k}"
                if seed.get("decode_profile"):
                    profile = seed["decode_profile"]
                    copy["decode_profile"] = profile | {"max_tokens": profile["max_tokens"] + k}
            lines.append(json.dumps(copy))
    path.write_text("\n".join(lines) + "\n")
    return path


def pipeline_file(folder: Path, prefix: str, teacher_buffer: int | None = None) -> Path:
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
            if teacher_buffer is not None:
                step["max_buffered_rows"] = teacher_buffer
        if step["step"] == "sql_eval":
            # A query budget no load reaches: on a busy box the 1 s default turns verdicts, and
            # the two runs must agree on every row.
            params["time_budget_ms"] = 30_000
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _stuck_summary(report: dict[str, Any]) -> str:
    """The gist of a stuck run's diagnosis: services not answering or not ok, open transactions."""
    unwell = [
        f"{name} ({'no answer' if not state['health'] else state['health'].get('stalled') or 'not ok'})"
        for name, state in report["services"].items()
        if not state["alive"] or not (state["health"] or {}).get("ok")
    ]
    open_txns = [
        f"{topic}[{p}] {lso}<{hw}"
        for topic, parts in report.get("topic_ends", {}).items()
        for p, (lso, hw) in parts.items()
        if lso < hw
    ]
    return f"services unwell: {unwell or 'none'}; open transactions: {open_txns or 'none'}"


def _hand(stack: LocalStack, supervisor: Supervisor) -> None:
    """What an operator would do to a stuck run: kill every live service, start it again."""
    with supervisor.lock:
        for name in [n for n in pipeline_services(stack) if stack.services[n].alive()]:
            stack.kill(name)
            supervisor.spawn(name)


def run_pipeline(
    folder: Path,
    seeds: Path,
    bootstrap: str,
    options: ChaosOptions,
    fault_rate: float,
    chaos: ChaosPlan | None = None,
) -> RunResult:
    """One run of the example on a fresh pipeline, under `chaos` if given."""
    path = pipeline_file(folder, "chaos" if chaos else "calm", options.teacher_buffer)
    spec = PipelineSpec.load(path)
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    clients.ensure_topics(clients.admin(kafka), pipeline_topics(spec))
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
        "FD_STALL_LIMIT_S": STALL_LIMIT_S,
    }
    stack = LocalStack(path, folder / "stack", env)
    run_id = f"{spec.name}-run"
    done = threading.Event()
    flow = FlowWatcher(kafka, spec.topic(spec.primary_leaf), PipelinePlan.build(spec).serde(), run_id)
    supervisor = Supervisor(stack, done)
    director: Director | None = None
    needs_hand: list[str] = []
    try:
        sim_url = stack.start_teacher_sim(
            EXAMPLE / "seeds.jsonl", latency=options.latency, fault_rate=fault_rate
        )
        stack.add_pipeline_services()
        stack.start(wait_healthy_s=180)
        flow.start()
        started, started_wall = time.monotonic(), time.time()
        # Produced in a child, as a user would; ingest validates the seeds and partitions them.
        stack.produce(seeds, run_id, timeout_s=600)
        if chaos is not None:
            supervisor.start()
            director = Director(
                stack,
                supervisor,
                flow,
                chaos.faults,
                chaos.expected_rows,
                chaos.rng,
                chaos.broker,
                chaos.settings,
                done,
                say=console.print,
            )
            director.start()
        hand_at = started
        while finished(spec, run_id) is None:
            for thread in (supervisor, director, flow):
                if thread is not None and thread.error is not None:
                    raise RuntimeError(f"{thread.name} failed") from thread.error
            if chaos is None and stack.dead():
                raise RuntimeError(f"services exited in the fault-free run: {stack.dead()}")
            now = time.monotonic()
            if now - started > options.timeout_s:
                needs_hand.append(f"not released after {options.timeout_s:.0f} s")
                raise TimeoutError(f"run {run_id} not released after {options.timeout_s:.0f} s: {needs_hand}")
            # A fault's own outage (the broker down, a process stopped) is not the run being stuck.
            idle = now - max(flow.last_at, hand_at, director.settled_at if director else 0.0)
            if idle > options.stuck_after_s:
                report = diagnose(stack, spec, kafka, folder / f"stuck-{len(needs_hand) + 1}")
                (folder / f"stuck-{len(needs_hand) + 1}.json").write_text(json.dumps(report, indent=2))
                if chaos is None:
                    raise TimeoutError(f"the fault-free run is stuck: {_stuck_summary(report)}")
                needs_hand.append(
                    f"no new row at the last stage for {idle:.0f} s ({flow.rows} rows): "
                    f"{_stuck_summary(report)} (stuck-{len(needs_hand) + 1}.json)"
                )
                console.print(f"  [red]stuck for {idle:.0f} s: every live service killed and restarted[/]")
                _hand(stack, supervisor)
                hand_at = time.monotonic()
            time.sleep(0.5)
        seconds = time.monotonic() - started
        done.set()
        if director is not None:
            director.join(300)
            needs_hand += director.needs_hand
        result = finished(spec, run_id)
        assert result is not None
        if not result["released"]:
            raise RuntimeError(f"run {run_id} was rejected: {result}")
        records = director.records if director else []
        return RunResult(
            run_id=run_id,
            seconds=seconds,
            rows=_dataset(spec, run_id),
            manifest=_manifest(spec, run_id),
            dead_letters=_dead_letters(spec, kafka, run_id),
            sim=_http_json(sim_url.removesuffix("/v1") + "/stats"),
            last_stage_rows=flow.rows,
            faults=records,
            skipped=director.skipped if director else [],
            exits=supervisor.exits,
            needs_hand=needs_hand,
            log_digest=by_fault(
                stack.workdir / "logs",
                [(f"{r.kind} {r.target} at {r.at:.0%}", r.started) for r in records],
                started_wall,
            ),
        )
    finally:
        done.set()  # the director and the supervisor stop acting before the services stop
        if director is not None:
            director.join(30)
        if supervisor.is_alive():
            supervisor.join(10)
        stack.stop()
        if director is not None:
            director.cleanup()
        if flow.is_alive():
            flow.stop()
        try:
            measure.delete_topics(clients.admin(kafka), f"fd.{spec.name}.")
        except Exception as exc:  # the broker may be the reason we are here; its folder goes anyway
            console.print(f"topics of {spec.name} not deleted: {exc}")


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
    kills_by_service: dict[str, int]
    broker_restarts: int
    broker_kills: int
    #: seconds from the broker answering to rows flowing again at the last stage, per restart/kill
    recovery_s: dict[str, float | None]
    stopped_backpressured: dict[str, Any] | None
    zombie: dict[str, Any] | None
    burst: dict[str, Any] | None
    faults_skipped: list[str]
    exits: list[str]
    runs_needing_a_hand: int
    needs_hand: list[str]
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

    def problems(self) -> list[str]:
        """Why this chaos run fails (empty: it passes)."""
        found = []
        for what in ("rows_lost", "rows_duplicated", "rows_different", "dlq_unexplained"):
            if getattr(self, what):
                found.append(f"{what}: {getattr(self, what)}")
        if self.manifest_mismatches:
            found.append(f"manifest mismatches: {self.manifest_mismatches}")
        if self.runs_needing_a_hand:
            found.append(f"needed a hand: {self.needs_hand}")
        if self.faults_skipped:
            found.append(f"faults never fired (the run ended first): {self.faults_skipped}")
        for label, seconds in self.recovery_s.items():
            if seconds is None or seconds >= RECOVERY_TARGET_S:
                target = f"target < {RECOVERY_TARGET_S:.0f}"
                found.append(f"{label}: rows flowed again after {seconds} s ({target})")
        stopped = self.stopped_backpressured
        if stopped is not None and (
            stopped.get("consumed_again_after_s") is None or not stopped.get("alive_after")
        ):
            found.append(f"the stopped backpressured step did not go on by itself: {stopped}")
        zombie = self.zombie
        if zombie is not None and (
            zombie.get("zombie_exit_code") is None
            or not zombie.get("zombie_fenced")
            or zombie.get("zombie_rebuilt_producer")
        ):
            found.append(f"the zombie did not end fenced by itself: {zombie}")
        return found

    @property
    def ok(self) -> bool:
        return not self.problems()


def _paid_twice(calm: RunResult, chaos: RunResult) -> int:
    """Successful teacher answers beyond those of the fault-free run (each distinct request paid
    once there; answers are cached): anything more was an answer paid for and lost, by a teacher
    killed or fenced before its transaction committed, or to a client that had gone."""
    return int(chaos.sim["outcomes"].get("ok", 0)) - int(calm.sim["outcomes"].get("ok", 0))


def _manifest_mismatches(calm: RunResult, chaos: RunResult, excused: int) -> list[str]:
    """Stages whose count or content hash differ. The manifest hashes rows as released (volatile
    teacher columns out), so every stage's hash must agree, except from the teacher on when rows
    were excused (dead-lettered by the teacher): there only the counts, less those, are compared."""
    stages = list(calm.manifest)
    mismatches = []
    for at, (stage, entry) in enumerate(calm.manifest.items()):
        other = chaos.manifest.get(stage)
        late = excused and at >= stages.index("teacher")
        if (
            other is None
            or other["count"] != entry["count"] - (excused if late else 0)
            or (not late and other["content_hash"] != entry["content_hash"])
        ):
            mismatches.append(stage)
    return mismatches


def _fault_detail(chaos: RunResult, kind: str) -> dict[str, Any] | None:
    records = [r for r in chaos.faults if r.kind == kind]
    return records[0].detail | {"target": records[0].target} if records else None


def compare(seeds: int, calm: RunResult, chaos: RunResult) -> Figures:
    letters = chaos.dead_letters
    explained = [d for d in letters if d["step"] == "teacher" and d["error_type"] == "GenerationFailed"]
    excused = {d["sample_id"] for d in explained}
    want = {r["sample_id"]: r for r in calm.rows if r["sample_id"] not in excused}
    got = Counter(r["sample_id"] for r in chaos.rows)
    different = sum(1 for r in chaos.rows if r["sample_id"] in want and r != want[r["sample_id"]])
    extra = sum(1 for s in got if s not in want)
    reasons = Counter(f"{d['step']}: {d['error_type']}" for d in chaos.dead_letters)
    broker = [r for r in chaos.faults if r.kind in ("broker_kill", "broker_restart")]
    return Figures(
        seeds=seeds,
        kills_survived=sum(1 for r in chaos.faults if r.kind == "kill"),
        kills_by_service=dict(Counter(r.target for r in chaos.faults if r.kind == "kill")),
        broker_restarts=sum(1 for r in broker if r.kind == "broker_restart"),
        broker_kills=sum(1 for r in broker if r.kind == "broker_kill"),
        recovery_s={f"{r.kind} {i}": r.detail.get("recovery_s") for i, r in enumerate(broker, 1)},
        stopped_backpressured=_fault_detail(chaos, "stop_backpressured"),
        zombie=_fault_detail(chaos, "zombie"),
        burst=_fault_detail(chaos, "burst"),
        faults_skipped=[f"{f.kind} at {f.at:.0%}" for f in chaos.skipped],
        exits=[f"{e.name} (exit {e.code}): {e.reason}" for e in chaos.exits],
        runs_needing_a_hand=int(bool(chaos.needs_hand)),
        needs_hand=chaos.needs_hand,
        rows_baseline=len(calm.rows),
        rows_chaos=len(chaos.rows),
        rows_lost=sum(1 for s in want if s not in got),
        rows_duplicated=sum(n - 1 for n in got.values()) + extra,
        rows_different=different,
        dlq_explained=len(explained),
        dlq_unexplained=len(chaos.dead_letters) - len(explained),
        dlq_by_reason=dict(reasons),
        teacher_calls_paid_twice=_paid_twice(calm, chaos),
        teacher_requests=int(chaos.sim["requests"]),
        faults_served=int(chaos.sim["faults_served"]),
        manifest_mismatches=_manifest_mismatches(calm, chaos, len(excused)),
        seconds_baseline=round(calm.seconds, 1),
        seconds_chaos=round(chaos.seconds, 1),
    )


def chaos(workdir: Path, options: ChaosOptions | None = None) -> Figures:
    """A fault-free run, then the same seeds under faults; the two compared. The figures, every
    fault's record and the services' log digest are kept in `workdir/report.json`."""
    options = options or ChaosOptions()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    seeds = make_seeds(options.copies, workdir / "seeds.jsonl")
    count = len(seeds.read_text().splitlines())
    # The harness's own broker on a folder of its own: killed and restarted at will.
    data_dir = workdir / "broker"
    bootstrap = local_broker.up(options.port, data_dir).bootstrap
    try:
        console.print(f"broker {bootstrap}; {count} seeds; fault-free run first")
        calm = run_pipeline(workdir / "calm", seeds, bootstrap, options, 0.0)
        console.print(f"fault-free: {len(calm.rows)} rows in {calm.seconds:.0f} s")
        rng = random.Random(options.seed)
        plan = ChaosPlan(
            faults=plan_faults(
                rng,
                options.kills,
                options.broker_kills,
                options.backpressure_target,
                options.zombie_target,
                options.burst_target,
                options.broker_restarts,
            ),
            rng=rng,
            broker=(options.port, data_dir),
            settings=FaultSettings(session_timeout_s=SESSION_TIMEOUT_MS / 1000),
            expected_rows=calm.last_stage_rows,
        )
        console.print(f"chaos run: {len(plan.faults)} faults, {options.fault_rate:.0%} teacher faults")
        hurt = run_pipeline(workdir / "chaos", seeds, bootstrap, options, options.fault_rate, plan)
    finally:
        local_broker.stop_hard(options.port, data_dir)
    figures = compare(count, calm, hurt)
    report = {
        "options": asdict(options),
        "figures": asdict(figures),
        "problems": figures.problems(),
        "faults": [asdict(r) for r in hurt.faults],
        "log_digest": hurt.log_digest,
    }
    (workdir / "report.json").write_text(json.dumps(report, indent=2, default=str))
    return figures


app = typer.Typer(add_completion=False)


@app.command()
def main(
    kills: int = 20,
    broker_restarts: int = 1,
    broker_kills: int = 2,
    copies: Annotated[int, typer.Option(help="the example's 239 seeds this many times")] = 12,
    fault_rate: float = 0.2,
    latency: Annotated[str, typer.Option(help="teacher simulator latency")] = "lognormal:150:0.5",
    port: Annotated[int, typer.Option(help="the harness's own broker (never the shared 19092)")] = 19392,
    seed: int = 1,
    workdir: Path = REPO / ".cache/chaos",
) -> None:
    options = ChaosOptions(
        kills=kills,
        broker_restarts=broker_restarts,
        broker_kills=broker_kills,
        copies=copies,
        fault_rate=fault_rate,
        latency=latency,
        port=port,
        seed=seed,
    )
    figures = chaos(workdir, options)
    console.print_json(data=asdict(figures) | {"ok": figures.ok})
    for problem in figures.problems():
        console.print(f"[red]{problem}[/]")
    console.print(f"report: {workdir / 'report.json'}")
    if not figures.ok:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
