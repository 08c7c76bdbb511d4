"""`python -m bench`: every benchmark in one run; prints the table of ratios and targets and
writes `bench/results/latest.json` and `docs/benchmarks.md`.

    python -m bench                 # the full run, 1,000,000 rows included
    python -m bench --no-million    # without the 1,000,000-row run
    python -m bench --quick         # small N, for development
    python -m bench --cpu-rows 2000 --teacher-rows 200 --skip-distilabel --out X.json --docs X.md
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

from bench import report
from bench.suite import QUICK, Options, Sizes, run_suite

REPO = Path(__file__).resolve().parents[1]


def _bootstrap() -> str:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    from fastdistill.dev import local_broker

    info = local_broker.up()
    if info.started:
        # Nothing a command starts outlives it: a broker left on the default port was taken
        # for another checkout's by the next test session (it broke a CI run here).
        atexit.register(local_broker.down, info.port, data_dir=info.data_dir)
    # Services started by the bench find the broker the same way.
    os.environ["KAFKA_BOOTSTRAP_SERVERS"] = info.bootstrap
    return info.bootstrap


def _csv(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small N for development")
    parser.add_argument("--skip-distilabel", action="store_true", help="leave the distilabel peer out")
    parser.add_argument(
        "--only",
        type=_csv,
        default=("cpu", "teacher", "replay", "scale", "million"),
        help="sections to run, of cpu,teacher,replay,scale,million",
    )
    parser.add_argument(
        "--layouts",
        type=_csv,
        default=("none", "auto"),
        help="CPU chain layouts: none (per step), auto (chained)",
    )
    parser.add_argument("--no-million", action="store_true", help="leave the 1,000,000-row run out")
    parser.add_argument("--cpu-rows", type=int)
    parser.add_argument("--teacher-rows", type=int)
    parser.add_argument("--concurrency", type=_csv, help="teacher concurrencies, e.g. 8,32,128")
    parser.add_argument("--latency", type=_csv, help="e.g. lognormal:200:1.0,fixed:200")
    parser.add_argument("--scale", type=_csv, help="instances of every chained service, e.g. 1,2,4")
    parser.add_argument("--replay-rows", type=int)
    parser.add_argument("--million-rows", type=int)
    # --quick numbers are not comparable, so by default they stay out of the committed files.
    parser.add_argument("--out", type=Path, help="default bench/results/latest.json (--quick: .cache/bench/)")
    parser.add_argument("--docs", type=Path, help="default docs/benchmarks.md (--quick: .cache/bench/)")
    parser.add_argument("--workdir", type=Path, default=REPO / ".cache" / "bench")
    parser.add_argument(
        "--from-json", type=Path, help="run nothing: rewrite the report from an earlier results file"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)

    if args.from_json is not None:
        results = json.loads(args.from_json.read_text())
        docs = args.docs or REPO / "docs" / "benchmarks.md"
        docs.write_text(report.markdown(results))
        print(report.console(results))
        print(f"\nreport: {docs}")
        return 0

    sizes: Sizes = QUICK if args.quick else Sizes()
    overrides: dict[str, object] = {}
    if args.cpu_rows:
        overrides |= {"cpu_rows": args.cpu_rows, "warmup_rows": min(sizes.warmup_rows, args.cpu_rows)}
    if args.teacher_rows:
        overrides["teacher_rows"] = args.teacher_rows
    if args.concurrency:
        overrides["concurrencies"] = tuple(int(c) for c in args.concurrency)
    if args.latency:
        overrides["latencies"] = args.latency
    if args.scale:
        overrides["scale_instances"] = tuple(int(c) for c in args.scale)
    if args.replay_rows:
        overrides["replay_rows"] = args.replay_rows
    if args.million_rows:
        overrides["million_rows"] = args.million_rows
    sizes = dataclasses.replace(sizes, **overrides)  # type: ignore[arg-type]

    opts = Options(
        sizes=sizes,
        bootstrap=_bootstrap(),
        workdir=args.workdir,
        distilabel=not args.skip_distilabel,
        layouts=args.layouts,
        sections=tuple(s for s in args.only if not (args.no_million and s == "million")),
    )
    results = run_suite(opts, checkpoint=args.workdir / "partial.json")
    results["quick"] = args.quick
    if args.out is None:
        args.out = args.workdir / "quick.json" if args.quick else REPO / "bench" / "results" / "latest.json"
    if args.docs is None:
        args.docs = args.workdir / "quick.md" if args.quick else REPO / "docs" / "benchmarks.md"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    args.docs.parent.mkdir(parents=True, exist_ok=True)
    args.docs.write_text(report.markdown(results))
    print(report.console(results))
    print(f"\nresults: {args.out}\nreport:  {args.docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
