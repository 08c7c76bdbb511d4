"""Targets as PASS/MISS, the console table and `docs/benchmarks.md`, all from the results dict."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
#: Hand-written findings (profiles, causes) appended to the generated document when present.
LIMITS_NOTE = HERE / "limits.md"

CPU_ROWS_PER_S = 20_000
CPU_VS_DISTILABEL = 5.0
CPU_VS_PASSTHROUGH = 0.25
TEACHER_BOUND_SHARE = 0.90
TEACHER_VS_DISTILABEL = 5.0
REPLAY_ROWS_PER_S = 10_000
RSS_LIMIT_MB = 200


@dataclass
class Target:
    name: str
    measured: str
    goal: str
    passed: bool | None  # None: not measured in this run

    @property
    def verdict(self) -> str:
        return "n/a" if self.passed is None else ("PASS" if self.passed else "MISS")


def _ideal(ours: dict[str, Any]) -> str:
    # Results written before the ideal client was computed have no such figure.
    if "ideal_rows_per_s" not in ours:
        return "-"
    return f"{ours['ideal_rows_per_s']:.1f} ({ours['ratio_to_ideal']:.0%})"


def _fmt(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def best_distilabel_cpu(cpu: dict[str, Any]) -> dict[str, Any] | None:
    runs = cpu.get("distilabel") or []
    return max(runs, key=lambda r: r["rows_per_s"]) if runs else None


def teacher_run(results: dict[str, Any], latency: str, concurrency: int) -> dict[str, Any] | None:
    for run in (results.get("teacher") or {}).get("runs", []):
        if run["latency"] == latency and run["concurrency"] == concurrency:
            return dict(run)
    return None


def targets(results: dict[str, Any]) -> list[Target]:
    out: list[Target] = []
    cpu = results.get("cpu_chain")
    if cpu is not None:
        ours = cpu["fastdistill"]
        rps = ours["rows_per_s"]
        out.append(Target("CPU chain rows/s", _fmt(rps), f">= {_fmt(CPU_ROWS_PER_S)}", rps >= CPU_ROWS_PER_S))
        best = best_distilabel_cpu(cpu)
        if best is not None:
            ratio = rps / best["rows_per_s"]
            out.append(
                Target(
                    f"CPU chain vs distilabel best (batch {best['batch_size']})",
                    f"{ratio:.1f}x",
                    f">= {CPU_VS_DISTILABEL:g}x",
                    ratio >= CPU_VS_DISTILABEL,
                )
            )
        else:
            out.append(Target("CPU chain vs distilabel best", "not run", f">= {CPU_VS_DISTILABEL:g}x", None))
        share = rps / cpu["passthrough"]["rows_per_s"]
        out.append(
            Target(
                "CPU chain vs raw Kafka passthrough",
                f"{share:.0%}",
                f">= {CPU_VS_PASSTHROUGH:.0%}",
                share >= CPU_VS_PASSTHROUGH,
            )
        )
        worst_name, worst = max(ours["services"].items(), key=lambda kv: kv[1]["rss_hwm_mb"])
        out.append(
            Target(
                f"peak RSS per service at {_fmt(ours['rows'])} rows (max: {worst_name})",
                f"{worst['rss_hwm_mb']:.0f} MB",
                f"< {RSS_LIMIT_MB} MB",
                worst["rss_hwm_mb"] < RSS_LIMIT_MB,
            )
        )
    teacher = results.get("teacher")
    if teacher is not None:
        key = teacher["replay_of"]
        run = teacher_run(results, key["latency"], key["concurrency"])
        if run is not None:
            ours = run["fastdistill"]
            label = f"{key['latency']} c={key['concurrency']}"
            out.append(
                Target(
                    f"teacher share of bound ({label})",
                    f"{ours['ratio_to_bound']:.0%}",
                    f">= {TEACHER_BOUND_SHARE:.0%}",
                    ours["ratio_to_bound"] >= TEACHER_BOUND_SHARE,
                )
            )
            if "distilabel" in run:
                speedup = run["speedup_vs_distilabel"]
                out.append(
                    Target(
                        f"teacher vs distilabel ({label})",
                        f"{speedup:.1f}x",
                        f">= {TEACHER_VS_DISTILABEL:g}x",
                        speedup >= TEACHER_VS_DISTILABEL,
                    )
                )
            replay = ours.get("replay")
            if replay is not None:
                out.append(
                    Target(
                        "replay teacher requests",
                        str(replay["teacher_requests"]),
                        "0",
                        replay["teacher_requests"] == 0,
                    )
                )
                out.append(
                    Target(
                        "replay rows/s",
                        _fmt(replay["rows_per_s"]),
                        f">= {_fmt(REPLAY_ROWS_PER_S)}",
                        replay["rows_per_s"] >= REPLAY_ROWS_PER_S,
                    )
                )
    return out


def notes(results: dict[str, Any]) -> list[str]:
    """What a reader must know to read this run's numbers right."""
    out = []
    if results.get("quick"):
        out.append("`--quick` run: small N, not comparable with the targets.")
    cpu = results.get("cpu_chain")
    if cpu is not None and cpu.get("dedup_mode", "drop") != "drop":
        out.append(
            "dedup ran in `flag` mode (same lookups and state writes, duplicates kept and marked): in "
            "this checkout a dropping dedup adds no field, so its topic schema equals hash's and the "
            "serde resolves both to one name; the dedup service then dead-letters its own input."
        )
    return out


# -- tables --------------------------------------------------------------------------------------------
def _tables(results: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table, shared by the console and the Markdown."""
    tables: list[tuple[str, list[str], list[list[str]]]] = []
    tables.append(
        (
            "Targets",
            ["target", "measured", "goal", "result"],
            [[t.name, t.measured, t.goal, t.verdict] for t in targets(results)],
        )
    )
    cpu = results.get("cpu_chain")
    if cpu is not None:
        ours = cpu["fastdistill"]
        rows = [
            [
                "FastDistill (5 services, real broker)",
                _fmt(ours["rows"]),
                f"{ours['seconds']:.2f}",
                _fmt(ours["rows_per_s"]),
                "1.00",
            ]
        ]
        pt = cpu["passthrough"]
        rows.append(
            [
                "raw Kafka passthrough (produce → relay → count)",
                _fmt(pt["rows"]),
                f"{pt['seconds']:.2f}",
                _fmt(pt["rows_per_s"]),
                f"{ours['rows_per_s'] / pt['rows_per_s']:.2f}",
            ]
        )
        for d in cpu.get("distilabel", []):
            rows.append(
                [
                    f"distilabel {d['version']} local pipeline, batch {d['batch_size']}",
                    _fmt(d["rows"]),
                    f"{d['seconds']:.2f}",
                    _fmt(d["rows_per_s"]),
                    f"{ours['rows_per_s'] / d['rows_per_s']:.1f}",
                ]
            )
        tables.append(
            (
                "1. CPU chain: canonicalize → hash → dedup → rule_filter → sink",
                ["peer", "rows", "seconds", "rows/s", "FastDistill ÷ peer"],
                rows,
            )
        )
        svc_rows = []
        for name, s in ours["services"].items():
            p50 = "-" if s["p50_batch_ms"] is None else f"{s['p50_batch_ms']:.1f}"
            p95 = "-" if s["p95_batch_ms"] is None else f"{s['p95_batch_ms']:.1f}"
            svc_rows.append(
                [
                    name,
                    str(s["batches"] or "-"),
                    p50,
                    p95,
                    f"{s['rss_hwm_mb']:.0f}",
                    f"{s['cpu_s']:.1f}",
                    f"{s['cpu_share']:.0%}",
                ]
            )
        tables.append(
            (
                "1b. CPU chain per service",
                ["service", "batches", "p50 batch ms", "p95 batch ms", "peak RSS MB", "CPU s", "CPU / wall"],
                svc_rows,
            )
        )
        timeline = ours.get("stage_timeline") or {}
        if timeline:
            steps = [
                [stage, f"{t['first_commit_s']:.2f}", f"{t['last_commit_s']:.2f}", str(t["transactions"])]
                for stage, t in timeline.items()
            ]
            steps.insert(0, ["produce (seeds committed)", "-", f"{ours['produce_seconds']:.2f}", "1"])
            steps.append(["sink (RELEASED.json)", "-", f"{ours['seconds']:.2f}", "-"])
            tables.append(
                (
                    "1c. CPU chain: where the time goes (seconds after producing started)",
                    ["stage", "first commit", "last commit", "transactions"],
                    steps,
                )
            )
    teacher = results.get("teacher")
    if teacher is not None:
        rows = []
        for run in teacher["runs"]:
            ours = run["fastdistill"]
            d = run.get("distilabel")
            rows.append(
                [
                    run["latency"],
                    str(run["concurrency"]),
                    f"{ours['bound_rows_per_s']:.1f}",
                    f"{ours['rows_per_s']:.1f}",
                    f"{ours['ratio_to_bound']:.0%}",
                    _ideal(ours),
                    f"{ours['server']['mean_inflight']:.1f}",
                    "-" if d is None else f"{d['rows_per_s']:.1f} ({d['rows']} rows)",
                    "-" if d is None else f"{d['ratio_to_bound']:.0%}",
                    "-" if d is None else f"{d['server']['mean_inflight']:.1f}",
                    "-" if d is None else f"{run['speedup_vs_distilabel']:.1f}",
                ]
            )
        tables.append(
            (
                "2. Teacher path (simulator, bound = concurrency ÷ mean latency)",
                [
                    "latency",
                    "c",
                    "bound rows/s",
                    "FastDistill rows/s",
                    "of bound",
                    "ideal client rows/s (FastDistill's share)",
                    "in flight",
                    "distilabel rows/s",
                    "of bound",
                    "in flight",
                    "speed-up",
                ],
                rows,
            )
        )
        key = teacher["replay_of"]
        run = teacher_run(results, key["latency"], key["concurrency"])
        if run is not None and "replay" in run["fastdistill"]:
            first, replay = run["fastdistill"], run["fastdistill"]["replay"]
            tables.append(
                (
                    f"3. Replay ({key['latency']}, c={key['concurrency']}, same seeds, new run id)",
                    ["run", "rows", "seconds", "rows/s", "teacher requests"],
                    [
                        [
                            "first",
                            _fmt(first["rows"]),
                            f"{first['seconds']:.2f}",
                            _fmt(first["rows_per_s"], 1),
                            _fmt(first["server"]["requests"]),
                        ],
                        [
                            "replay",
                            _fmt(replay["rows"]),
                            f"{replay['seconds']:.2f}",
                            _fmt(replay["rows_per_s"]),
                            _fmt(replay["teacher_requests"]),
                        ],
                    ],
                )
            )
    scale = results.get("scale_out")
    if scale is not None:
        base = scale["runs"][0]["rows_per_s"]
        tables.append(
            (
                f"4. Scale-out: instances of `{scale['step']}` (the step using most CPU), 4 partitions",
                ["instances", "rows/s", "speed-up", "seconds"],
                [
                    [
                        str(r["instances"]),
                        _fmt(r["rows_per_s"]),
                        f"{r['rows_per_s'] / base:.2f}",
                        f"{r['seconds']:.2f}",
                    ]
                    for r in scale["runs"]
                ],
            )
        )
    return tables


def console(results: dict[str, Any]) -> str:
    out = [f"note: {n}" for n in notes(results)]
    for title, header, rows in _tables(results):
        widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
        out.append(f"\n{title}")
        out.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
        out.append("  ".join("-" * w for w in widths))
        out.extend("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(out)


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


METHOD = """\
## How it is measured

- **One command, one run, one machine**: `make bench` (= `.venv/bin/python -m bench`) runs
  every scenario and rewrites this file and `bench/results/latest.json`. `--quick` runs
  smaller N for development (its numbers are not comparable).
- **Broker**: the project's local Apache Kafka 4.1.1 (KRaft, single node, on loopback), the
  same one the tests use. Each scenario uses a fresh pipeline name, so topics, consumer groups
  and state stores (dedup keys, generation cache) start empty; they are deleted afterwards.
- **FastDistill**: every step is its own `fastdistill serve` process (`LocalStack`), with the
  runtime's default settings (exactly-once transactions, commit interval 100 ms,
  `max_buffered_rows` 2000 except the teacher). No coordinator runs; the sink has
  `await_gate: false`. Before the clock starts, every consumer group is stable and a
  warm-up run has gone through. **rows/s** = seeds ÷ (time from the start of producing
  the run — Avro encoding and the producer's transaction included — to the mtime of the
  sink's `RELEASED.json`, i.e. after the dataset's JSONL and Parquet files are written).
  Seeds are synthetic text-to-SQL rows valid for `services.seeds.model:Seed` (2 % exact
  duplicates, which dedup drops; the sink's row count is checked).
- **Batch latency**: each service's `fd_batch_seconds` histogram (consume of a message →
  its rows ready), difference of the buckets before and after the measured run,
  quantiles interpolated as Prometheus' `histogram_quantile` does.
- **Peak RSS**: the kernel's high-water mark (`VmHWM`) of each service process, with psutil
  samples every 100 ms beside it; CPU seconds from psutil over the measured run.
- **Raw passthrough**: the very Avro bytes of the seeds batches produced with confluent-kafka
  (lz4, linger 5 ms, as the services) to a 4-partition topic, a separate process
  consuming and re-producing each message to a second topic, a third process counting
  them; no decoding, no transactions. From the first produce to the last message counted.
- **distilabel 1.5.3** runs in its own virtual environment (`.cache/bench-distilabel-venv`,
  installed by the bench), as a local `Pipeline` with the same logic
  (`bench/distilabel_cpu.py`, `bench/distilabel_teacher.py`), `input_batch_size` = the
  generator's `batch_size`. Its clock is generous: from its generator handing out the
  first batch to its last step finishing the last batch (process start-up and dataset
  assembly excluded). At batch 50 it gets fewer rows (its rate is per batch, flat in N).
- **Teacher path**: `canonicalize → hash → teacher → sink` (hash gives the generation
  cache its `sample_id`), teacher `max_in_flight` = `max_concurrency` = c,
  `max_buffered_rows` = 20·c, seeds in batches of 50. The simulator (`fastdistill
  teacher-sim`, a real HTTP server) is started fresh for every measurement, so every peer
  draws the same latency for the same prompt. **Bound** = c ÷ mean latency (lognormal:
  median·e^(sigma²/2) = 329.7 ms for 200 ms, sigma = 1). **Ideal client** = what a client
  with no overhead at all reaches on the run's own draws (the simulator's latency is a pure
  function of the prompt): c slots, each row sent the instant one frees, in row order. On a
  finite run the slots drain while the slowest draws finish, so with a long-tailed latency
  even it stays under the bound. **In flight** = the simulator's
  time-weighted mean number of open requests while it had any (`/stats`). distilabel runs
  `TextGeneration` + `OpenAILLM` against the same server with `input_batch_size` = c, on
  40 batches (at most the same 2,000 rows).
- **Replay**: the same seeds produced again under a new run id into the running teacher
  pipeline; every generation must come from the compacted generation-cache topic.
- **Scale-out**: the CPU chain again with 1, 2 and 4 instances of the step that used the
  most CPU in scenario 1 (4 partitions per topic; 1 instance is scenario 1's run).
"""


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    parts = [
        "# Benchmarks: FastDistill on Kafka beside distilabel",
        "",
        "Generated by `make bench` (`python -m bench`); do not edit by hand.",
        "",
        f"- date: {env['date']}",
        f"- machine: {env['cores']} cores ({env['cpu_model'] or 'unknown CPU'}), {env['memory_gb']} GiB",
        f"- software: Python {env['python']}, confluent-kafka {env['confluent_kafka']} "
        f"(librdkafka {env['librdkafka']}), Apache Kafka 4.1.1 at {env['broker']}",
        f"- commit: {env['commit']}{' (with uncommitted changes)' if env['dirty'] else ''}; "
        f"load average at start {env['load_avg_at_start']}; whole bench {results['bench_seconds']:.0f} s",
        "",
    ]
    for note in notes(results):
        parts += [f"> **Note:** {note}", ""]
    for title, header, rows in _tables(results):
        parts += [f"## {title}", "", _md_table(header, rows), ""]
    parts.append(METHOD)
    if LIMITS_NOTE.exists():
        parts += ["", LIMITS_NOTE.read_text().rstrip(), ""]
    return "\n".join(parts).rstrip() + "\n"
