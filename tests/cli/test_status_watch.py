"""`fastdistill status --watch` in a real terminal (tmux): while the run goes it shows rates,
elapsed time and an ETA; at the end every stage's bar is complete (each against its own input,
after dedup too) with the verdict; then it exits by itself. Around it, on the same stack: an
unknown run is one line and exit 1 (with --watch within seconds), `status` alone shows the
latest run only, and `runs` lists runs one line each."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.e2e.coordinator_stack import SEEDS, pipeline_copy, running_pipeline

pytestmark = pytest.mark.kafka

FASTDISTILL = str(Path(sys.executable).parent / "fastdistill")
#: 40 seeds through a teacher that answers two at a time in 250 ms: a run of about 5 s
SEED_ROWS, LATENCY = 40, "fixed:250"


def _tmux(socket: str, *args: str) -> str:
    done = subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_status_watch_live_then_complete(tmp_path: Path, kafka_bootstrap: str) -> None:
    assert shutil.which("tmux"), "tmux drives this test"
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(SEEDS.read_text().splitlines(keepends=True)[:SEED_ROWS]))
    path = pipeline_copy(tmp_path, gates={}, max_concurrency=2)
    # chained (9 processes, not 12): the stack starts in half the time; status is the same
    path.write_text(path.read_text() + "chain: auto\n")
    t0 = time.monotonic()
    with running_pipeline(tmp_path, kafka_bootstrap, path, latency=LATENCY) as pipe:
        print(f"stack up in {time.monotonic() - t0:.1f}s")
        earlier = "run-earlier"
        first = pipe.produce(seeds, earlier, "--head", "5")  # while the unknown run is asked for
        started = time.monotonic()
        plain = pipe.popen_cli("status", "no-such-run")
        unknown = pipe.cli("status", "no-such-run", "--watch")
        took = time.monotonic() - started
        # it waits 10 s for a run just produced, then says so (before: forever); the rest is
        # starting Python and reading the runs and control topics on two shared cores
        print(f"status --watch of an unknown run: exit {unknown.returncode} after {took:.1f}s")
        assert unknown.returncode == 1 and took < 40, (took, unknown.stderr)
        assert unknown.stderr.strip().splitlines() == [
            f"no run 'no-such-run' in pipeline '{pipe.spec.name}' (`fastdistill runs` lists its runs)"
        ]
        assert plain.wait(60) == 1 and plain.stderr is not None and plain.stderr.read() == unknown.stderr

        print(f"unknown runs said in {time.monotonic() - t0:.1f}s")
        assert first.wait(60) == 0
        pipe.wait(earlier)
        print(f"earlier run done at {time.monotonic() - t0:.1f}s")
        run_id = "run-watched"
        producer = pipe.produce(seeds, run_id)
        env = pipe.stack.base_env() | {"TERM": "xterm-256color", "COLUMNS": "150"}
        command = " ".join(
            [
                "env",
                *(shlex.quote(f"{k}={v}") for k, v in env.items() if k.isidentifier()),
                shlex.quote(FASTDISTILL),
                "status",
                run_id,
                "--watch",
                "--pipeline",
                shlex.quote(str(path)),
                "; echo WATCH-EXITED=$?; sleep 60",
            ]
        )
        socket = f"fd-{uuid.uuid4().hex[:8]}"
        _tmux(socket, "new-session", "-d", "-s", "watch", "-x", "160", "-y", "50", command)
        frames = []
        try:
            deadline = time.monotonic() + 120
            while "WATCH-EXITED" not in (frames[-1] if frames else ""):
                assert time.monotonic() < deadline, frames[-1] if frames else "no frame"
                frames.append(_tmux(socket, "capture-pane", "-p", "-t", "watch"))
                time.sleep(0.3)
        finally:
            subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, timeout=30)
            producer.wait(60)
        print(f"watched run done at {time.monotonic() - t0:.1f}s")
        final = frames[-1]
        live = [f for f in frames if "· running" in f]
        print(f"{len(frames)} frames, {len(live)} while running; the last:\n{final}")
        # live: the run was seen going, with its rates, elapsed time and an ETA
        assert live and any(re.search(r"ETA \d+(m\d\ds|s) \(\d+% done\)", f) for f in live), live[-1:]
        assert "rows/s" in live[-1] and "elapsed" in live[-1]
        # the end: the verdict, every stage complete, rates, and the command ended by itself
        assert "WATCH-EXITED=0" in final and "gate PASSED" in final
        rows = {m.group(1): m.group(2) for m in re.finditer(r"^\s*│?\s*(\w+)\s.*?(\d+)%", final, re.M)}
        assert set(pipe.spec.stages) <= set(rows), rows
        assert set(rows.values()) == {"100"}, rows
        seeds_row = next(line for line in final.splitlines() if re.match(r"\W*seeds\s", line))
        assert float(seeds_row.split("│")[-3].replace(",", "")) > 0  # rows/s of the seeds
        assert "elapsed" in final and "ETA" not in final

        latest = pipe.cli("status")
        assert latest.returncode == 0 and run_id in latest.stdout and earlier not in latest.stdout
        listed = pipe.cli("runs").stdout.strip().splitlines()
        assert [line.split()[:2] for line in listed] == [[earlier, "done"], [run_id, "done"]], listed
        assert re.fullmatch(rf"{run_id}  done  \d+ rows  passed  \d+s ago", listed[1]), listed

        # A run produced while the coordinator is down: the watch says it waits for it (it does
        # not take the run for unknown after its 10 s, nor end).
        assert pipe.stack.retire("coordinator") is not None
        assert pipe.produce(seeds, "run-orphan", "--head", "3").wait(60) == 0
        waiting = pipe.popen_cli("status", "run-orphan", "--watch")
        try:
            assert waiting.stderr is not None
            said = waiting.stderr.readline()
            assert said.strip() == "run 'run-orphan' is produced; waiting for the coordinator to publish it"
            assert waiting.poll() is None
        finally:
            waiting.kill()
            waiting.wait(10)
