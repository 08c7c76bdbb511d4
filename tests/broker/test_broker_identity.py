"""`fastdistill dev broker status|down` speak only of this checkout's broker.

Two real brokers, each with its own cache folder (FD_CACHE_DIR, as two checkouts have) and port.
The CLI runs as a user runs it, in a subprocess: `down` for one leaves the other running, and a
fresh checkout (a third cache folder) reports `stopped` and stops nothing on a port where another
checkout's broker runs, even when its pid file names that broker's pid.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fastdistill.dev import local_broker
from fastdistill.local_stack import free_port_pair

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Checkout:
    cache: Path  # what FD_CACHE_DIR names
    port: int

    @property
    def data_dir(self) -> Path:
        return self.cache / "kafka" / f"data-{self.port}"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = os.environ | {"FD_CACHE_DIR": str(self.cache)}
        cmd = [sys.executable, "-m", "fastdistill.cli", "dev", "broker", *args, "--port", str(self.port)]
        return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.fixture
def two_checkouts(tmp_path: Path) -> Iterator[tuple[Checkout, Checkout]]:
    a, b = Checkout(tmp_path / "a", free_port_pair()), Checkout(tmp_path / "b", free_port_pair())
    for checkout in (a, b):
        local_broker.up(checkout.port, checkout.data_dir)
    try:
        yield a, b
    finally:
        for checkout in (a, b):
            local_broker.stop_hard(checkout.port, checkout.data_dir)


def test_down_and_status_touch_only_this_checkouts_broker(
    two_checkouts: tuple[Checkout, Checkout], tmp_path: Path
) -> None:
    a, b = two_checkouts
    pid_b = local_broker.pid(b.port, b.data_dir)
    assert pid_b is not None

    status = b.cli("status")
    assert status.returncode == 0 and f"running: pid {pid_b}" in status.stderr

    # A fresh checkout on b's port: stopped, whatever listens there, and `down` stops nothing.
    fresh = Checkout(tmp_path / "fresh", b.port)
    status = fresh.cli("status")
    assert status.returncode == 1
    assert status.stderr.splitlines()[0] == "stopped"
    assert f"used by pid {pid_b}" in status.stderr and "not by this checkout's broker" in status.stderr
    down = fresh.cli("down")
    assert down.returncode == 0 and "nothing stopped" in down.stderr
    assert local_broker.is_running(b.port, b.data_dir)

    # Even a pid file naming b's pid does not make it ours: its command line names b's data folder.
    fresh.data_dir.mkdir(parents=True)
    (fresh.data_dir / local_broker.PID_FILE).write_text(str(pid_b))
    assert fresh.cli("status").returncode == 1
    assert "nothing stopped" in fresh.cli("down").stderr
    assert local_broker.is_running(b.port, b.data_dir)

    # Each checkout's own `down` stops its own broker and only that one.
    down = a.cli("down")
    assert down.returncode == 0 and "broker down (pid" in down.stderr
    assert not local_broker.is_running(a.port, a.data_dir)
    assert local_broker.is_running(b.port, b.data_dir)
    assert a.cli("status").returncode == 1
    assert b.cli("status").returncode == 0
