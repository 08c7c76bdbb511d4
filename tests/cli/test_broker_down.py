"""With no broker answering, `produce` and `status` fail in seconds, in a few lines, and say how
to start one (not half a minute of librdkafka's retries and hundreds of log lines)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SEEDS = REPO / "examples/text2sql/seeds.jsonl"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


def _run(args: list[str], bootstrap: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = os.environ | {"KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "fastdistill.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    print(f"{args[0]} against {bootstrap}: exit {done.returncode} after {elapsed:.1f}s")
    return done, elapsed


@pytest.mark.parametrize("args", [["produce", str(SEEDS)], ["status"]], ids=["produce", "status"])
def test_broker_down_is_said_in_seconds(args: list[str]) -> None:
    done, elapsed = _run(args, f"127.0.0.1:{_closed_port()}")
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 1
    assert elapsed < 10
    assert len(lines) <= 3, lines
    assert "no Kafka broker answers at 127.0.0.1:" in lines[0]
    assert "fastdistill dev broker up" in lines[-1]


@pytest.mark.slow
def test_a_listener_that_is_no_broker_is_said_in_seconds() -> None:
    """TCP accepts, Kafka never answers: the metadata request's own short timeout decides."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        done, elapsed = _run(["status"], f"127.0.0.1:{silent.getsockname()[1]}")
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 1 and elapsed < 10
    assert len(lines) <= 3, lines
    assert "fastdistill dev broker up" in lines[-1]
