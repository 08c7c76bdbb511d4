"""All four scenarios in one run, on one broker, on one machine; the results as one dict."""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import confluent_kafka

from bench import chain, distilabel_peer, seeds, teacher
from bench.passthrough import run_passthrough
from bench.teacher import SimWindow, StandaloneSim
from fastdistill.plan import PipelinePlan
from shared.pipeline import SEEDS_STAGE, PipelineSpec
from shared.step import Row

log = logging.getLogger("bench")

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Sizes:
    cpu_rows: int = 100_000
    cpu_batch_size: int = 500
    warmup_rows: int = 1_000
    # 10,000 rows: on 2,000 one slow draw (6.8 s) decided ±8 points of the share of the bound
    teacher_rows: int = 10_000
    teacher_warmup_rows: int = 16
    latencies: tuple[str, ...] = ("lognormal:200:1.0",)
    concurrencies: tuple[int, ...] = (32,)
    # Replay: a first run of this many rows through the teacher (a fast simulator, many slots:
    # what is measured is the replay, answered from the generation cache), then the same seeds
    # under a new run id.
    replay_rows: int = 100_000
    replay_latency: str = "fixed:1"
    replay_concurrency: int = 128
    scale_instances: tuple[int, ...] = (1, 2, 4)
    million_rows: int = 1_000_000
    # The peer on the same rows as the chain (so its rows can be checked against the chain's), at
    # its best batch size; batch 50 (a few hundred rows/s, 20k rows) is an option, not a default.
    distilabel_cpu_rows: dict[int, int] = field(default_factory=lambda: {500: 100_000})
    # distilabel's teacher rate is per batch (each waits for its slowest row): 40 batches
    # give a stable mean; more would only cost minutes at c=8.
    distilabel_teacher_batches: int = 40


QUICK = Sizes(
    cpu_rows=10_000,
    warmup_rows=200,
    teacher_rows=400,
    replay_rows=2_000,
    scale_instances=(1, 2),
    million_rows=20_000,
    distilabel_cpu_rows={500: 10_000},
    distilabel_teacher_batches=10,
)


@dataclass
class Options:
    sizes: Sizes
    bootstrap: str
    workdir: Path
    distilabel: bool = True
    sections: tuple[str, ...] = ("cpu", "teacher", "replay", "scale", "million")
    #: the CPU chain's layouts: "none" (one service per step) and "auto" (chained)
    layouts: tuple[str, ...] = ("none", "auto")


def environment(bootstrap: str) -> dict[str, Any]:
    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return proc.stdout.strip()

    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import psutil

    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "confluent_kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
        "broker": bootstrap,
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _avro_payloads(rows: list[dict[str, Any]], batch_size: int) -> list[bytes]:
    """The seeds-topic messages `fastdistill produce` would write for these rows."""
    plan = PipelinePlan.build(PipelineSpec(name="passthrough", steps=[]))
    serde = plan.serde()
    schema = plan.schema_name(SEEDS_STAGE)
    out = []
    for seq, start in enumerate(range(0, len(rows), batch_size)):
        record = {
            "run_id": "passthrough",
            "stage": SEEDS_STAGE,
            "producer": "produce",
            "batch_seq": seq,
            "lineage": [],
            "rows": rows[start : start + batch_size],
            "end_of_run": None,
            "origin_ms": 0,
        }
        out.append(serde.encode(schema, record))
    return out


def run_suite(opts: Options, checkpoint: Path | None = None) -> dict[str, Any]:
    """Every section in turn; with `checkpoint`, the results so far are written there after each
    (a late failure, e.g. a timeout in the 1M-row run, keeps what was measured before it)."""
    sizes = opts.sizes
    work = opts.workdir
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results: dict[str, Any] = {"environment": environment(opts.bootstrap), "sizes": asdict(sizes)}
    results["sizes"]["distilabel_cpu_rows"] = {str(k): v for k, v in sizes.distilabel_cpu_rows.items()}
    if opts.distilabel:
        distilabel_peer.ensure_venv()
    if "cpu" in opts.sections or "scale" in opts.sections:
        results |= _cpu_sections(opts)
        _checkpoint(checkpoint, results, started)
    if "teacher" in opts.sections:
        results["teacher"] = _teacher_section(opts)
        _checkpoint(checkpoint, results, started)
    if "replay" in opts.sections:
        results["replay"] = _replay_section(opts)
        _checkpoint(checkpoint, results, started)
    if "million" in opts.sections:
        results["million"] = _million_section(opts)
    results["bench_seconds"] = round(time.monotonic() - started, 1)
    results["load_avg_at_end"] = load_avg()
    shutil.rmtree(work / "data", ignore_errors=True)
    return results


#: the columns the distilabel peer produces: what "the same rows" is checked on
PEER_COLUMNS = [*chain.SEED_FIELDS, "canonical_input", "sample_id", "keep", "reject_reason"]


def _cpu_sections(opts: Options) -> dict[str, Any]:
    sizes, work = opts.sizes, opts.workdir
    records = seeds.generate(sizes.cpu_rows)
    seeds_path = seeds.write_jsonl(records, work / "data" / "cpu-seeds.jsonl")
    rows = seeds.load_rows(seeds_path, "measured")
    warmup = seeds.load_rows(
        seeds.write_jsonl(
            seeds.generate(sizes.warmup_rows, seed=1, prefix="warmup", offset=10**7),
            work / "data" / "warmup.jsonl",
        ),
        "warmup",
    )
    mode = chain.dedup_mode()
    if mode != "drop":
        log.warning("dedup cannot drop in this checkout (equal topic schemas): running it in %r mode", mode)
    expected = seeds.unique_count(records) if mode == "drop" else len(records)
    out: dict[str, Any] = {}
    cpu: dict[str, Any] = {"unique_rows": seeds.unique_count(records), "dedup_mode": mode}

    def run(label: str, layout: str, **kw: Any) -> dict[str, Any]:
        res = chain.run_cpu_chain(
            work,
            opts.bootstrap,
            rows,
            warmup,
            label=label,
            batch_size=sizes.cpu_batch_size,
            expected_rows=expected,
            mode=mode,
            chain=layout,
            **kw,
        )
        res["load_avg"] = load_avg()
        return res

    # Both layouts on the same rows: one service per step (the default) and operator chaining.
    if "none" in opts.layouts:
        cpu["per_step"] = run("cpu-per-step", "none")
    chained = run("cpu-chained", "auto", keep_rows=work / "data" / "chained-rows")
    cpu["fastdistill"] = chained
    cpu["passthrough"] = run_passthrough(
        opts.bootstrap, _avro_payloads(rows, sizes.cpu_batch_size), len(rows)
    )
    cpu["passthrough"]["load_avg"] = load_avg()
    log.info("raw passthrough: %.0f rows/s", cpu["passthrough"]["rows_per_s"])
    if opts.distilabel:
        cpu["distilabel"] = []
        for batch_size, asked in sorted(sizes.distilabel_cpu_rows.items()):
            n = min(asked, len(records))
            subset = seeds.write_jsonl(records[:n], work / "data" / f"distilabel-cpu-{n}.jsonl")
            res = distilabel_peer.cpu_chain(subset, n, batch_size, work)
            res["load_avg"] = load_avg()
            if n == len(records):
                # The very rows the chain released, on the peer's columns.
                ours = [Path(f) for f in chained["released_files"]]
                res["same_rows"] = distilabel_peer.compare_rows(Path(res["rows_path"]), ours, PEER_COLUMNS)
                log.info("distilabel rows vs the chain's: %s", res["same_rows"])
            cpu["distilabel"].append(res)
    out["cpu_chain"] = cpu
    if "scale" in opts.sections:
        # The chained layout with every service at 1, 2 and 4 instances (4 partitions a topic).
        scale: dict[str, Any] = {"layout": "auto", "runs": []}
        for count in sizes.scale_instances:
            res = chained
            if count != 1:
                heads = {s["id"]: count for s in chain.cpu_steps()}
                res = run(f"scale-{count}", "auto", instances=heads)
            scale["runs"].append(
                {
                    "instances": count,
                    "rows_per_s": res["rows_per_s"],
                    "seconds": res["seconds"],
                    "cpu_us_per_row": res["cpu_us_per_row"],
                    "same_run_as_cpu_chain": count == 1,
                    "cpu_s": {n: s["cpu_s"] for n, s in res["services"].items()},
                    "load_avg": res["load_avg"],
                }
            )
        out["scale_out"] = scale
    for leftover in work.glob("bench-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    return out


def _checkpoint(path: Path | None, results: dict[str, Any], started: float) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = results | {"bench_seconds": round(time.monotonic() - started, 1), "partial": True}
        path.write_text(json.dumps(partial, indent=2) + "\n")


def load_avg() -> list[float]:
    """The machine's 1/5/15-minute load average, recorded with every figure (a shared machine)."""
    return [round(x, 2) for x in os.getloadavg()]


def _teacher_seeds(opts: Options, name: str, n: int) -> tuple[Path, list[Row], list[Row]]:
    """`n` distinct seeds written as the simulator's answer book, their rows, and warm-up rows
    (other seeds: a warm-up must not fill the cache the measured rows then hit)."""
    work = opts.workdir / "data"
    book = seeds.write_jsonl(seeds.generate(n, duplicate_rate=0.0, prefix=name), work / f"{name}-seeds.jsonl")
    warm = seeds.generate(
        opts.sizes.teacher_warmup_rows, duplicate_rate=0.0, seed=1, prefix="warmup", offset=10**7
    )
    warmup = seeds.load_rows(seeds.write_jsonl(warm, work / f"{name}-warmup.jsonl"), "warmup")
    return book, seeds.load_rows(book, "measured"), warmup


def _teacher_section(opts: Options) -> dict[str, Any]:
    sizes, work = opts.sizes, opts.workdir
    book, rows, warmup = _teacher_seeds(opts, "teacher", sizes.teacher_rows)
    runs: list[dict[str, Any]] = []
    for latency in sizes.latencies:
        for c in sizes.concurrencies:
            ours = teacher.run_teacher(
                work,
                opts.bootstrap,
                book,
                rows,
                warmup,
                latency=latency,
                concurrency=c,
            )
            ours["load_avg"] = load_avg()
            entry: dict[str, Any] = {"latency": latency, "concurrency": c, "fastdistill": ours}
            if opts.distilabel:
                entry["distilabel"] = _distilabel_teacher(opts, book, rows, latency, c)
                entry["speedup_vs_distilabel"] = round(
                    ours["rows_per_s"] / entry["distilabel"]["rows_per_s"], 2
                )
            runs.append(entry)
    for leftover in work.glob("bench-teacher-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    return {"runs": runs}


def _replay_section(opts: Options) -> dict[str, Any]:
    """A run of `replay_rows` through the teacher, then the same seeds under a new run id."""
    sizes, work = opts.sizes, opts.workdir
    book, rows, warmup = _teacher_seeds(opts, "replay", sizes.replay_rows)
    first = teacher.run_teacher(
        work,
        opts.bootstrap,
        book,
        rows,
        warmup,
        latency=sizes.replay_latency,
        concurrency=sizes.replay_concurrency,
        replay=True,
        # a replay is throughput: the CPU chain's batches, canonicalize and hash in one service
        batch_size=sizes.cpu_batch_size,
        chain="auto",
    )
    replay = first.pop("replay")
    replay["load_avg"] = load_avg()
    log.info(
        "replay of %d rows: %.0f rows/s, %d teacher requests",
        replay["rows"],
        replay["rows_per_s"],
        replay["teacher_requests"],
    )
    for leftover in work.glob("bench-teacher-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    return {
        "latency": sizes.replay_latency,
        "concurrency": sizes.replay_concurrency,
        "layout": "auto",
        "batch_size": sizes.cpu_batch_size,
        "first": {
            k: first[k]
            for k in ("rows", "released_rows", "seconds", "rows_per_s", "server", "cpu_s", "stage_timeline")
        },
        "replay": replay,
    }


def _million_section(opts: Options) -> dict[str, Any]:
    """The chained CPU chain on `million_rows`: peak RSS of every service process."""
    sizes, work = opts.sizes, opts.workdir
    records = seeds.generate(sizes.million_rows, prefix="million")
    expected = seeds.unique_count(records)
    rows = seeds.load_rows(seeds.write_jsonl(records, work / "data" / "million-seeds.jsonl"), "measured")
    del records
    warmup = seeds.load_rows(
        seeds.write_jsonl(
            seeds.generate(sizes.warmup_rows, seed=1, prefix="warmup", offset=10**8),
            work / "data" / "million-warmup.jsonl",
        ),
        "warmup",
    )
    res = chain.run_cpu_chain(
        work,
        opts.bootstrap,
        rows,
        warmup,
        label="million",
        batch_size=sizes.cpu_batch_size,
        expected_rows=expected,
        mode=chain.dedup_mode(),
        chain="auto",
    )
    res["load_avg"] = load_avg()
    for leftover in work.glob("bench-million-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    return res


def _distilabel_teacher(
    opts: Options, book: Path, rows: list[dict[str, Any]], latency: str, concurrency: int
) -> dict[str, Any]:
    n = min(len(rows), opts.sizes.distilabel_teacher_batches * concurrency)
    sim = StandaloneSim(opts.workdir / "distilabel-sim", book, latency)
    try:
        window = SimWindow(sim.stats_url)
        res = distilabel_peer.teacher(book, n, sim.url, concurrency, opts.workdir, latency.split(":")[0])
        res["server"] = window.close(res["seconds"])
    finally:
        sim.close()
    # the bound on the draws of the rows it was given, as FastDistill's
    res["drawn_latency_ms"] = round(teacher.drawn_latency_ms(rows[:n], latency), 1)
    bound = concurrency / (res["drawn_latency_ms"] / 1000)
    res["bound_rows_per_s"] = round(bound, 2)
    res["ratio_to_bound"] = round(res["rows_per_s"] / bound, 3)
    res["load_avg"] = load_avg()
    log.info(
        "distilabel teacher %s batch %d: %.1f rows/s = %.0f%% of bound",
        latency,
        concurrency,
        res["rows_per_s"],
        100 * res["ratio_to_bound"],
    )
    return res
