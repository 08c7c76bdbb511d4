"""`fastdistill up` starts a service that exits again (its restart policy, on real processes
and a real broker); the policy itself: tests/cli/test_supervision.py."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from fastdistill.dev import local_broker
from fastdistill.local_stack import free_port_pair
from tests.cli.test_up_cleanup import PROBE, REPO, _isolated
from tests.e2e.coordinator_stack import pipeline_copy
from tests.orphans import describe, marked_processes

pytestmark = pytest.mark.kafka


def test_up_starts_a_killed_service_again_and_the_run_is_released(tmp_path: Path) -> None:
    """The sink SIGKILLed as soon as everything is up: the run can only be released if `up`
    starts it again (compose's `restart: unless-stopped`), and `up` says it did."""
    mark = uuid.uuid4().hex
    env, cache, seeds = _isolated(tmp_path, mark)
    pipeline = pipeline_copy(tmp_path, gates={})
    port = free_port_pair()
    argv = [sys.executable, "-m", "fastdistill.cli", "up", "--pipeline", str(pipeline), "--seeds", str(seeds)]
    argv += ["--exit-when-done", "--broker-port", str(port), "--prometheus-port", "0"]
    argv += ["--workdir", str(tmp_path / "stack"), "--timeout-s", "300"]
    up = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    said: list[str] = []
    killed = None
    try:
        assert up.stderr is not None
        for line in up.stderr:
            said.append(line)
            if killed is None and " processes up; logs in " in line:
                (sink,) = [p for p in marked_processes(mark, PROBE) if p.cmdline()[-2:] == ["serve", "sink"]]
                killed = sink.pid
                sink.kill()
        out = up.stdout.read() if up.stdout else ""
        assert up.wait(60) == 0, "".join(said)[-3000:]
    finally:
        if up.poll() is None:
            up.kill()
        local_broker.stop_hard(port, cache / "kafka" / f"data-{port}")
        for proc in marked_processes(mark, PROBE):
            proc.kill()
    text = "".join(said)
    assert killed is not None, text[-3000:]
    assert "sink exited (code -9): " in text and "; started again" in text, text[-3000:]
    assert '"released": true' in out + text
    assert {p.pid: describe(p) for p in marked_processes(mark, PROBE)} == {}
