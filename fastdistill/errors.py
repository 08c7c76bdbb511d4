"""Errors for people: every failure of a `fastdistill` command becomes at most three lines naming
the file, step, setting or port that is wrong and what to do, instead of a traceback.

One layer for every command (`fastdistill.cli.main` calls `report`): commands raise `UserError`
(or let a known exception through: a missing file, a port in use) and never print their own
failures. `--debug` or FD_DEBUG=1 shows the traceback instead.
"""

from __future__ import annotations

import errno
import os
import re
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

#: The most lines an error takes; the problems of a pipeline beyond it are counted, not shown.
MAX_LINES = 3

DEBUG_ENV = "FD_DEBUG"


class UserError(Exception):
    """Something the user can fix: `lines` say what is wrong (each naming the thing) and the last
    one what to do. `code` is the exit status (2: bad input, 1: something not there or not up)."""

    def __init__(self, *lines: str, code: int = 2) -> None:
        super().__init__("\n".join(lines))
        self.lines = list(lines)
        self.code = code


class Debug:
    """Whether tracebacks are wanted: --debug (set by the CLI's callback) or FD_DEBUG=1."""

    on = False

    @classmethod
    def wanted(cls) -> bool:
        return cls.on or os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes")


def problems_error(path: Path | str, problems: Sequence[str], every: bool = False) -> UserError:
    """A pipeline's problems, one line each naming the file (and the step): all of them when they
    fit (or `every`), else the first ones and where to see the rest."""
    if every or len(problems) <= MAX_LINES:
        return UserError(*(f"{path}: {p}" for p in problems))
    shown = [f"{path}: {p}" for p in problems[: MAX_LINES - 1]]
    rest = len(problems) - len(shown)
    return UserError(*shown, f"... and {rest} more problems: `fastdistill validate {path}` lists them all")


def explain(exc: BaseException) -> UserError | None:
    """The people's version of an exception nobody turned into a UserError; None for a bug."""
    if isinstance(exc, UserError):
        return exc
    if isinstance(exc, FileNotFoundError) and exc.filename is not None:
        return UserError(
            f"{exc.filename}: no such file", "check the path (a relative one starts where you are)"
        )
    if isinstance(exc, PermissionError) and exc.filename is not None:
        return UserError(f"{exc.filename}: permission denied")
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        # "address already in use" stays in the line: LocalStack reads it in a service's log to
        # pick another port.
        port = _port_in(str(exc))
        where = f"port {port}" if port else "the port"
        return UserError(
            f"{where} is taken (address already in use): another `fastdistill serve` or another program "
            "listens there",
            "stop that one, or set FD_METRICS_PORT to a free port for this one",
            code=1,
        )
    return _kafka_error(exc)


def _kafka_error(exc: BaseException) -> UserError | None:
    from confluent_kafka import KafkaError, KafkaException

    if not isinstance(exc, KafkaException):
        return None
    error: Any = exc.args[0] if exc.args else None
    text = str(error.str()) if isinstance(error, KafkaError) else str(exc)
    unreachable = (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT)
    if isinstance(error, KafkaError) and error.code() not in unreachable:
        return UserError(f"Kafka: {text}", code=1)  # its own words say what is wrong (a topic, an id)
    return UserError(
        f"Kafka: {text}",
        "is the broker up? `fastdistill dev broker up` starts the local one (KAFKA_BOOTSTRAP_SERVERS "
        "names another)",
        code=1,
    )


def _port_in(message: str) -> int | None:
    # aiohttp: "... bind on address ('0.0.0.0', 9100): address already in use"
    found = re.search(r"[',:]\s*(\d{2,5})\)", message)
    return int(found.group(1)) if found else None


def report(exc: BaseException, command: str, console: Console | None = None) -> int:
    """Print `exc` for people (at most MAX_LINES lines on stderr); the exit status to use."""
    console = console or Console(stderr=True)
    error = explain(exc)
    if error is None:
        first = (str(exc).strip().splitlines() or [""])[0]
        error = UserError(
            f"fastdistill {command}: unexpected {type(exc).__name__}: {first}",
            f"run it again with --debug (or {DEBUG_ENV}=1) for the traceback, and report it if it is a bug",
            code=1,
        )
    for number, line in enumerate(error.lines):
        style = "red" if number == 0 else None
        # soft_wrap: one line each, whatever the terminal's width (or none, in a pipe).
        console.print(escape(line), style=style, highlight=False, soft_wrap=True)
    return error.code


def _cli_flow(exc: BaseException) -> bool:
    """typer's and click's own exceptions (an exit status, a usage error, Ctrl-C): theirs to show."""
    return type(exc).__module__.startswith(("typer.", "click."))


class FriendlyGroup(TyperGroup):
    """The root command group: any exception of any command, at any depth, is `report`ed and
    becomes its exit status (typer.Exit), unless tracebacks are wanted."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            if _cli_flow(exc) or Debug.wanted():
                raise
            command = ctx.invoked_subcommand or "?"
            if command == "serve" and explain(exc) is None:
                # A service's log is all an operator has of a crash: a bug keeps its traceback.
                traceback.print_exc()
            raise typer.Exit(report(exc, command)) from None
