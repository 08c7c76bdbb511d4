"""A test session fails if a process it started outlives it (tests/orphans.py), and kills it.

Each case runs an inner pytest session with the plugin on a tiny test file: one leaks a process
in its own session (as the local broker is started) through an intermediate process that exits,
so the leaked one is re-parented away from the session's tree; one stops what it started.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]

LEAK = """
import subprocess, sys
from pathlib import Path

def test_leaks():
    # A launcher that starts a long sleeper in its own session and exits at once.
    # Its own session (as the local broker), its output elsewhere (not this test's pipe).
    sleeper = "[sys.executable, '-c', 'import time; time.sleep(300)']"
    quiet = "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL"
    code = (
        "import subprocess, sys; "
        f"p = subprocess.Popen({sleeper}, start_new_session=True, {quiet}); "
        "print(p.pid)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    Path("leaked.pid").write_text(out.stdout.strip())
"""

CLEAN = """
import subprocess, sys

def test_cleans_up():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    proc.terminate()
    proc.wait(10)
"""


def _session(folder: Path, test_code: str) -> subprocess.CompletedProcess[str]:
    (folder / "test_inner.py").write_text(test_code)
    env = os.environ | {"PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.orphans"]
    return subprocess.run(
        [*cmd, "test_inner.py"], cwd=folder, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_a_session_that_leaks_a_process_fails_and_kills_it(tmp_path: Path) -> None:
    started = time.monotonic()
    done = _session(tmp_path, LEAK)
    leaked = int((tmp_path / "leaked.pid").read_text())
    assert done.returncode == 1, done.stdout
    assert "1 passed" in done.stdout  # the test itself passed: the session fails for the orphan
    assert "outlived it" in done.stdout and f"pid {leaked}: " in done.stdout
    assert not psutil.pid_exists(leaked) or psutil.Process(leaked).status() == psutil.STATUS_ZOMBIE
    print(f"leaking session: exit {done.returncode} after {time.monotonic() - started:.1f}s")


def test_a_session_that_stops_what_it_started_passes(tmp_path: Path) -> None:
    done = _session(tmp_path, CLEAN)
    assert done.returncode == 0, done.stdout
    assert "outlived" not in done.stdout
