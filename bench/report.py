"""Targets as PASS/MISS, the console table and `docs/benchmarks.md`, all from the results dict."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
#: Hand-written findings (profiles, causes) appended to the generated document when present.
LIMITS_NOTE = HERE / "limits.md"

# Issue 16's targets. Only a ratio measured in the same run compares with a peer.
CHAINED_ROWS_PER_S = 15_000
CHAINED_GOAL_ROWS_PER_S = 20_000
PER_STEP_ROWS_PER_S = 10_000
CPU_VS_DISTILABEL = 5.0
CPU_US_PER_ROW = 100
TEACHER_BOUND_SHARE = 0.95
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


def _load(x: dict[str, Any]) -> str:
    """The load average (1, 5, 15 min) recorded with a figure; the machine is shared."""
    la = x.get("load_avg")
    return "-" if not la else " / ".join(f"{v:.1f}" for v in la)


def _ideal(ours: dict[str, Any]) -> str:
    # Results written before the ideal client was computed have no such figure.
    if "ideal_rows_per_s" not in ours:
        return "-"
    return f"{ours['ideal_rows_per_s']:.1f} ({ours['ratio_to_ideal']:.0%})"


def _fmt(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def best_distilabel_cpu(cpu: dict[str, Any]) -> dict[str, Any] | None:
    runs = cpu.get("distilabel") or []
    return max(runs, key=lambda r: peer_rate(r)) if runs else None


def peer_rate(peer: dict[str, Any]) -> float:
    """The peer's most generous rate: steady state when measured, else first to last batch."""
    return float(max(peer["rows_per_s"], peer.get("steady_rows_per_s") or 0.0))


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
        rows = _fmt(ours["rows"])
        out.append(
            Target(
                f"CPU chain, chained, {rows} rows: rows/s",
                _fmt(rps),
                f">= {_fmt(CHAINED_ROWS_PER_S)} (goal {_fmt(CHAINED_GOAL_ROWS_PER_S)})",
                rps >= CHAINED_ROWS_PER_S,
            )
        )
        per_step = cpu.get("per_step")
        if per_step is not None:
            out.append(
                Target(
                    f"CPU chain, one service per step, {rows} rows: rows/s",
                    _fmt(per_step["rows_per_s"]),
                    f">= {_fmt(PER_STEP_ROWS_PER_S)}",
                    per_step["rows_per_s"] >= PER_STEP_ROWS_PER_S,
                )
            )
        best = best_distilabel_cpu(cpu)
        if best is not None:
            ratio = rps / peer_rate(best)
            out.append(
                Target(
                    "CPU chain, chained ÷ pinned distilabel (its steady state)",
                    f"{ratio:.1f}x",
                    f">= {CPU_VS_DISTILABEL:g}x",
                    ratio >= CPU_VS_DISTILABEL,
                )
            )
            same = best.get("same_rows")
            if same is not None:
                out.append(
                    Target(
                        "distilabel's rows = the chain's rows",
                        f"{same['peer_rows']:,} vs {same['fastdistill_rows']:,}, "
                        + ("identical" if same["identical"] else f"{same['differing_rows']} differ"),
                        "identical",
                        bool(same["identical"]),
                    )
                )
        else:
            out.append(Target("CPU chain ÷ pinned distilabel", "not run", f">= {CPU_VS_DISTILABEL:g}x", None))
        out.append(
            Target(
                "CPU per row, all processes (chained)",
                f"{ours['cpu_us_per_row']:.0f} µs",
                f"<= {CPU_US_PER_ROW} µs",
                ours["cpu_us_per_row"] <= CPU_US_PER_ROW,
            )
        )
    teacher = results.get("teacher")
    if teacher is not None:
        for run in teacher["runs"]:
            ours = run["fastdistill"]
            out.append(
                Target(
                    f"teacher {run['latency']} c={run['concurrency']}, {_fmt(ours['rows'])} rows: "
                    "share of the bound on its own draws",
                    f"{ours['ratio_to_bound']:.1%}",
                    f">= {TEACHER_BOUND_SHARE:.0%}",
                    ours["ratio_to_bound"] >= TEACHER_BOUND_SHARE,
                )
            )
    replay = results.get("replay")
    if replay is not None:
        again = replay["replay"]
        n = _fmt(again["rows"])
        out.append(
            Target(
                f"replay of {n} rows: teacher requests",
                str(again["teacher_requests"]),
                "0",
                again["teacher_requests"] == 0,
            )
        )
        out.append(
            Target(
                f"replay of {n} rows: rows/s",
                _fmt(again["rows_per_s"]),
                f">= {_fmt(REPLAY_ROWS_PER_S)}",
                again["rows_per_s"] >= REPLAY_ROWS_PER_S,
            )
        )
    million = results.get("million")
    if million is not None:
        worst_name, worst = max(million["services"].items(), key=lambda kv: kv[1]["rss_hwm_mb"])
        out.append(
            Target(
                f"{_fmt(million['rows'])}-row run: peak RSS of every service (max: {worst_name})",
                f"{worst['rss_hwm_mb']:.0f} MB",
                f"< {RSS_LIMIT_MB} MB",
                worst["rss_hwm_mb"] < RSS_LIMIT_MB,
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
Table = tuple[str, list[str], list[list[str]]]


def _layout(res: dict[str, Any]) -> str:
    n = res.get("service_count", len(res["services"]))
    return (
        f"chained (`chain: auto`, {n} services)"
        if res.get("layout") == "auto"
        else f"one service per step ({n} services)"
    )


def _services_rows(label: str, res: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, s in res["services"].items():
        p50 = "-" if s["p50_batch_ms"] is None else f"{s['p50_batch_ms']:.1f}"
        p95 = "-" if s["p95_batch_ms"] is None else f"{s['p95_batch_ms']:.1f}"
        rows.append(
            [
                label,
                name,
                str(s["batches"] or "-"),
                p50,
                p95,
                f"{s['rss_hwm_mb']:.0f}",
                f"{s['cpu_s']:.1f}",
                f"{s['cpu_share']:.0%}",
            ]
        )
    if res.get("broker_cpu_s") is not None:
        rows.append(
            [
                label,
                "broker",
                "-",
                "-",
                "-",
                "-",
                f"{res['broker_cpu_s']:.1f}",
                f"{res['broker_cpu_s'] / res['seconds']:.0%}",
            ]
        )
    return rows


SERVICE_HEADER = [
    "layout",
    "service",
    "batches",
    "p50 batch ms",
    "p95 batch ms",
    "peak RSS MB",
    "CPU s",
    "CPU / wall",
]


def _cpu_tables(cpu: dict[str, Any]) -> list[Table]:
    ours = cpu["fastdistill"]
    layouts = [r for r in (cpu.get("per_step"), ours) if r is not None]
    rows = [
        [
            f"FastDistill, {_layout(r)}",
            _fmt(r["rows"]),
            f"{r['seconds']:.2f}",
            _fmt(r["rows_per_s"]),
            f"{r['cpu_us_per_row']:.0f}",
            f"{ours['rows_per_s'] / r['rows_per_s']:.2f}",
            _load(r),
        ]
        for r in layouts
    ]
    pt = cpu["passthrough"]
    rows.append(
        [
            "raw Kafka passthrough (produce → relay → count)",
            _fmt(pt["rows"]),
            f"{pt['seconds']:.2f}",
            _fmt(pt["rows_per_s"]),
            "-",
            f"{ours['rows_per_s'] / pt['rows_per_s']:.2f}",
            _load(pt),
        ]
    )
    for d in cpu.get("distilabel", []):
        name = f"distilabel {d['version']} (pinned), batch {d['batch_size']}"
        timings = [("first to last batch", d["seconds"], d["rows_per_s"])]
        if d.get("steady_rows_per_s"):
            timings.insert(0, ("steady state, 10-90 % of rows", None, d["steady_rows_per_s"]))
        if d.get("run_seconds"):
            timings.append(("whole `pipeline.run()`", d["run_seconds"], d["run_rows_per_s"]))
        for what, secs, rate in timings:
            rows.append(
                [
                    f"{name}: {what}",
                    _fmt(d["rows"]),
                    "-" if secs is None else f"{secs:.2f}",
                    _fmt(rate),
                    "-",
                    f"{ours['rows_per_s'] / rate:.1f}",
                    _load(d),
                ]
            )
    tables: list[Table] = [
        (
            "1. CPU chain: canonicalize → hash → dedup → rule_filter → sink",
            ["peer", "rows", "seconds", "rows/s", "CPU µs/row (all processes)", "chained ÷ this", "load avg"],
            rows,
        )
    ]
    svc_rows = [row for r in layouts for row in _services_rows(r.get("layout", "none"), r)]
    tables.append(("1b. CPU chain per service process (and the broker)", SERVICE_HEADER, svc_rows))
    steps = []
    for r in layouts:
        label = r.get("layout", "none")
        steps.append([label, "produce (seeds committed)", "-", f"{r['produce_seconds']:.2f}", "1"])
        steps += [
            [label, stage, f"{t['first_commit_s']:.2f}", f"{t['last_commit_s']:.2f}", str(t["transactions"])]
            for stage, t in (r.get("stage_timeline") or {}).items()
        ]
        steps.append([label, "sink (RELEASED.json)", "-", f"{r['seconds']:.2f}", "-"])
    tables.append(
        (
            "1c. CPU chain: where the time goes (seconds after producing started)",
            ["layout", "stage", "first commit", "last commit", "transactions"],
            steps,
        )
    )
    return tables


def _teacher_table(teacher: dict[str, Any]) -> Table:
    rows = []
    for run in teacher["runs"]:
        ours = run["fastdistill"]
        d = run.get("distilabel")
        rows.append(
            [
                run["latency"],
                str(run["concurrency"]),
                _fmt(ours["rows"]),
                f"{ours['drawn_latency_ms']:.1f} / {ours.get('max_draw_ms', 0) / 1000:.1f} s",
                f"{ours['bound_rows_per_s']:.1f}",
                f"{ours['rows_per_s']:.1f}",
                f"{ours['ratio_to_bound']:.1%}",
                f"{ours.get('ratio_to_dist_bound', 0):.1%}",
                _ideal(ours),
                f"{ours['server']['mean_inflight']:.1f}",
                "-" if d is None else f"{d['rows_per_s']:.1f} ({d['rows']} rows, {d['ratio_to_bound']:.0%})",
                "-" if d is None else f"{run['speedup_vs_distilabel']:.1f}",
                _load(ours),
            ]
        )
    return (
        "2. Teacher path (simulator; bound = c ÷ mean of the run's own latency draws)",
        [
            "latency",
            "c",
            "rows",
            "mean / max draw ms",
            "bound rows/s",
            "FastDistill rows/s",
            "of bound",
            "of c ÷ distribution mean",
            "ideal client rows/s (FastDistill's share)",
            "in flight",
            "distilabel rows/s (rows, of its bound)",
            "speed-up",
            "load avg",
        ],
        rows,
    )


def _replay_table(replay: dict[str, Any]) -> Table:
    first, again = replay["first"], replay["replay"]
    return (
        f"3. Replay ({replay['latency']}, c={replay['concurrency']}, "
        f"batches of {replay.get('batch_size', '-')}, same seeds, new run id)",
        ["run", "rows", "seconds", "rows/s", "teacher requests", "load avg"],
        [
            [
                "first (through the teacher)",
                _fmt(first["rows"]),
                f"{first['seconds']:.2f}",
                _fmt(first["rows_per_s"], 1),
                _fmt(first["server"]["requests"]),
                "-",
            ],
            [
                "replay (generation cache)",
                _fmt(again["rows"]),
                f"{again['seconds']:.2f}",
                _fmt(again["rows_per_s"]),
                _fmt(again["teacher_requests"]),
                _load(again),
            ],
        ],
    )


def _scale_table(scale: dict[str, Any]) -> Table:
    base = scale["runs"][0]["rows_per_s"]
    return (
        "4. Scale-out: the chained CPU chain, every service at 1, 2 and 4 instances (4 partitions a topic)",
        ["instances a service", "rows/s", "speed-up", "CPU µs/row", "seconds", "load avg"],
        [
            [
                str(r["instances"]),
                _fmt(r["rows_per_s"]),
                f"{r['rows_per_s'] / base:.2f}",
                f"{r.get('cpu_us_per_row', 0):.0f}",
                f"{r['seconds']:.2f}",
                _load(r),
            ]
            for r in scale["runs"]
        ],
    )


def _million_tables(m: dict[str, Any]) -> list[Table]:
    return [
        (
            f"5. Scale: {_fmt(m['rows'])} rows through the CPU chain, {_layout(m)}",
            ["rows", "released", "seconds", "rows/s", "CPU µs/row (all processes)", "load avg"],
            [
                [
                    _fmt(m["rows"]),
                    _fmt(m["released_rows"]),
                    f"{m['seconds']:.1f}",
                    _fmt(m["rows_per_s"]),
                    f"{m['cpu_us_per_row']:.0f}",
                    _load(m),
                ]
            ],
        ),
        (
            f"5b. {_fmt(m['rows'])} rows: every service process",
            SERVICE_HEADER,
            _services_rows(m.get("layout", "auto"), m),
        ),
    ]


def _tables(results: dict[str, Any]) -> list[Table]:
    """(title, header, rows) of every table, shared by the console and the Markdown."""
    tables: list[Table] = [
        (
            "Targets",
            ["target", "measured", "goal", "result"],
            [[t.name, t.measured, t.goal, t.verdict] for t in targets(results)],
        )
    ]
    if results.get("cpu_chain") is not None:
        tables += _cpu_tables(results["cpu_chain"])
    if results.get("teacher") is not None:
        tables.append(_teacher_table(results["teacher"]))
    if results.get("replay") is not None:
        tables.append(_replay_table(results["replay"]))
    if results.get("scale_out") is not None:
        tables.append(_scale_table(results["scale_out"]))
    if results.get("million") is not None:
        tables += _million_tables(results["million"])
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
  every scenario, the 1,000,000-row run included (`make bench BENCH_ARGS=--no-million` leaves
  it out), and rewrites this file and `bench/results/latest.json`. `--quick` runs smaller N
  for development (its numbers are not comparable). Every ratio to a peer is measured in the
  same run; every figure carries the machine's load average (1 / 5 / 15 min) when it was taken:
  the machine is shared, and a load above its 2 cores means the figure had less than 2 cores.
- **Broker**: the project's local Apache Kafka 4.1.1 (KRaft, single node, on loopback), the
  same one the tests use. Each scenario uses a fresh pipeline name, so topics, consumer groups
  and state stores (dedup keys, generation cache) start empty; they are deleted afterwards.
- **FastDistill**: `fastdistill serve` processes (`LocalStack`) with the runtime's default
  settings (exactly-once transactions, commit interval 100 ms, `max_buffered_rows` 2000 except
  the teacher), in two layouts on the same rows: **one service per step** (the default,
  `chain: none`) and **chained** (`chain: auto`: canonicalize+hash and dedup+rule_filter each
  in one process; hash re-partitions on `sample_id`, so a chain ends there). No coordinator
  runs; the sink has `await_gate: false`. Before the clock starts every consumer group is
  stable and a warm-up run has gone through. **rows/s** = seeds ÷ (time from the start of
  producing the run, Avro encoding and the producer's transaction included, to the mtime of
  the sink's `RELEASED.json`, i.e. after the dataset's JSONL and Parquet files are in place).
  Seeds are synthetic text-to-SQL rows valid for `services.seeds.model:Seed` (2 % exact
  duplicates, which dedup drops; the sink's row count is checked). **CPU µs/row** = CPU
  seconds (psutil, user + system) of every service process and the broker over the measured
  run ÷ rows.
- **Batch latency**: each service's `fd_batch_seconds` histogram, difference of the buckets
  before and after the measured run, quantiles interpolated as Prometheus' `histogram_quantile`.
- **Peak RSS**: the kernel's high-water mark (`VmHWM`) of each service process, with psutil
  samples every 100 ms beside it.
- **Raw passthrough**: the very Avro bytes of the seeds batches produced with confluent-kafka
  to a 4-partition topic, relayed once by a consumer→producer process and counted by a third;
  no decoding, no transactions.
- **distilabel 1.5.3, pinned**: its own virtual environment built from the committed lock
  `bench/peer/requirements.lock` (distilabel and its whole dependency tree at the versions
  current when 1.5.3 was released: datasets 3.2.0, pandas 2.2.3, pyarrow 18.1.0, pydantic
  2.10.5, numpy 2.2.1, ...), installed `--no-deps` into `.cache/bench-distilabel-<lock hash>`
  and checked against the lock. A local `Pipeline` with the same logic
  (`bench/distilabel_cpu.py`), `input_batch_size` = the generator's `batch_size` = 500, on the
  same 100k seeds. Three clocks: **whole `pipeline.run()`** (start-up and the distiset
  included), **first to last batch** (its generator's first batch to the last step's last),
  and **steady state** (rows ÷ time between the batches at which the last step had finished
  10 % and 90 % of the rows); the target's ratio uses the most generous of these. Its rows
  (on its columns: the seed fields, canonical_input, sample_id, keep, reject_reason) are
  checked against the rows the chained run released, in order.
- **Teacher path**: `canonicalize → hash → teacher → sink` (hash gives the generation
  cache its `sample_id`), one service per step, teacher `max_in_flight` = `max_concurrency`
  = c, `max_buffered_rows` = 20·c, seeds in batches of 50, 10,000 rows. The simulator
  (`fastdistill teacher-sim`, a real HTTP server) is started fresh for every measurement and
  its latency is a pure function of the prompt, so the run's latencies are known: **bound** =
  c ÷ the mean of the run's own draws (the distribution's mean, median·e^(sigma²/2) = 329.7 ms,
  is shown beside it). **Ideal client** = a client with no overhead on the same draws: c slots,
  each row sent the instant one frees, in row order (the slots drain while the slowest draws
  finish). **In flight** = the simulator's time-weighted mean of open requests while it had
  any. distilabel runs `TextGeneration` + `OpenAILLM` against the same server with
  `input_batch_size` = c, on 40 batches.
- **Replay**: a pipeline of the teacher path (chained: canonicalize+hash in one service,
  batches of 500) runs 100,000 seeds through the teacher (simulator at fixed 1 ms, c=128: the
  first run only fills the generation cache), then the same seeds under a new run id: every
  generation must come from the compacted generation-cache topic (the simulator counts the
  requests).
- **Scale-out**: the chained CPU chain with every service at 1, 2 and 4 instances (4
  partitions a topic; 1 instance is scenario 1's chained run), on the same 100k rows.
- **1,000,000 rows**: the chained CPU chain on 1M seeds (2 % duplicates), peak RSS and CPU of
  every service process.
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
        f"load average (1/5/15 min) at start {env['load_avg_at_start']}, at end "
        f"{results.get('load_avg_at_end', '-')}; whole bench {results['bench_seconds']:.0f} s",
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
