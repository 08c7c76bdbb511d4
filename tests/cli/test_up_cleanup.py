"""`fastdistill up --exit-when-done` leaves nothing running: every service, the simulator,
Prometheus, and the broker it started itself (`--keep-broker` keeps that one, and this
checkout's `dev broker down` then stops it).

`up` runs as `make run` runs it, as a process with no KAFKA_BOOTSTRAP_SERVERS, on a cache folder
of its own (FD_CACHE_DIR, the jars linked in) and a broker port of its own. Every process it
starts inherits a mark in its environment; after it exits, the processes still carrying the mark
are what it left behind.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from fastdistill.dev import local_broker
from fastdistill.local_stack import free_port, free_port_pair
from tests.e2e.coordinator_stack import SEEDS, pipeline_copy
from tests.orphans import describe, marked_processes

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
PROBE = "FD_UP_PROBE"


def _isolated(tmp_path: Path, mark: str) -> tuple[dict[str, str], Path, Path]:
    """`up`'s environment (no broker, no teacher given; a cache folder of its own), and 30 seeds."""
    cache = tmp_path / "cache"
    (cache / "kafka").mkdir(parents=True)
    (cache / "kafka" / "lib").symlink_to(local_broker.ensure_jars())
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(SEEDS.read_text().splitlines(keepends=True)[:30]))
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "OPENAI_BASE_URL")}
    return env | {"FD_CACHE_DIR": str(cache), PROBE: mark}, cache, seeds


def test_up_exit_when_done_stops_everything_it_started(tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    env, cache, seeds = _isolated(tmp_path, mark)
    pipeline = pipeline_copy(tmp_path, gates={})
    # 30 seeds cannot reach 1,000 rows: this one's run is rejected, and `up` says so by its exit status
    (tmp_path / "rejecting").mkdir()
    rejecting = pipeline_copy(tmp_path / "rejecting", gates={"min_total": 1000})
    port = free_port_pair()
    data_dir = cache / "kafka" / f"data-{port}"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fastdistill.cli", *args],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=400,
        )

    def left() -> dict[int, str]:
        return {p.pid: describe(p) for p in marked_processes(mark, PROBE)}

    def up(*options: str, rejected: bool = False) -> dict[int, str]:
        started = time.monotonic()
        done = cli(
            "up",
            "--pipeline",
            str(rejecting if rejected else pipeline),
            "--seeds",
            str(seeds),
            "--exit-when-done",
            "--broker-port",
            str(port),
            "--prometheus-port",
            str(free_port()),
            "--workdir",
            str(tmp_path / "stack"),
            "--timeout-s",
            "300",
            *options,
        )
        print(f"up {' '.join(options)}: exit {done.returncode} after {time.monotonic() - started:.1f}s")
        if rejected:
            assert done.returncode == 1, done.stderr[-3000:]
            assert '"released": false' in done.stdout + done.stderr
            assert "REJECTED by the quality gates" in done.stderr
            assert "gate: total " in done.stderr and " < min_total 1000.0000" in done.stderr
        else:
            assert done.returncode == 0, done.stderr[-3000:]
            assert '"released": true' in done.stdout + done.stderr
            # where the kept set is, and how many rows kept and rejected
            assert re.search(r"\d+ rows kept in \S+/keep_by_score/; \d+ rejected in ", done.stderr), (
                done.stderr[-2000:]
            )
        return left()

    try:
        assert up() == {}
        assert local_broker.pid(port, data_dir) is None

        kept = up("--keep-broker", rejected=True)
        broker = local_broker.pid(port, data_dir)
        assert broker is not None and local_broker.is_running(port, data_dir)
        assert list(kept) == [broker], kept
        down = cli("dev", "broker", "down", "--port", str(port))
        assert down.returncode == 0 and f"broker down (pid {broker})" in down.stderr
        assert left() == {}
    finally:
        local_broker.stop_hard(port, data_dir)
        for proc in marked_processes(mark, PROBE):
            proc.kill()
