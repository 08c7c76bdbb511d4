"""Profile services of the CPU chain (or the teacher path) with py-spy during one measured run.

    pip install py-spy   # not a project dependency
    python -m bench.profile --rows 100000 --services canonicalize,sink
    python -m bench.profile --teacher --rows 2000 --services teacher

py-spy samples each chosen service process from outside (`--idle`: waiting counts too, so
wall time is accounted for, not only CPU). For each service it writes the collapsed stacks
(`.cache/bench/profile/<service>.txt`, loadable in speedscope) and prints the functions
with the most samples, inclusive and on top of the stack.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from bench import seeds
from bench.chain import cpu_steps
from bench.stack import BenchStack
from bench.teacher import teacher_steps

REPO = Path(__file__).resolve().parents[1]


def summarize(collapsed: Path, top: int = 25) -> str:
    """Top functions by inclusive and by self samples from py-spy's raw (collapsed) output."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        if "_run_module_as_main" not in stack:
            continue  # helper threads (thread-pool workers, librdkafka's) idle most of the time
        count = int(count_text)
        total += count
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    out = [f"{collapsed.stem}: {total} samples of the main thread"]
    for title, counter in (("inclusive", inclusive), ("self", own)):
        out.append(f"  top {title}:")
        for frame, count in counter.most_common(top):
            out.append(f"    {100 * count / max(total, 1):5.1f}%  {frame}")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--services", default="canonicalize,hash,dedup,rule_filter,sink")
    parser.add_argument("--teacher", action="store_true", help="profile the teacher path instead")
    parser.add_argument("--latency", default="lognormal:200:1.0")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=int, default=100, help="samples per second")
    parser.add_argument("--cpu", action="store_true", help="on-CPU samples only (default: wall time)")
    parser.add_argument("--out", type=Path, default=REPO / ".cache" / "bench" / "profile")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        sys.exit("py-spy is not installed: pip install py-spy")
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    work = REPO / ".cache" / "bench"
    args.out.mkdir(parents=True, exist_ok=True)
    dup = 0.0 if args.teacher else 0.02
    records = seeds.generate(args.rows, duplicate_rate=dup, prefix="teacher" if args.teacher else "bench")
    book = seeds.write_jsonl(records, work / "data" / "profile-seeds.jsonl")
    rows = seeds.load_rows(book, "measured")
    warm = seeds.generate(16, duplicate_rate=0.0, seed=1, prefix="warmup", offset=10**7)
    warmup = seeds.load_rows(seeds.write_jsonl(warm, work / "data" / "profile-warmup.jsonl"), "warmup")
    if args.teacher:
        bench = BenchStack(
            work, "bench-profile-teacher", teacher_steps(args.concurrency), bootstrap, batch_size=50
        )
    else:
        bench = BenchStack(work, "bench-profile", cpu_steps(), bootstrap)
    spies: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        if args.teacher:
            bench.start_sim(book, args.latency)
        bench.start()
        bench.run(warmup, "warmup")
        pids = bench.pids()
        for name in args.services.split(","):
            target = args.out / f"{name}.txt"
            cmd = [py_spy, "record", "--pid", str(pids[name]), "--rate", str(args.rate)]
            cmd += [] if args.cpu else ["--idle"]
            cmd += ["--format", "raw", "--output", str(target), "--nonblocking"]
            spies.append((name, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
        timing = bench.run(rows, "measured")
        print(json.dumps({"rows": timing.rows, "seconds": timing.seconds, "rows_per_s": timing.rows_per_s}))
    finally:
        for _, spy in spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for _, spy in spies:
            spy.wait(60)
        bench.stop()
    for name, _ in spies:
        path = args.out / f"{name}.txt"
        if path.exists():
            print(summarize(path))


if __name__ == "__main__":
    main()
