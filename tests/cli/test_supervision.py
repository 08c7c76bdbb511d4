"""`fastdistill up`'s restart policy on real (tiny) processes, no broker: an exited process is
started again after its pause, a crash loop is left down and reported, a process that lost its
port gets a new one without counting as a crash, and a live process is never touched."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from fastdistill.local_stack import LocalStack
from fastdistill.supervision import RestartPolicy, exit_reason

#: Exits with code 3 and an error line the first `FAILS` times it starts, then stays up.
FLAKY = """
import pathlib, sys, time
count = pathlib.Path(sys.argv[1])
n = int(count.read_text()) if count.exists() else 0
count.write_text(str(n + 1))
if n < int(sys.argv[2]):
    print(f"ERROR start {n}: broker said Not coordinator", flush=True)
    sys.exit(3)
time.sleep(120)
"""


def _stack(tmp_path: Path, policy: RestartPolicy | None, fails: int, *extra: str) -> LocalStack:
    stack = LocalStack(tmp_path / "pipeline.yaml", tmp_path, restart_policy=policy)
    script = tmp_path / "flaky.py"
    script.write_text(FLAKY + "".join(extra))
    stack.add("step", [sys.executable, str(script), str(tmp_path / "count"), str(fails)]).start()
    return stack


Done = Callable[[LocalStack, list[str]], bool]


def _until(stack: LocalStack, done: Done, timeout_s: float = 20) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lost = stack.lost()
        if done(stack, lost):
            return lost
        time.sleep(0.05)
    raise AssertionError(f"not there in {timeout_s}s: {stack.services['step']}")


def test_an_exited_process_is_started_again_and_its_reason_told(tmp_path: Path) -> None:
    told = []
    policy = RestartPolicy(backoff_s=0.1, on_exit=told.append)
    stack = _stack(tmp_path, policy, fails=2)
    try:
        lost = _until(stack, lambda s, lost: s.services["step"].restarts == 2 and s.services["step"].alive())
        assert lost == []
        assert [(e.name, e.code, e.restarted) for e in told] == [("step", 3, True), ("step", 3, True)]
        assert told[-1].reason == "ERROR start 1: broker said Not coordinator"
        time.sleep(0.3)
        assert stack.lost() == [] and stack.services["step"].restarts == 2  # a live one is left alone
    finally:
        stack.stop()


def test_a_crash_loop_is_left_down_and_reported(tmp_path: Path) -> None:
    policy = RestartPolicy(give_up_after=3, backoff_s=0.1)
    stack = _stack(tmp_path, policy, fails=100)
    try:
        _until(stack, lambda s, lost: lost == ["step"])
        assert stack.services["step"].restarts == 2
        assert [e.restarted for e in policy.exits] == [True, True, False]
        assert policy.given_up["step"].reason.startswith("ERROR start 2:")
        time.sleep(0.3)
        assert stack.lost() == ["step"] and not stack.services["step"].alive()  # stays down
    finally:
        stack.stop()


def test_an_exit_long_after_the_start_does_not_count_towards_a_crash_loop(tmp_path: Path) -> None:
    # quick_exit_s=0: every exit counts as a late one, so five exits never make a loop
    policy = RestartPolicy(give_up_after=2, backoff_s=0.05, quick_exit_s=0)
    stack = _stack(tmp_path, policy, fails=5)
    try:
        assert _until(stack, lambda s, lost: s.services["step"].restarts == 5) == []
    finally:
        stack.stop()


def test_a_process_that_lost_its_port_gets_another_and_no_crash_is_counted(tmp_path: Path) -> None:
    policy = RestartPolicy(give_up_after=1, backoff_s=0.1)
    stack = LocalStack(tmp_path / "pipeline.yaml", tmp_path, restart_policy=policy)
    script = tmp_path / "taken.py"
    script.write_text(
        "import os, sys, time\n"
        "if os.environ['FD_METRICS_PORT'] == sys.argv[1]:\n"
        "    print('OSError: [Errno 98] address already in use', flush=True); sys.exit(1)\n"
        "time.sleep(120)\n"
    )
    svc = stack.add("step", [sys.executable, str(script)])
    first = svc.port
    svc.argv.append(str(first))
    svc.start()
    try:
        assert _until(stack, lambda s, lost: s.services["step"].restarts == 1 and svc.alive()) == []
        assert svc.port != first and svc.env["FD_METRICS_PORT"] == str(svc.port)
    finally:
        stack.stop()


def test_without_a_policy_every_exit_is_final(tmp_path: Path) -> None:
    stack = _stack(tmp_path, None, fails=1)
    try:
        assert _until(stack, lambda s, lost: lost == ["step"]) == ["step"]
        assert stack.services["step"].restarts == 0
    finally:
        stack.stop()


def test_the_watchdog_line_is_the_reason_even_under_its_thread_dump() -> None:
    dump = "\n".join(f'  File "/x.py", line {i} in f' for i in range(300))
    critical = "2026-12-01 00:06:29,704 CRITICAL watchdog: teacher: loop stalled for 45 s: exiting"
    text = f"{critical}\n{dump}\n"
    assert "loop stalled for 45 s" in exit_reason(text)
    fatal = "shared.runtime.transport.TransportFatal: fenced by a newer instance"
    traceback = f'Traceback:\n  File "a.py"\n{fatal}\n'
    assert exit_reason(traceback).startswith("shared.runtime.transport.TransportFatal: fenced")
    assert exit_reason("") == "(no output)"
