"""AIMD limiter: slot accounting, additive increase, one multiplicative cut per congestion epoch."""

from __future__ import annotations

import asyncio

import pytest

from services.llm.limiter import AimdLimiter


def test_rejects_inconsistent_bounds() -> None:
    with pytest.raises(ValueError):
        AimdLimiter(4, min_limit=5)
    with pytest.raises(ValueError):
        AimdLimiter(4, decrease_factor=1.0)


def test_starts_at_max_unless_told() -> None:
    assert AimdLimiter(32).limit == 32
    assert AimdLimiter(32, initial=4).limit == 4
    assert AimdLimiter(32, min_limit=2, initial=1).limit == 2


def test_overload_halves_down_to_the_floor() -> None:
    lim = AimdLimiter(32, min_limit=3)
    limits = []
    for _ in range(5):
        assert lim.on_overload()
        limits.append(lim.limit)
    assert limits == [16, 8, 4, 3, 3]


def test_one_cut_per_epoch() -> None:
    lim = AimdLimiter(32)
    epoch = lim.epoch
    # 32 requests in flight together all see a 429: that is one congestion signal.
    assert lim.on_overload(epoch)
    assert not any(lim.on_overload(epoch) for _ in range(31))
    assert lim.limit == 16
    # A request started after the cut may cut again.
    assert lim.on_overload(lim.epoch)
    assert lim.limit == 8


def test_additive_increase_every_n_successes_up_to_max() -> None:
    lim = AimdLimiter(10, initial=5, increase_every=4)
    for _ in range(3):
        lim.on_success()
    assert lim.limit == 5
    lim.on_success()
    assert lim.limit == 6
    for _ in range(100):
        lim.on_success()
    assert lim.limit == 10


def test_overload_resets_the_success_count() -> None:
    lim = AimdLimiter(10, initial=8, increase_every=4)
    for _ in range(3):
        lim.on_success()
    lim.on_overload()
    lim.on_success()
    assert lim.limit == 4


async def _peak_concurrency(lim: AimdLimiter, tasks: int, hold_s: float = 0.002) -> int:
    current = peak = 0

    async def work() -> None:
        nonlocal current, peak
        async with lim:
            current += 1
            peak = max(peak, current)
            await asyncio.sleep(hold_s)
            current -= 1

    await asyncio.gather(*(work() for _ in range(tasks)))
    return peak


def test_never_exceeds_the_limit_and_uses_it_all() -> None:
    lim = AimdLimiter(7)
    assert asyncio.run(_peak_concurrency(lim, 100)) == 7
    assert lim.in_flight == 0
    assert lim.waiting == 0


def test_lowered_limit_holds_new_work_until_in_flight_drains() -> None:
    async def scenario() -> list[int]:
        lim = AimdLimiter(4)
        held = [await lim.acquire() for _ in range(4)]
        assert held == [0, 0, 0, 0]
        lim.on_overload()  # limit 2 with 4 in flight
        waiter = asyncio.ensure_future(lim.acquire())
        seen = []
        for _ in range(3):
            await asyncio.sleep(0)
            lim.release()
            await asyncio.sleep(0)
            seen.append(int(waiter.done()))
        # Only once in flight fell below 2 (after the third release) may the waiter enter.
        assert await waiter == 1
        return seen

    assert asyncio.run(scenario()) == [0, 0, 1]


def test_increase_admits_a_waiter() -> None:
    async def scenario() -> None:
        lim = AimdLimiter(2, initial=1, increase_every=1)
        await lim.acquire()
        waiter = asyncio.ensure_future(lim.acquire())
        await asyncio.sleep(0)
        assert not waiter.done()
        lim.on_success()
        await asyncio.sleep(0)
        assert waiter.done()
        assert lim.in_flight == 2

    asyncio.run(scenario())


def test_cancelled_waiters_do_not_leak_slots() -> None:
    async def scenario() -> AimdLimiter:
        lim = AimdLimiter(1)
        await lim.acquire()
        waiters = [asyncio.ensure_future(lim.acquire()) for _ in range(3)]
        await asyncio.sleep(0)
        waiters[0].cancel()
        lim.release()  # hands the slot to waiters[1], skipping the cancelled one
        await asyncio.sleep(0)
        assert waiters[1].done() and not waiters[2].done()
        waiters[2].cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
        lim.release()
        return lim

    lim = asyncio.run(scenario())
    assert lim.in_flight == 0
    assert lim.waiting == 0


def test_granted_then_cancelled_passes_the_slot_on() -> None:
    async def scenario() -> AimdLimiter:
        lim = AimdLimiter(1)
        await lim.acquire()
        first = asyncio.ensure_future(lim.acquire())
        second = asyncio.ensure_future(lim.acquire())
        await asyncio.sleep(0)
        lim.release()  # grants `first`...
        first.cancel()  # ...which is cancelled before it runs
        await asyncio.gather(first, return_exceptions=True)
        await asyncio.sleep(0)
        assert second.done()
        lim.release()
        return lim

    lim = asyncio.run(scenario())
    assert lim.in_flight == 0
