"""The `fastdistill` command: broker, topics, services, ingest, runs."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live

from fastdistill.ingest import read_seeds
from fastdistill.plan import PipelinePlan
from fastdistill.services.step import StepService
from fastdistill.topics import pipeline_topics
from shared.config import KafkaSettings, RegistrySettings, ServiceSettings
from shared.kafka import clients
from shared.kafka.run_producer import produce_run
from shared.pipeline import SEEDS_STAGE, PipelineSpec
from shared.runtime.runner import StepFailed

app = typer.Typer(help="Kafka-native distillation of training data from a teacher LLM.", no_args_is_help=True)
dev = typer.Typer(help="Development helpers.", no_args_is_help=True)
broker = typer.Typer(help="A local single-node Apache Kafka (KRaft) from Maven jars.", no_args_is_help=True)
topics = typer.Typer(help="Topics of a pipeline.", no_args_is_help=True)
app.add_typer(dev, name="dev")
dev.add_typer(broker, name="broker")
app.add_typer(topics, name="topics")
console = Console(stderr=True)

PipelineOpt = Annotated[
    Path | None, typer.Option("--pipeline", "-p", help="pipeline YAML (default: FD_PIPELINE)")
]


def _spec(pipeline: Path | None) -> PipelineSpec:
    return PipelineSpec.load(pipeline or ServiceSettings().pipeline)


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# -- broker ------------------------------------------------------------------------------------
@broker.command("up")
def broker_up(port: int = 19092) -> None:
    """Fetch the jars (first time), format storage, start the broker and wait until it answers."""
    from fastdistill.dev import local_broker

    info = local_broker.up(port=port)
    console.print(f"broker up at {info.bootstrap}")
    print(info.bootstrap)


@broker.command("down")
def broker_down(port: int = 19092) -> None:
    """Stop the local broker (SIGTERM, then SIGKILL after a timeout)."""
    from fastdistill.dev import local_broker

    local_broker.down(port=port)
    console.print("broker down")


@broker.command("status")
def broker_status(port: int = 19092) -> None:
    from fastdistill.dev import local_broker

    running = local_broker.is_running(port=port)
    console.print("running" if running else "stopped")
    raise typer.Exit(0 if running else 1)


# -- topics ------------------------------------------------------------------------------------
@topics.command("create")
def topics_create(pipeline: PipelineOpt = None) -> None:
    """Create the pipeline's topics (partitions and compaction from the YAML); existing ones stay."""
    spec = _spec(pipeline)
    created = clients.ensure_topics(clients.admin(KafkaSettings()), pipeline_topics(spec))
    console.print(f"{len(created)} topics created for pipeline {spec.name}: {created}")


# -- ingest ------------------------------------------------------------------------------------
@app.command()
def produce(
    file: Path,
    pipeline: PipelineOpt = None,
    run_id: Annotated[str | None, typer.Option(help="default: derived from the file and the time")] = None,
    head: Annotated[int | None, typer.Option(help="only the first N records of the file")] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="early stop (like Take): the run ends once N rows passed the final stage, and its "
            "dataset is the N of them with the lowest source index",
        ),
    ] = None,
) -> None:
    """Validate seeds and produce them as one run: valid rows to the seeds topic, invalid to the DLQ.
    A run id is single-use: one that was produced before is refused."""
    from rich.markup import escape

    from fastdistill.dead_letters import safe
    from fastdistill.ingest import SeedFileError
    from shared.kafka.run_producer import RunIdTaken
    from shared.kafka.topic_end import TopicEndNotReached

    spec = _spec(pipeline)
    plan = PipelinePlan.build(spec)
    run = run_id or _new_run_id(file)
    try:
        seeds = read_seeds(file, plan.seed_model(), run, head)
    except (OSError, SeedFileError) as exc:
        message = f"cannot read seeds {file}: {exc}"
        console.print(f"[red]{escape(message)}[/]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    kafka = KafkaSettings()
    clients.ensure_topics(clients.admin(kafka), pipeline_topics(spec))
    try:
        summary = produce_run(
            kafka,
            plan.serde(RegistrySettings().client()),
            run_id=run,
            topic=spec.topic(SEEDS_STAGE),
            schema=plan.schema_name(SEEDS_STAGE),
            dlq_topic=spec.dlq_topic,
            rows=seeds.rows,
            dead_letters=seeds.dead_letters,
            batch_size=spec.batch_size,
            limit=limit,
            control_topic=spec.control_topic,
            origins=seeds.origins,
        )
    except (RunIdTaken, TopicEndNotReached) as exc:
        console.print(f"[red]refused: {escape(str(exc))}[/]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(
        f"run {summary.run_id}: {summary.rows} seeds in {summary.batches} batches, "
        f"{summary.dead_letters} invalid to {spec.dlq_topic}"
    )
    for record in seeds.dead_letters[:20]:
        reason = escape(safe(record["error_message"]))
        console.print(f"  [yellow]rejected[/] {reason}", highlight=False, soft_wrap=True)
    print(summary.run_id)


def _new_run_id(file: Path) -> str:
    digest = hashlib.sha256(file.read_bytes()).hexdigest()[:8]
    return f"run-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{digest}"


# -- services ----------------------------------------------------------------------------------
@app.command()
def serve(step: str, pipeline: PipelineOpt = None) -> None:
    """Run one pipeline step (by its id in the YAML) as a Kafka service; also `sink`, `coordinator`."""
    settings = ServiceSettings()
    _logging(settings.log_level)
    spec = _spec(pipeline)
    plan = PipelinePlan.build(spec)
    kafka = KafkaSettings()
    serde = plan.serde(RegistrySettings().client())
    if step == "sink":
        from fastdistill.services.sink import SinkService

        asyncio.run(SinkService(plan, serde, kafka, settings).run())
        return
    if step == "coordinator":
        from fastdistill.services.coordinator import CoordinatorService

        asyncio.run(CoordinatorService(plan, serde, kafka, settings).run())
        return
    service = StepService(plan.steps[step], plan.wiring(step), serde, kafka, settings)
    try:
        asyncio.run(service.run())
    except StepFailed as exc:
        console.print(f"[red]FAIL_FAST:[/] {exc}")
        sys.exit(3)


@app.command()
def validate(
    pipeline: Annotated[Path, typer.Argument(help="the pipeline YAML")],
    mermaid: Annotated[bool, typer.Option(help="print the DAG as a Mermaid flowchart instead")] = False,
) -> None:
    """Check a pipeline as a whole (steps, params, fields each step reads, schemas, routes, gates)
    without a broker, and show its DAG."""
    from fastdistill.dag_view import mermaid as to_mermaid
    from fastdistill.dag_view import text_tree
    from fastdistill.plan import PlanError

    try:
        spec = PipelineSpec.load(pipeline)
        PipelinePlan.build(spec)
    except PlanError as exc:
        for problem in exc.problems:
            console.print(f"[red]{pipeline}:[/] {problem}", highlight=False)
        raise typer.Exit(2) from None
    if mermaid:
        print(to_mermaid(spec), end="")
        return
    Console().print(text_tree(spec))
    console.print(f"[green]{pipeline}: {len(spec.steps)} steps, leaves: {', '.join(spec.leaves)}[/]")


@app.command()
def steps() -> None:
    """The step catalogue: every step a pipeline may name, its params (operational ones marked)."""
    from rich.table import Table

    from shared.step import STEPS

    table = Table("step", "params (name: type = default)", "what it does", show_lines=True)
    for name in STEPS.names():
        cls = STEPS.get(name)
        operational = cls.Params.operational_fields()
        params = []
        for field, info in cls.Params.model_fields.items():
            default = "required" if info.is_required() else repr(info.get_default(call_default_factory=True))
            kind = _type_name(info.annotation)
            params.append(f"{field}: {kind} = {default}" + (" (operational)" if field in operational else ""))
        doc = (sys.modules[cls.__module__].__doc__ or cls.__doc__ or "").strip()
        table.add_row(name, "\n".join(params) or "-", doc.splitlines()[0] if doc else "")
    Console().print(table)


def _type_name(annotation: object) -> str:
    text = str(annotation).replace("typing.", "")
    # list[str] prints itself; a plain class prints as <class 'str'>
    return text if "[" in text else getattr(annotation, "__name__", text)


@app.command("teacher-sim")
def teacher_sim(
    seeds: Annotated[Path, typer.Option(help="JSONL whose instruction→gold_sql pairs are the answer book")],
    host: str = "127.0.0.1",
    port: int = 8800,
    latency: Annotated[str, typer.Option(help="fixed:MS or lognormal:MEDIAN_MS:SIGMA")] = "fixed:0",
    fault_rate: float = 0.0,
    seed: int = 0,
) -> None:
    """An OpenAI-compatible teacher simulator (the embedded default teacher)."""
    from fastdistill.dev.teacher_sim.server import SimConfig, run

    run(host, port, SimConfig(seeds_path=seeds, latency=latency, fault_rate=fault_rate, seed=seed))


@app.command()
def status(
    run_id: Annotated[str | None, typer.Argument(help="one run (default: all runs)")] = None,
    pipeline: PipelineOpt = None,
    watch: Annotated[bool, typer.Option(help="refresh until the run is finished")] = False,
) -> None:
    """Live progress of runs per stage, and the gate verdict once a run is finished."""
    from fastdistill.runs import run_states
    from fastdistill.status_view import render_status

    spec = _spec(pipeline)
    with Live(console=Console(), refresh_per_second=2, transient=False) as live:
        while True:
            states = run_states(spec)
            chosen = {k: v for k, v in states.items() if run_id in (None, k)}
            live.update(render_status(spec, chosen))
            if not watch or (all(s["status"] != "running" for s in chosen.values()) and chosen):
                break
            time.sleep(1)
    if run_id is not None and run_id not in states:
        console.print(f"[red]no run {run_id!r} in {spec.runs_topic}[/]")
        raise typer.Exit(1)


@app.command()
def dlq(
    run_id: Annotated[str | None, typer.Argument(help="one run (default: every dead letter)")] = None,
    step: Annotated[str | None, typer.Option(help="only this step's dead letters (e.g. produce)")] = None,
    raw: Annotated[
        int, typer.Option("--raw", min=0, help="also print the first N dead letters whole, raw bytes too")
    ] = 0,
    pipeline: PipelineOpt = None,
) -> None:
    """Read the dead-letter topic to its end: counts by (step, error type) with an example each."""
    from fastdistill.dead_letters import read_dead_letters, record_lines, summary_lines

    spec = _spec(pipeline)
    plan = PipelinePlan.build(spec)
    letters = read_dead_letters(
        KafkaSettings(), plan.serde(RegistrySettings().client()), spec.dlq_topic, run_id=run_id, step=step
    )
    for line in summary_lines(letters, spec.dlq_topic, run_id, step):
        print(line)
    shown = letters.records[:raw]
    for number, record in enumerate(shown, 1):
        for line in record_lines(record, number, len(letters.records)):
            print(line)


@app.command()
def report(run_id: str, pipeline: PipelineOpt = None) -> None:
    """Print a finished run's manifest, quality report, timing report and gate verdict (JSON)."""
    from fastdistill.runs import run_states

    spec = _spec(pipeline)
    state = run_states(spec).get(run_id)
    if state is None or state.get("reports") is None:
        console.print(f"[red]run {run_id!r} has no reports yet (status: {state and state['status']})[/]")
        raise typer.Exit(1)
    Console().print_json(data={"verdict": state["verdict"], **state["reports"]})


@app.command()
def replay(
    run: Annotated[str, typer.Argument(help="the finished run to replay")],
    from_step: Annotated[
        str,
        typer.Option(
            "--from",
            help="step to recompute from; auto: the first step whose signature changed since the run",
        ),
    ] = "auto",
    pipeline: PipelineOpt = None,
    run_id: Annotated[str | None, typer.Option(help="default: <run>.replay-<time>")] = None,
) -> None:
    """Re-run a finished run from a step as a new run, from that step's input as the run left it."""
    from fastdistill.replay import ReplayError, replay_run

    spec = _spec(pipeline)
    plan = PipelinePlan.build(spec)
    serde = plan.serde(RegistrySettings().client())
    try:
        summary = replay_run(plan, KafkaSettings(), serde, run, from_step, run_id)
    except (ReplayError, KeyError) as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    console.print(
        f"run {summary.run_id}: replay of {summary.replay_of} from {summary.from_step}, "
        f"{summary.rows} rows of {summary.input_stage} in {summary.batches} batches"
    )
    print(summary.run_id)


@app.command()
def up(
    pipeline: PipelineOpt = None,
    seeds: Annotated[Path | None, typer.Option(help="produce this seed file as a run once all is up")] = None,
    exit_when_done: Annotated[bool, typer.Option(help="stop everything once that run is finished")] = False,
    workdir: Annotated[Path, typer.Option(help="logs of the local processes")] = Path(".cache/stack"),
    timeout_s: float = 900,
    prometheus_port: Annotated[int, typer.Option(help="local Prometheus, if installed; 0 = none")] = 9090,
) -> None:
    """The whole pipeline locally: broker (unless KAFKA_BOOTSTRAP_SERVERS is set), topics, the
    teacher simulator (unless OPENAI_BASE_URL is set), every service as a process, and Prometheus
    scraping them when the `prometheus` binary is installed."""
    import os
    import shutil

    from fastdistill.local_stack import LocalStack
    from fastdistill.prometheus_local import start_prometheus, stop_prometheus, write_config
    from fastdistill.runs import wait_for_release

    path = pipeline or Path(ServiceSettings().pipeline)
    spec = PipelineSpec.load(path)
    if "KAFKA_BOOTSTRAP_SERVERS" not in os.environ:
        from fastdistill.dev import local_broker

        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = local_broker.up().bootstrap
    clients.ensure_topics(clients.admin(KafkaSettings()), pipeline_topics(spec))
    stack = LocalStack(path, workdir)
    if "OPENAI_BASE_URL" not in os.environ:
        answer_book = seeds or Path(path).parent / "seeds.jsonl"
        console.print(f"teacher simulator at {stack.start_teacher_sim(answer_book)}")
    stack.add_pipeline_services()
    prometheus = None
    try:
        stack.start()
        console.print(f"{len(stack.services)} processes up; logs in {workdir}/logs")
        if prometheus_port and shutil.which("prometheus"):
            targets = {name: svc.port for name, svc in stack.services.items()}
            config = write_config(targets, workdir / "prometheus.yml", scrape_interval="5s")
            prometheus = start_prometheus(config, workdir / "prometheus", prometheus_port)
            console.print(f"prometheus at http://127.0.0.1:{prometheus_port}")
        if seeds is None:
            while not stack.dead():
                time.sleep(1)
            raise RuntimeError(f"services exited: {stack.dead()}")
        run_id = _new_run_id(seeds)
        produce(seeds, path, run_id)
        result = wait_for_release(spec, run_id, timeout_s, stack)
        console.print_json(data=result)
        if not exit_when_done:
            while not stack.dead():
                time.sleep(1)
    finally:
        if prometheus is not None:
            stop_prometheus(prometheus)
        stack.stop()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
