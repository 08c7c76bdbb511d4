"""The watchdog ends a process that names a problem (a loop that stopped turning), and only such a process."""

from __future__ import annotations

import asyncio
import time

from shared.runtime.watchdog import EXIT_STALLED, loop_stall, watchdog


def test_a_stalled_loop_ends_the_process() -> None:
    started = time.monotonic()
    codes: list[int] = []

    async def main() -> None:
        async with watchdog("test", loop_stall(lambda: started, 0.2), 0.05, exit_process=codes.append):
            while time.monotonic() < started + 5 and not codes:
                await asyncio.sleep(0.02)

    asyncio.run(main())
    assert codes == [EXIT_STALLED]


def test_a_turning_loop_is_left_alone() -> None:
    beat = [time.monotonic()]

    async def turn() -> None:
        while True:
            beat[0] = time.monotonic()
            await asyncio.sleep(0.01)

    codes: list[int] = []

    async def main() -> None:
        task = asyncio.create_task(turn())
        async with watchdog("test", loop_stall(lambda: beat[0], 0.2), 0.05, exit_process=codes.append):
            await asyncio.sleep(1)
        task.cancel()

    asyncio.run(main())
    assert codes == []
