"""The coordinator's and sink's poll loop: turns until stopped, and commits on the way out."""

from __future__ import annotations

import asyncio

from shared.runtime.poll_loop import PollLoop


def test_loop_turns_until_stopped_and_commits_last() -> None:
    loop = PollLoop()
    calls: list[str] = []

    def turn() -> None:
        calls.append("turn")
        if calls.count("turn") == 3:
            loop.stop()

    asyncio.run(loop.run(turn, lambda: calls.append("commit")))
    assert calls.count("turn") == 3
    # Whatever the third turn read is committed before the service closes its consumer.
    assert calls[-1] == "commit"
    assert loop.stalled_for() >= 0
