"""`fastdistill down`: stop a stack that `fastdistill up` started, found by the pid `up` records
in its workdir (so `down` stops only an `up` of that workdir, never a process that reused a pid)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Annotated

import psutil
import typer
from rich.console import Console

from fastdistill.errors import UserError

PID_FILE = "up.pid"
DEFAULT_WORKDIR = Path(".cache/stack")


def running_up(workdir: Path) -> psutil.Process | None:
    """The `fastdistill up` that recorded itself in `workdir`, if it still runs."""
    try:
        pid = int((workdir / PID_FILE).read_text().strip())
        proc = psutil.Process(pid)
        command = " ".join(proc.cmdline())
    except (OSError, ValueError, psutil.Error):
        return None
    return proc if "fastdistill" in command and " up" in command else None


def record_up(workdir: Path) -> None:
    """Called by `up` before it starts anything: one `up` per workdir."""
    other = running_up(workdir)
    if other is not None and other.pid != os.getpid():
        raise UserError(
            f"a `fastdistill up` (pid {other.pid}) already runs with workdir {workdir}",
            "stop it with `fastdistill down`, or give this one another --workdir",
            code=1,
        )
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / PID_FILE).write_text(f"{os.getpid()}\n")


def forget_up(workdir: Path) -> None:
    path = workdir / PID_FILE
    try:
        if int(path.read_text().strip()) == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def down(
    workdir: Annotated[Path, typer.Option(help="the workdir `up` was given")] = DEFAULT_WORKDIR,
    timeout_s: Annotated[float, typer.Option(help="how long to wait for it to stop everything")] = 60,
) -> None:
    """Stop the stack `fastdistill up` started from this workdir: SIGTERM to `up`, which stops its
    services, Prometheus and the broker it started, as on Ctrl-C; then wait for it to end."""
    proc = running_up(workdir)
    if proc is None:
        raise UserError(f"no `fastdistill up` runs with workdir {workdir}: nothing stopped", code=1)
    proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    if not _ended(proc, timeout_s):
        raise UserError(
            f"`fastdistill up` (pid {proc.pid}) still runs after {timeout_s:g} s",
            f"its logs are in {workdir}/logs; `kill -9 {proc.pid}` ends it without cleaning up",
            code=1,
        ) from None
    Console(stderr=True).print(
        f"stopped `fastdistill up` (pid {proc.pid}) in {time.monotonic() - started:.1f} s"
    )


def _ended(proc: psutil.Process, timeout_s: float) -> bool:
    """Whether `proc` ended within `timeout_s`; a zombie has (its parent, not us, reaps it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.2)
    return False


def register(app: typer.Typer) -> None:
    app.command()(down)
