"""Sliced fan-out (``_fanout.py``): bounded work between checkpoints, same order and policy."""

from __future__ import annotations

import gc

import pytest
import trio
import trio.testing
from brokers import Ticks, start_direct_writers

from trio_sse import Broker, Event, TopicOptions
from trio_sse._subscription import Subscription


async def test_events_published_during_a_sliced_pass_keep_order_without_duplicates() -> None:
    broker = Broker(TopicOptions(fanout_slice=100))
    topic = broker.topic("t")
    ticks = Ticks()
    received: list[list[str]] = [[] for _ in range(1000)]
    late: dict[str, list[str]] = {}
    done = trio.Event()

    async def meddle() -> None:
        # Runs between two slices of the pass of "a": some have it, others not.
        while not (0 < sum(1 for got in received if got) < len(received)):
            await trio.lowlevel.checkpoint()
        first = topic.publish_nowait(Event("b"))  # deferred behind the pass
        async with topic.subscribe() as fresh, topic.subscribe(first.id) as resumed:
            assert resumed.replayed == 0
            topic.publish_nowait(Event("c"))
            await trio.testing.wait_all_tasks_blocked()
            late["fresh"] = [e.data or "" for e in await fresh.receive_batch()]
            late["resumed"] = [e.data or "" for e in await resumed.receive_batch()]
        done.set()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await start_direct_writers(nursery, topic, ticks, received)
            nursery.start_soon(meddle)
            await topic.publish(Event("a"))
            await done.wait()
            assert late == {"fresh": ["c"], "resumed": ["c"]}
            nursery.cancel_scope.cancel()
    assert all(got == ["a", "b", "c"] for got in received)
    assert topic.stats().delivered == 3 * 1000 + 2


async def test_slices_bound_the_work_between_checkpoints() -> None:
    broker = Broker(TopicOptions(fanout_slice=100))
    topic = broker.topic("t")
    ticks = Ticks()
    received: list[list[str]] = [[] for _ in range(1000)]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await start_direct_writers(nursery, topic, ticks, received)
            nursery.start_soon(ticks.run)
            await trio.lowlevel.checkpoint()
            ticks.longest = 0
            for name in "abc":
                await topic.publish(Event(name))
            # Another task ran at least once every two slices (trio runs a
            # batch of tasks in random order): 3,000 deliveries without slices.
            assert ticks.longest <= 200
            nursery.cancel_scope.cancel()
    assert all(got == ["a", "b", "c"] for got in received)


async def test_a_pass_skips_members_that_left_and_calls_their_current_function() -> None:
    # Rule 1: the pass calls the functions of its snapshot only while no
    # dict entry was written since; between two slices here one member
    # leaves and another falls back from DIRECT to its queue.
    broker = Broker(TopicOptions(fanout_slice=10))
    topic = broker.topic("t")
    ticks = Ticks()
    received: list[list[str]] = [[] for _ in range(50)]
    how: list[str] = []
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await start_direct_writers(nursery, topic, ticks, received)
            # Joined last: members of the last slice.
            leaving = topic.subscribe()
            await leaving.__aenter__()
            woken = topic.subscribe()
            await woken.__aenter__()

            async def writer() -> None:
                def sink(event: Event) -> bool:
                    how.append(f"sink {event.data}")
                    return True

                woken._set_direct_sink(sink)
                batch = await woken.receive_batch()
                how.extend(f"queue {e.data}" for e in batch)

            async def meddle() -> None:
                while not any(received):  # the first slice is served
                    await trio.lowlevel.checkpoint()
                await leaving.__aexit__(None, None, None)
                woken._undirect()  # what a woken parked stream does (_parked.py)

            nursery.start_soon(writer)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(meddle)
            await topic.publish(Event("a"))
            await trio.testing.wait_all_tasks_blocked()
            assert how == ["queue a"]
            assert all(got == ["a"] for got in received)
            assert topic.stats().delivered == 51  # not the one that left
            nursery.cancel_scope.cancel()


async def test_a_steady_topic_keeps_its_snapshot_until_a_subscriber_changes() -> None:
    # Rule 1: the passes of a steady topic share one snapshot. A join or a
    # leave drops it (as does a mode change: the same write), so the next
    # pass sees the change and the topic holds no reference to one that left.
    broker = Broker(TopicOptions(fanout_slice=10))
    topic = broker.topic("t")
    ticks = Ticks()
    received: list[list[str]] = [[] for _ in range(30)]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await start_direct_writers(nursery, topic, ticks, received)
            await topic.publish(Event("a"))
            kept = topic._members
            assert kept is not None
            await topic.publish(Event("b"))
            assert topic._members is kept
            joining = topic.subscribe()
            await joining.__aenter__()
            assert topic._members is None
            await topic.publish(Event("c"))
            assert topic._members is not None
            assert joining in topic._members[0]
            await joining.__aexit__(None, None, None)
            assert topic._members is None
            await topic.publish(Event("d"))
            assert topic._members is not None
            assert joining not in topic._members[0]
            assert len(topic._members[0]) == len(received)
            nursery.cancel_scope.cancel()
    assert all(got == ["a", "b", "c", "d"] for got in received)


#: More than CPython keeps free tuples of one size (2,000), which are reused
#: without counting as allocations.
MEMBERS = 3000


async def test_a_sliced_pass_allocates_nothing_per_member() -> None:
    # Objects per member per event would be 10,000 for the cyclic GC to
    # track (and collect) at 10,000 streams: the latency of a full
    # collection is added to the pass. The sinks read the GC's count of
    # tracked allocations as the pass goes.
    broker = Broker(TopicOptions(fanout_slice=100))
    topic = broker.topic("t")
    counts: list[int] = []

    def sink(event: Event) -> bool:
        counts.append(gc.get_count()[0])
        return True

    async def writer(sub: Subscription) -> None:
        sub._set_direct_sink(sink)
        await sub.receive_batch()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for _ in range(MEMBERS):
                sub = topic.subscribe()
                await sub.__aenter__()
                nursery.start_soon(writer, sub)
            await trio.testing.wait_all_tasks_blocked()
            gc.disable()
            try:
                counts.append(gc.get_count()[0])
                await topic.publish(Event("a"))
            finally:
                gc.enable()
            nursery.cancel_scope.cancel()
    assert len(counts) == 1 + MEMBERS
    assert max(counts) - min(counts) < MEMBERS // 10, max(counts) - min(counts)


def test_fanout_slice_is_checked() -> None:
    for bad in (0, -1, 1.5, "10"):
        with pytest.raises(ValueError, match="fanout_slice"):
            TopicOptions(fanout_slice=bad)  # type: ignore[arg-type]
    assert TopicOptions().fanout_slice == 500
