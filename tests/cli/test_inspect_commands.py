"""`topics list`, `tail` and `down` against a stack `fastdistill up` started on the real broker:
the pipeline's topics with partitions and end offsets, a stage's last rows decoded from Avro to
JSON lines (and new ones with --follow), and `down` ending `up` and every process it started."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.e2e.coordinator_stack import SEEDS, pipeline_copy

pytestmark = pytest.mark.kafka

FASTDISTILL = str(Path(sys.executable).parent / "fastdistill")
REPO = Path(__file__).resolve().parents[2]


def test_topics_tail_and_down_on_a_stack_up_started(tmp_path: Path, kafka_bootstrap: str) -> None:
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(SEEDS.read_text().splitlines(keepends=True)[:20]))
    path = pipeline_copy(tmp_path, gates={})
    path.write_text(path.read_text() + "chain: auto\n")  # fewer processes, same topics
    name = path.read_text().split("name: ", 1)[1].split()[0]
    workdir = tmp_path / "stack"
    env = os.environ | {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "FD_PIPELINE": str(path)}
    env.pop("OPENAI_BASE_URL", None)  # up starts the simulator

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [FASTDISTILL, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
        )
        print(
            f"$ fastdistill {' '.join(args)} -> {done.returncode}\n{done.stdout[-1500:]}{done.stderr[-1500:]}"
        )
        return done

    log = tmp_path / "up.log"
    with open(log, "w") as out:
        up = subprocess.Popen(
            [FASTDISTILL, "up", "--seeds", str(seeds), "--workdir", str(workdir), "--prometheus-port", "0"],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 240
        while "report: " not in log.read_text():
            assert up.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        started = {p.pid for p in psutil.Process(up.pid).children(recursive=True)}
        assert len(started) >= 5

        listed = cli("topics", "list")
        assert listed.returncode == 0
        table = {line.split()[0]: line.split()[1:] for line in listed.stdout.splitlines()[1:]}
        assert (
            f"fd.{name}.seeds" in table and f"fd.{name}.keep_by_score" in table and f"fd.{name}.runs" in table
        )
        partitions, total = table[f"fd.{name}.seeds"][:2]
        assert partitions == "4" and int(total) > 0

        tailed = cli("tail", "seeds", "-n", "3")
        rows = [json.loads(line) for line in tailed.stdout.splitlines()]
        assert tailed.returncode == 0 and len(rows) == 3
        assert all(r["run_id"].startswith("run-") and r["task_id"].startswith("text2sql-") for r in rows)
        kept = [json.loads(line) for line in cli("tail", "keep_by_score", "-n", "5").stdout.splitlines()]
        assert len(kept) == 5 and all("keep" in r and "teacher_score" in r for r in kept)
        assert cli("tail", "runs", "-n", "1").stdout.count("\n") == 1  # JSON topics too
        # the last offsets of a stage are end-of-run markers: still one row
        assert len(cli("tail", "keep_by_score", "-n", "1").stdout.splitlines()) == 1
        wrong = cli("tail", "teacher_x")
        assert wrong.returncode == 1 and len(wrong.stderr.strip().splitlines()) == 2
        assert "no topic 'teacher_x'" in wrong.stderr and "keep_by_score" in wrong.stderr

        follow = subprocess.Popen(
            [FASTDISTILL, "tail", "seeds", "-n", "0", "--follow"], env=env, stdout=subprocess.PIPE, text=True
        )
        try:
            time.sleep(3)  # it has assigned itself the ends
            assert cli("produce", str(seeds), "--run-id", "followed", "--head", "2").returncode == 0
            followed = [json.loads(follow.stdout.readline()) for _ in range(2)]
        finally:
            follow.terminate()
            follow.wait(30)
        assert [r["run_id"] for r in followed] == ["followed", "followed"]

        stopped = cli("down", "--workdir", str(workdir))
        assert stopped.returncode == 0 and f"stopped `fastdistill up` (pid {up.pid})" in stopped.stderr
        assert up.poll() is not None
        assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in started)
        assert not (workdir / "up.pid").exists()
        again = cli("down", "--workdir", str(workdir))
        assert again.returncode == 1 and "nothing stopped" in again.stderr
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(30)
