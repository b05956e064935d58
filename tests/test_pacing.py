"""The write deadline and heartbeat timer shared by every transport (``trio_sse/_pacing.py``)."""

from __future__ import annotations

import trio
import trio.testing

from trio_sse._pacing import WriteClock, write_within


async def test_write_within_reports_a_stall_at_its_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = trio.current_time()
    assert await write_within(5, trio.sleep, 4.9)
    assert not await write_within(5, trio.sleep, 6)
    assert trio.current_time() - start == 4.9 + 5


async def test_heartbeats_follow_the_last_write(autojump_clock: trio.testing.MockClock) -> None:
    clock = WriteClock(10)
    start = trio.current_time()
    beats: list[float] = []

    async def on_wake() -> None:
        if clock.due():
            beats.append(trio.current_time() - start)
            clock.wrote()

    async def writer() -> None:
        await trio.sleep(14)  # after the beat at 10: the next is due at 24
        clock.wrote()
        await trio.sleep(29)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(clock.run, trio.sleep_forever, on_wake)
        await writer()
        nursery.cancel_scope.cancel()
    assert beats == [10, 24, 34]


async def test_a_wake_that_writes_nothing_rearms_an_interval_later(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A heartbeat that cannot be sent now (a write in progress) must not spin."""
    clock = WriteClock(10)
    start = trio.current_time()
    wakes: list[float] = []

    async def skip() -> None:
        wakes.append(trio.current_time() - start)
        assert len(wakes) < 10, "busy loop"  # virtual time would never advance

    with trio.move_on_after(35):
        await clock.run(trio.sleep_forever, skip)
    assert wakes == [10, 20, 30]


async def test_wake_now_and_pending(autojump_clock: trio.testing.MockClock) -> None:
    clock = WriteClock(None)  # no heartbeat: only wake_now() and pending wake it
    pending = [True]
    wakes: list[float] = []
    start = trio.current_time()

    async def on_wake() -> None:
        wakes.append(trio.current_time() - start)
        pending[0] = False

    async with trio.open_nursery() as nursery:
        nursery.start_soon(clock.run, trio.sleep_forever, on_wake, lambda: pending[0])
        await trio.sleep(3)
        clock.wake_now()
        await trio.sleep(100)
        nursery.cancel_scope.cancel()
    assert wakes == [0, 3]


async def test_run_returns_when_wait_returns(autojump_clock: trio.testing.MockClock) -> None:
    clock = WriteClock(10)
    gone = trio.Event()
    beats = 0

    async def on_wake() -> None:
        nonlocal beats
        beats += 1
        clock.wrote()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(clock.run, gone.wait, on_wake)
        await trio.sleep(25)
        gone.set()
    assert beats == 2
