"""No process a test session started may outlive it (a pytest plugin; tests/conftest.py loads it).

At the start the session puts a fresh mark in its environment (`FD_TEST_SESSION=<id>`). Every
process it starts inherits it — brokers, services, simulators, Prometheus, and what those start
in turn, even once re-parented to init when the process between them exits. At the end every
process still carrying the mark is an orphan: it is reported, stopped, and the session fails.
A process a fixture hands on deliberately (the shared local broker other sessions still use)
is declared with `hand_over`.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator

import psutil
import pytest

MARK = "FD_TEST_SESSION"
#: How long processes asked to stop at the end of the last test may take to be gone.
GRACE_S = 10.0

_session_mark: str | None = None
_handed_over: set[int] = set()


def hand_over(pid: int) -> None:
    """`pid` outlives the session on purpose (another session uses it)."""
    _handed_over.add(pid)


def marked_processes(mark: str, key: str = MARK) -> Iterator[psutil.Process]:
    """Live processes whose environment holds `key=mark`, but this one."""
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        with contextlib.suppress(psutil.Error):
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(key) == mark:
                yield proc


def describe(proc: psutil.Process) -> str:
    try:
        return f"pid {proc.pid}: {' '.join(proc.cmdline())[:200]}"
    except psutil.Error:
        return f"pid {proc.pid}: (gone)"


def pytest_sessionstart(session: pytest.Session) -> None:
    global _session_mark
    _session_mark = uuid.uuid4().hex
    os.environ[MARK] = _session_mark


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _session_mark is None:
        return
    deadline = time.monotonic() + GRACE_S
    empty_scans = 0
    while True:
        left = [p for p in marked_processes(_session_mark) if p.pid not in _handed_over]
        # Two empty scans in a row: a process in the middle of execve shows an empty environment
        # for a moment, so one scan could miss it (seen once on a loaded machine).
        empty_scans = 0 if left else empty_scans + 1
        if empty_scans >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if not left:
        return
    lines = [describe(p) for p in left]
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(left, timeout=10)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    text = f"{len(left)} process(es) started by this test session outlived it (now killed):"
    if reporter is not None:
        reporter.write_line("")
        reporter.write_line(text, red=True, bold=True)
        for line in lines:
            reporter.write_line(f"  {line}", red=True)
    else:
        print(text, *lines, sep="\n  ")
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
