"""The `fastdistill` command: broker, topics, services, ingest, runs."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console

from fastdistill.broker_check import answering_kafka, require_broker
from fastdistill.commands import inspect as inspect_commands
from fastdistill.commands import runs as runs_commands
from fastdistill.commands import stack as stack_commands
from fastdistill.errors import Debug, FriendlyGroup, UserError
from fastdistill.ingest import read_seeds
from fastdistill.pipeline_file import load_plan, load_spec
from fastdistill.plan import PipelinePlan
from fastdistill.services.step import StepService
from fastdistill.supervision import Exit, RestartPolicy
from fastdistill.topics import pipeline_topics
from shared.config import KafkaSettings, RegistrySettings, ServiceSettings
from shared.kafka import clients
from shared.kafka.run_producer import produce_run
from shared.pipeline import SEEDS_STAGE
from shared.runtime.runner import StepFailed

app = typer.Typer(
    cls=FriendlyGroup,
    help="Kafka-native distillation of training data from a teacher LLM.",
    no_args_is_help=True,
)
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


@app.callback()
def _options(
    debug: Annotated[
        bool, typer.Option("--debug", envvar="FD_DEBUG", help="show the traceback of an error")
    ] = False,
) -> None:
    """Errors are a few lines saying what is wrong and what to do; --debug shows the traceback."""
    Debug.on = debug


runs_commands.register(app)
inspect_commands.register(app, topics)
stack_commands.register(app)


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# -- broker ------------------------------------------------------------------------------------
@broker.command("up")
def broker_up(port: int = 19092) -> None:
    """Fetch the jars (first time), format storage, start the broker and wait until it answers."""
    from fastdistill.dev import local_broker

    info = local_broker.up(port=port)
    console.print(f"broker {'started' if info.started else 'already running'} at {info.bootstrap}")
    print(info.bootstrap)


@broker.command("down")
def broker_down(port: int = 19092) -> None:
    """Stop this checkout's local broker (SIGTERM, then SIGKILL after a timeout); a broker of
    another checkout on the same port is left alone."""
    from fastdistill.dev import local_broker

    stopped = local_broker.down(port=port)
    if stopped is not None:
        console.print(f"broker down (pid {stopped})")
    else:
        console.print(f"no broker of this checkout on port {port}: nothing stopped")
        _say_foreign(port)


@broker.command("status")
def broker_status(port: int = 19092) -> None:
    """Whether this checkout's local broker runs (its pid file in .cache/kafka/data-PORT, or
    FD_CACHE_DIR); exit code 0 when it does, 1 when not."""
    from fastdistill.dev import local_broker

    pid = local_broker.pid(port=port)
    if pid is not None and local_broker.answers(port):
        console.print(
            f"running: pid {pid} at {local_broker.bootstrap(port)}, data {local_broker.data_dir_for(port)}"
        )
        raise typer.Exit(0)
    console.print("starting (not answering yet)" if pid is not None else "stopped")
    _say_foreign(port)
    raise typer.Exit(1)


def _say_foreign(port: int) -> None:
    from fastdistill.dev import local_broker

    other = local_broker.foreign_listener(port)
    if other is not None:
        console.print(f"port {port} is used by {other}, not by this checkout's broker")


# -- topics ------------------------------------------------------------------------------------
@topics.command("create")
def topics_create(pipeline: PipelineOpt = None) -> None:
    """Create the pipeline's topics (partitions and compaction from the YAML); existing ones stay."""
    spec = load_spec(pipeline)
    created = clients.ensure_topics(clients.admin(answering_kafka()), pipeline_topics(spec))
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
    no_cache: Annotated[
        bool,
        typer.Option(
            "--no-cache",
            help="answer no row of this run from the generation cache (every row asks the teacher; "
            "the answers still refresh the cache)",
        ),
    ] = False,
) -> None:
    """Validate seeds and produce them as one run: valid rows to the seeds topic, invalid to the DLQ.
    A run id is single-use: one that was produced before is refused."""
    from rich.markup import escape

    from fastdistill.dead_letters import safe
    from fastdistill.ingest import SeedFileError
    from shared.kafka.run_producer import RunIdTaken
    from shared.kafka.topic_end import TopicEndNotReached

    _, spec, plan = load_plan(pipeline)
    if not file.is_file():
        raise UserError(f"{file}: no such seed file", "give the path of a JSONL file of seeds")
    run = run_id or _new_run_id(file)
    try:
        seeds = read_seeds(file, plan.seed_model(), run, head)
    except (OSError, SeedFileError) as exc:
        raise UserError(f"cannot read seeds {file}: {exc}") from None
    kafka = KafkaSettings()
    require_broker(kafka)
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
            cache=not no_cache,
            seed_file={"name": file.name, "sha256": _file_sha256(file)},
        )
    except (RunIdTaken, TopicEndNotReached) as exc:
        raise UserError(f"refused: {exc}") from None
    console.print(
        f"run {summary.run_id}: {summary.rows} seeds in {summary.batches} batches, "
        f"{summary.dead_letters} invalid to {spec.dlq_topic}"
    )
    for record in seeds.dead_letters[:20]:
        reason = escape(safe(record["error_message"]))
        console.print(f"  [yellow]rejected[/] {reason}", highlight=False, soft_wrap=True)
    print(summary.run_id)


def _file_sha256(file: Path) -> str:
    with open(file, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _new_run_id(file: Path) -> str:
    digest = hashlib.sha256(file.read_bytes()).hexdigest()[:8]
    return f"run-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{digest}"


# -- services ----------------------------------------------------------------------------------
@app.command()
def serve(step: str, pipeline: PipelineOpt = None) -> None:
    """Run one pipeline step (by its id in the YAML) as a Kafka service; also `sink`, `coordinator`."""
    settings = ServiceSettings()
    _logging(settings.log_level)
    _, _, plan = load_plan(pipeline)
    kafka = KafkaSettings()
    serde = plan.serde(RegistrySettings().client())
    _tune_gc()
    if step == "sink":
        from fastdistill.services.sink import SinkService

        asyncio.run(SinkService(plan, serde, kafka, settings).run())
        return
    if step == "coordinator":
        from fastdistill.services.coordinator import CoordinatorService

        asyncio.run(CoordinatorService(plan, serde, kafka, settings).run())
        return
    try:
        wiring = plan.wiring(step)
    except KeyError as exc:
        known = ", ".join([*plan.services, "sink", "coordinator"])
        raise UserError(f"{exc.args[0]}", f"serve one of: {known}") from None
    service = StepService(plan.service_steps(step), wiring, serde, kafka, settings, plan.stage_stats)
    try:
        asyncio.run(service.run())
    except StepFailed as exc:
        console.print(f"[red]FAIL_FAST:[/] {exc}")
        sys.exit(3)


def _tune_gc() -> None:
    """A service makes many short-lived objects per row while it holds long-lived ones (stores,
    rows in flight): with the default gen-0 threshold (700) the collector ran every few hundred
    rows and rescanned the survivors, 20% of the CPU of the CPU chain (broker-free measure: 145 ->
    116 µs a row). What exists at start is frozen out of every scan."""
    import gc

    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


@app.command()
def validate(
    pipeline: Annotated[Path, typer.Argument(help="the pipeline YAML")],
    mermaid: Annotated[bool, typer.Option(help="print the DAG as a Mermaid flowchart instead")] = False,
) -> None:
    """Check a pipeline as a whole (steps, params, fields each step reads, schemas, routes, gates)
    without a broker, and show its DAG."""
    from fastdistill.dag_view import mermaid as to_mermaid
    from fastdistill.dag_view import text_tree

    _, spec, _ = load_plan(pipeline, every_problem=True)
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
        params = _param_lines(cls.Params)
        doc = (sys.modules[cls.__module__].__doc__ or cls.__doc__ or "").strip()
        table.add_row(name, "\n".join(params) or "-", doc.splitlines()[0] if doc else "")
    Console().print(table)


def _param_lines(model: type[BaseModel], prefix: str = "") -> list[str]:
    """One line per param; a nested model's (an LLM step's `llm:`) as `llm.<name>`."""
    from shared.step import OPERATIONAL

    lines = []
    for field, info in model.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            lines += _param_lines(info.annotation, f"{prefix}{field}.")
            continue
        default = "required" if info.is_required() else repr(info.get_default(call_default_factory=True))
        extra = info.json_schema_extra
        operational = isinstance(extra, dict) and bool(extra.get(OPERATIONAL))
        kind = _type_name(info.annotation)
        lines.append(f"{prefix}{field}: {kind} = {default}" + (" (operational)" if operational else ""))
    return lines


def _type_name(annotation: object) -> str:
    text = str(annotation).replace("typing.", "")
    # list[str] prints itself; a plain class prints as <class 'str'>
    return text if "[" in text else getattr(annotation, "__name__", text)


@app.command("teacher-sim")
def teacher_sim(
    seeds: Annotated[
        Path | None,
        typer.Option(help="JSONL whose instruction→gold_sql pairs are the text-to-SQL answer book"),
    ] = None,
    host: str = "127.0.0.1",
    port: int = 8800,
    latency: Annotated[str, typer.Option(help="fixed:MS or lognormal:MEDIAN_MS:SIGMA")] = "fixed:0",
    fault_rate: float = 0.0,
    seed: int = 0,
    api_key: Annotated[
        str | None, typer.Option(envvar="FD_SIM_API_KEY", help="answer 401 to requests without this key")
    ] = None,
    judge_malformed_rate: Annotated[float, typer.Option(help="share of unreadable judge answers")] = 0.1,
    json_invalid_rate: Annotated[float, typer.Option(help="share of answers breaking a JSON schema")] = 0.2,
    batch_delay_s: Annotated[float, typer.Option(help="Batch API: seconds until a batch completes")] = 2.0,
    batch_failure_rate: Annotated[float, typer.Option(help="Batch API: share of rows failed")] = 0.0,
) -> None:
    """A teacher simulator: OpenAI-compatible and Anthropic Messages routes, seeded answers for any
    prompt (text-to-SQL from the answer book, judges, JSON schemas, Self-/Evol-Instruct), and the
    Batch API (/v1/files, /v1/batches)."""
    from fastdistill.dev.teacher_sim.server import SimConfig, run

    config = SimConfig(
        seeds_path=seeds,
        latency=latency,
        fault_rate=fault_rate,
        seed=seed,
        api_key=api_key,
        judge_malformed_rate=judge_malformed_rate,
        json_invalid_rate=json_invalid_rate,
        batch_delay_s=batch_delay_s,
        batch_failure_rate=batch_failure_rate,
    )
    run(host, port, config)


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

    spec = load_spec(pipeline)
    plan = PipelinePlan.build(spec)
    letters = read_dead_letters(
        answering_kafka(), plan.serde(RegistrySettings().client()), spec.dlq_topic, run_id=run_id, step=step
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

    spec = load_spec(pipeline)
    state = run_states(spec, answering_kafka()).get(run_id)
    if state is None:
        raise UserError(f"no run {run_id!r} in {spec.runs_topic}", "`fastdistill runs` lists runs", code=1)
    if state["reports"] is None:
        raise UserError(f"run {run_id!r} is {state['status']}: no reports before it is done", code=1)
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

    spec = load_spec(pipeline)
    plan = PipelinePlan.build(spec)
    serde = plan.serde(RegistrySettings().client())
    try:
        summary = replay_run(plan, answering_kafka(), serde, run, from_step, run_id)
    except (ReplayError, KeyError) as exc:
        raise UserError(str(exc.args[0] if isinstance(exc, KeyError) else exc), code=1) from None
    console.print(
        f"run {summary.run_id}: replay of {summary.replay_of} from {summary.from_step}, "
        f"{summary.rows} rows of {summary.input_stage} in {summary.batches} batches"
    )
    print(summary.run_id)


@app.command()
def export(
    run_id: Annotated[str, typer.Argument(help="a released run")],
    format: Annotated[str, typer.Option("--format", "-f", help="a sink format, e.g. hf, chat, preference")],
    to: Annotated[Path | None, typer.Option(help="default: <run folder>/exports/<format>")] = None,
    options: Annotated[
        str | None,
        typer.Option(help="the format's options as JSON (default: the pipeline's sink options for it)"),
    ] = None,
    pipeline: PipelineOpt = None,
) -> None:
    """Write a released run in another format from its released files (nothing recomputed)."""
    import json

    from pydantic import ValidationError

    from fastdistill.runs import run_dir
    from services.sink.export import export_run
    from services.sink.formats import build_format
    from services.sink.released import NotReleased, ReleasedRun
    from shared.registry import UnknownName

    spec = load_spec(pipeline)
    configured = dict(spec.sink.format_entries()).get(format, {})
    try:
        fmt = build_format(format, json.loads(options) if options is not None else configured)
        run = ReleasedRun.open(run_dir(spec, run_id))
        target = to or run.folder / "exports" / format
        record = export_run(run, fmt, target)
    except (UnknownName, ValidationError, ValueError, NotReleased) as exc:
        raise UserError(f"export refused: {exc}") from None
    for name in record["files"]:
        note = record["notes"].get(name)
        print(f"{target / name}" + (f"  {json.dumps(note)}" if note else ""))


@app.command()
def push(
    run_id: Annotated[str, typer.Argument(help="a released run")],
    repo_id: Annotated[str, typer.Option("--repo-id", help="the dataset repository, ORG/NAME")],
    private: Annotated[bool | None, typer.Option(help="create the repository private")] = None,
    revision: Annotated[str | None, typer.Option(help="branch to commit to (default: main)")] = None,
    pipeline: PipelineOpt = None,
) -> None:
    """Publish a released run (data, card, RELEASED.json, reports) to a Hugging Face dataset repo
    through huggingface_hub: HF_ENDPOINT and HF_TOKEN (or a stored login) as it reads them."""
    from huggingface_hub.errors import HfHubHTTPError

    from fastdistill.runs import run_dir
    from services.sink.hub import push_run
    from services.sink.released import NotReleased, ReleasedRun

    spec = load_spec(pipeline)
    try:
        pushed = push_run(
            ReleasedRun.open(run_dir(spec, run_id)), repo_id, private=private, revision=revision
        )
    except (NotReleased, HfHubHTTPError, ValueError) as exc:
        raise UserError(f"push failed: {exc}") from None
    console.print(f"{len(pushed.files)} files pushed to {pushed.repo_url} in commit {pushed.commit}")
    print(pushed.commit_url)


@app.command()
def up(
    pipeline: PipelineOpt = None,
    seeds: Annotated[Path | None, typer.Option(help="produce this seed file as a run once all is up")] = None,
    exit_when_done: Annotated[bool, typer.Option(help="stop everything once that run is finished")] = False,
    keep_broker: Annotated[
        bool, typer.Option(help="leave the local broker running at the end if this command started it")
    ] = False,
    broker_port: Annotated[int, typer.Option(help="port of the local broker")] = 19092,
    workdir: Annotated[Path, typer.Option(help="logs of the local processes")] = Path(".cache/stack"),
    timeout_s: Annotated[float, typer.Option(help="how long to wait for the run's verdict")] = 900,
    prometheus_port: Annotated[int, typer.Option(help="local Prometheus, if installed; 0 = none")] = 9090,
    chain: Annotated[
        bool,
        typer.Option(
            help="operator chaining: consecutive synchronous steps share one process (the pipeline "
            "as if it said `chain: auto`)"
        ),
    ] = False,
    restart: Annotated[
        bool,
        typer.Option(
            help="start an exited service again, as compose's `restart: unless-stopped` does; "
            "one that keeps exiting soon after its start (a crash loop) stops the stack"
        ),
    ] = True,
) -> None:
    """The whole pipeline locally: broker (unless KAFKA_BOOTSTRAP_SERVERS is set), topics, the
    teacher simulator (unless OPENAI_BASE_URL is set), every service as a process, and Prometheus
    scraping them when the `prometheus` binary is installed. When it ends (run done with
    --exit-when-done, Ctrl-C, SIGTERM, an error) it stops every process it started, the broker
    too unless --keep-broker; a broker that was already running is left as it was."""
    import os
    import shutil
    import signal
    import urllib.parse

    from fastdistill.commands.stack import forget_up, record_up
    from fastdistill.dev import local_broker
    from fastdistill.live_run import RunDisplay
    from fastdistill.local_stack import LocalStack
    from fastdistill.prometheus_local import start_prometheus, stop_prometheus, write_config
    from fastdistill.runs import release_summary, run_dir, wait_for_release

    # SIGTERM (a supervisor, `kill`) ends this like Ctrl-C: through the cleanup below.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    # Everything is checked before a topic is created or a process started.
    path, spec, _ = load_plan(pipeline)
    if chain and spec.chain == "none":
        # The services read the pipeline from a file: they get a copy that chains.
        import yaml

        workdir.mkdir(parents=True, exist_ok=True)
        chained = workdir / f"{path.stem}.chained.yaml"
        raw = yaml.safe_load(path.read_text())
        chained.write_text(yaml.safe_dump(raw | {"chain": "auto"}, sort_keys=False))
        path, spec, _ = load_plan(chained)
    if seeds is not None and not seeds.is_file():
        raise UserError(f"{seeds}: no such seed file", "give the path of a JSONL file of seeds with --seeds")
    started_broker: local_broker.BrokerInfo | None = None
    if "KAFKA_BOOTSTRAP_SERVERS" in os.environ:
        require_broker(KafkaSettings())
    else:
        try:
            info = local_broker.up(port=broker_port)
        except (RuntimeError, TimeoutError) as exc:
            raise UserError(f"local broker on port {broker_port}: {exc}", code=1) from None
        started_broker = info if info.started else None
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = info.bootstrap
    record_up(workdir)  # for `fastdistill down`
    stack = LocalStack(path, workdir, restart_policy=RestartPolicy(on_exit=_print_exit) if restart else None)
    prometheus = None
    result: dict[str, Any] = {}
    try:
        clients.ensure_topics(clients.admin(KafkaSettings()), pipeline_topics(spec))
        if "OPENAI_BASE_URL" not in os.environ:
            answer_book = seeds or Path(path).parent / "seeds.jsonl"
            console.print(f"teacher simulator at {stack.start_teacher_sim(answer_book)}")
        stack.add_pipeline_services()
        stack.start()
        console.print(f"{len(stack.services)} processes up; logs in {workdir}/logs")
        if prometheus_port and shutil.which("prometheus"):
            targets = {name: svc.port for name, svc in stack.services.items()}
            config = write_config(
                targets,
                workdir / "prometheus.yml",
                scrape_interval=f"{PROMETHEUS_SCRAPE_S}s",
                pipeline=spec.name,
            )
            prometheus = start_prometheus(config, workdir / "prometheus", prometheus_port)
            console.print(f"prometheus at http://127.0.0.1:{prometheus_port}")
        if seeds is None:
            while not (lost := stack.lost()):
                time.sleep(1)
            raise RuntimeError(f"services exited: {lost}")
        run_id = _new_run_id(seeds)
        produce(seeds, path, run_id)
        try:
            with RunDisplay(spec, run_id, KafkaSettings(), console, stack) as display:
                result = wait_for_release(spec, run_id, timeout_s, stack, on_wait=display.tick)
        except TimeoutError:
            console.print(f"[red]run {run_id} did not finish in {timeout_s:g} s[/]; logs in {workdir}/logs")
            raise typer.Exit(EXIT_STALLED) from None
        except RuntimeError as exc:
            console.print(f"[red]{exc}[/]; logs in {workdir}/logs", soft_wrap=True)
            raise typer.Exit(EXIT_SERVICE_DIED) from None
        console.print_json(data=result)
        for line in release_summary(result):
            console.print(line, style=None if result.get("released") else "red", soft_wrap=True, markup=False)
        console.print(f"report: {run_dir(spec, run_id) / 'reports' / 'report.html'}")
        if prometheus is not None:
            # The run may end between two scrapes: wait for one more, so that Prometheus (its data
            # stays in the workdir) holds the run's final per-run series.
            time.sleep(PROMETHEUS_SCRAPE_S + 1)
            query = urllib.parse.quote(f'fd_run_stage_rows{{run_id="{run_id}"}}')
            console.print(f"prometheus: http://127.0.0.1:{prometheus_port}/graph?g0.expr={query}&g0.tab=1")
        if not exit_when_done:
            while not stack.lost():
                time.sleep(1)
    finally:
        if prometheus is not None:
            stop_prometheus(prometheus)
        stack.stop()
        forget_up(workdir)
        if started_broker is not None and not keep_broker:
            local_broker.down(started_broker.port, data_dir=started_broker.data_dir)
            console.print("broker stopped (started by this command; --keep-broker keeps it)")
    if seeds is not None and not result.get("released"):
        raise typer.Exit(EXIT_REJECTED)


def _print_exit(exit: Exit) -> None:
    then = "started again" if exit.restarted else "left down: it keeps exiting soon after its start"
    said = f"{exit.name} exited (code {exit.code}): {exit.reason}; {then}"
    console.print(said, style="yellow", markup=False, soft_wrap=True)


#: How often `up`'s local Prometheus scrapes the services.
PROMETHEUS_SCRAPE_S = 5

#: `up`'s exit status when its run was rejected by a gate, did not finish in time, or lost a service.
EXIT_REJECTED = 1
EXIT_STALLED = 3
EXIT_SERVICE_DIED = 4


@app.command()
def example(
    name: Annotated[str, typer.Argument(help="text2sql")],
    dest: Annotated[Path, typer.Argument(help="copied to DEST/examples/NAME")] = Path("."),
) -> None:
    """Copy a shipped example (pipeline, seeds, data) out of the package, to run it from DEST."""
    from fastdistill.examples import copy_example

    try:
        folder = copy_example(name, dest)
    except (ValueError, FileExistsError) as exc:
        raise UserError(str(exc), code=1) from None
    console.print(f"example {name} in {folder}; run it with:")
    print(f"cd {dest} && fastdistill up --seeds examples/{name}/seeds.jsonl --exit-when-done")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
