"""Overflow policies: evict, drop_oldest and block, alone and merged."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from brokers import data, drain, make_broker

from trio_sse._event import Event
from trio_sse._options import OverflowPolicy, TopicOptions

BYE = Event(comment="evicted", retry=1000)


def options(policy: str, **kwargs: object) -> TopicOptions:
    return TopicOptions(overflow=policy, buffer_size=2, eviction_event=BYE, **kwargs)  # type: ignore[arg-type]


# -- evict --------------------------------------------------------------------------


async def test_evict_ends_the_slow_subscriber_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    topic = make_broker(options("evict")).topic("t")
    async with topic.subscribe() as slow, topic.subscribe() as fast:
        start = trio.current_time()
        for i in range(5):
            await topic.publish(Event(str(i)))
            assert data(drain(fast)) == [str(i)]
        assert trio.current_time() == start  # the publisher never waited
        assert slow.evicted
        assert slow.end_reason == "evicted"
        assert slow.queued == 0
        # The queue is discarded; the final event comes next, then the end.
        assert await slow.receive_batch() == [BYE]
        assert await slow.receive_batch() == []
        with pytest.raises(trio.EndOfChannel):
            slow.receive_nowait()
        async for _ in slow:
            pytest.fail("ended")  # pragma: no cover
        assert not fast.evicted
        stats = topic.stats()
        assert (stats.subscribers, stats.evicted, stats.delivered) == (1, 1, 7)
    assert topic.stats().evicted == 1


async def test_evict_without_final_event() -> None:
    topic = make_broker(TopicOptions(buffer_size=1)).topic("t")
    async with topic.subscribe() as sub:
        topic.publish_nowait(Event("a"))
        topic.publish_nowait(Event("b"))
        assert sub.evicted
        with pytest.raises(trio.EndOfChannel):
            await sub.receive()


async def test_evicted_while_parked_gets_the_handed_over_event_then_the_final() -> None:
    topic = make_broker(options("evict")).topic("t")
    async with topic.subscribe() as sub, trio.open_nursery() as nursery:
        batches: list[list[Event]] = []

        async def reader() -> None:
            while batch := await sub.receive_batch():
                batches.append(batch)

        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        # "0" is handed straight to the parked reader, "1" and "2" fill the
        # buffer, "3" overflows before the reader runs again.
        for i in range(4):
            topic.publish_nowait(Event(str(i)))
    assert batches == [[Event("0", id="1")], [BYE]]


async def test_evicted_during_receive_wakes_the_reader() -> None:
    topic = make_broker(TopicOptions(buffer_size=1, eviction_event=BYE)).topic("t")
    async with topic.subscribe() as sub, trio.open_nursery() as nursery:
        got: list[Event] = []

        async def reader() -> None:
            got.append(await sub.receive())
            await trio.sleep_forever()

        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        sub._end("evicted", topic)  # as if a publisher had evicted it
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert got == [BYE]


# -- drop_oldest ----------------------------------------------------------------------


async def test_drop_oldest_keeps_the_newest_and_counts() -> None:
    topic = make_broker(options("drop_oldest")).topic("t")
    async with topic.subscribe() as sub, topic.subscribe() as fast:
        for i in range(6):
            topic.publish_nowait(Event(str(i)))
            drain(fast)
        assert data(drain(sub)) == ["4", "5"]
        assert sub.dropped == 4
        assert not sub.evicted
        stats = topic.stats()
        assert (stats.dropped, stats.evicted, stats.delivered) == (4, 0, 12)
        assert not fast.dropped


async def test_drop_oldest_with_a_parked_reader() -> None:
    topic = make_broker(options("drop_oldest")).topic("t")
    async with topic.subscribe() as sub, trio.open_nursery() as nursery:
        batches: list[list[str | None]] = []

        async def reader() -> None:
            while batch := await sub.receive_batch():
                batches.append(data(batch))

        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(6):
            topic.publish_nowait(Event(str(i)))
        await trio.testing.wait_all_tasks_blocked()
        topic.close()
    # "0" went straight to the parked reader; "1".."3" were dropped.
    assert batches == [["0", "4", "5"]]
    assert sub.dropped == 3


# -- block ----------------------------------------------------------------------


async def test_block_waits_for_room_then_completes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    topic = make_broker(options("block", block_deadline=10)).topic("t")
    async with topic.subscribe() as sub, trio.open_nursery() as nursery:
        await topic.publish(Event("0"))
        await topic.publish(Event("1"))
        done = trio.Event()

        async def publish_third() -> None:
            await topic.publish(Event("2"))
            done.set()

        nursery.start_soon(publish_third)
        await trio.sleep(5)
        assert not done.is_set()
        assert sub.queued == 3  # two in the channel, one in the backlog
        assert topic.stats().max_lag == 3
        assert data(await sub.receive_batch(1)) == ["0"]  # makes room
        await done.wait()
        assert trio.current_time() == 5
        assert data(drain(sub)) == ["1", "2"]
        assert not sub.evicted
        assert topic.stats().delivered == 3


async def test_block_deadline_evicts_only_the_slow_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    topic = make_broker(options("block", block_deadline=3)).topic("t")
    async with topic.subscribe() as slow, topic.subscribe() as fast:
        for i in range(3):
            await topic.publish(Event(str(i)))
            assert data(drain(fast)) == [str(i)]  # delivered before the wait
        assert trio.current_time() == 3
        assert slow.evicted
        assert await slow.receive_batch() == [BYE]
        assert topic.stats().evicted == 1
        await topic.publish(Event("3"))  # nobody slow left: no waiting
        assert trio.current_time() == 3


async def test_block_with_zero_deadline_evicts_at_once() -> None:
    topic = make_broker(options("block", block_deadline=0)).topic("t")
    async with topic.subscribe() as sub:
        for i in range(3):
            await topic.publish(Event(str(i)))
        assert sub.evicted


async def test_block_publish_nowait_evicts_at_once() -> None:
    topic = make_broker(options("block")).topic("t")
    async with topic.subscribe() as sub:
        for i in range(3):
            topic.publish_nowait(Event(str(i)))
        assert sub.evicted


async def test_cancelled_block_publisher_evicts_whom_it_waited_for(
    autojump_clock: trio.testing.MockClock,
) -> None:
    topic = make_broker(options("block", block_deadline=100)).topic("t")
    async with topic.subscribe() as sub:
        topic.publish_nowait(Event("0"))
        topic.publish_nowait(Event("1"))
        with trio.move_on_after(1):
            await topic.publish(Event("2"))
        assert sub.evicted  # it would otherwise silently miss "2"
        assert topic.last_event_id == "3"  # but "2" stays published
    async with topic.subscribe("2") as again:
        assert data(drain(again)) == ["2"]


async def test_block_publisher_stops_waiting_when_the_subscriber_leaves(
    autojump_clock: trio.testing.MockClock,
) -> None:
    topic = make_broker(options("block", block_deadline=100)).topic("t")
    sub = topic.subscribe()
    await sub.__aenter__()
    topic.publish_nowait(Event("0"))
    topic.publish_nowait(Event("1"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(topic.publish, Event("2"))
        await trio.sleep(1)
        await sub.__aexit__(None, None, None)
    assert trio.current_time() == 1
    assert topic.stats().evicted == 0


async def test_block_keeps_order_with_concurrent_publishers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    topic = make_broker(options("block", block_deadline=100)).topic("t")
    received: list[str | None] = []
    async with topic.subscribe() as sub, trio.open_nursery() as nursery:

        async def publisher(name: str) -> None:
            for i in range(10):
                await topic.publish(Event(f"{name}{i}"))

        async def slow_reader() -> None:
            while batch := await sub.receive_batch(1):
                received.extend(e.id for e in batch)
                await trio.sleep(1)

        nursery.start_soon(slow_reader)
        for name in "abc":
            nursery.start_soon(publisher, name)
        await trio.sleep(200)
        assert topic.last_event_id == "30"
        nursery.cancel_scope.cancel()
    assert received == [str(i) for i in range(1, 31)]
    assert topic.stats().evicted == 0


async def test_block_with_an_infinite_deadline_waits_for_ever(
    autojump_clock: trio.testing.MockClock,
) -> None:
    topic = make_broker(options("block", block_deadline=float("inf"))).topic("t")
    async with topic.subscribe() as sub:
        topic.publish_nowait(Event("0"))
        topic.publish_nowait(Event("1"))
        with trio.move_on_after(10_000):
            await topic.publish(Event("2"))
        assert trio.current_time() == 10_000
        assert sub.evicted  # cancelled: see the cancellation test


# -- merged subscriptions with several policies -----------------------------------------


async def test_merged_buffer_is_the_largest_and_overflow_uses_the_publishing_topic() -> None:
    broker = make_broker()
    broker.declare("small", TopicOptions(buffer_size=1, overflow="drop_oldest"))
    broker.declare("big", TopicOptions(buffer_size=3))
    async with broker.subscribe_many(["small", "big"]) as sub:
        broker.publish_nowait("big", Event("b1"))
        broker.publish_nowait("small", Event("s1"))
        broker.publish_nowait("small", Event("s2"))
        assert sub.queued == 3
        broker.publish_nowait("small", Event("s3"))  # drops "b1", counted on "big"
        assert sub.dropped == 1
        assert broker.stats()["big"].dropped == 1
        assert broker.stats()["small"].dropped == 0
        broker.publish_nowait("big", Event("b2"))  # "big" evicts
        assert sub.evicted
        assert broker.stats()["big"].evicted == 1


async def test_merged_block_waiter_is_evicted_by_another_topics_overflow(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = make_broker()
    broker.declare("blk", TopicOptions(buffer_size=1, overflow="block", block_deadline=50))
    broker.declare("drop", TopicOptions(buffer_size=1, overflow="drop_oldest"))
    async with broker.subscribe_many(["blk", "drop"]) as sub, trio.open_nursery() as nursery:
        broker.publish_nowait("blk", Event("b1"))
        nursery.start_soon(broker.publish, "blk", Event("b2"))  # waits: backlog
        await trio.sleep(1)
        assert sub.queued == 2
        # Dropping "b1" now would let "d1" overtake "b2": evict instead.
        broker.publish_nowait("drop", Event("d1"))
        assert sub.evicted
    assert trio.current_time() == 1  # the blocked publisher was released


async def test_merged_block_backlog_refills_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = make_broker(
        TopicOptions(buffer_size=1, overflow=OverflowPolicy.BLOCK, block_deadline=50)
    )
    async with broker.subscribe_many(["a", "b"]) as sub, trio.open_nursery() as nursery:
        broker.publish_nowait("a", Event("a1"))
        nursery.start_soon(broker.publish, "b", Event("b1"))
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(broker.publish, "a", Event("a2"))
        await trio.testing.wait_all_tasks_blocked()
        got = [sub.receive_nowait().data for _ in range(3)]
    assert got == ["a1", "b1", "a2"]
    assert not sub.evicted


async def test_block_deadline_evicts_every_slow_subscriber_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    topic = make_broker(options("block", block_deadline=2)).topic("t")
    async with topic.subscribe() as one, topic.subscribe() as two:
        for i in range(3):
            await topic.publish(Event(str(i)))
        assert trio.current_time() == 2  # one deadline for both, not one each
        assert one.evicted
        assert two.evicted


async def test_block_backlog_refills_through_receive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    topic = make_broker(options("block", block_deadline=10)).topic("t")
    async with topic.subscribe() as sub, trio.open_nursery() as nursery:
        topic.publish_nowait(Event("0"))
        topic.publish_nowait(Event("1"))
        nursery.start_soon(topic.publish, Event("2"))
        await trio.testing.wait_all_tasks_blocked()
        assert [(await sub.receive()).data for _ in range(3)] == ["0", "1", "2"]
    assert trio.current_time() == 0


async def test_block_backlog_refills_while_replaying(
    autojump_clock: trio.testing.MockClock,
) -> None:
    topic = make_broker(options("block", block_deadline=10)).topic("t")
    topic.publish_nowait(Event("old1"))
    topic.publish_nowait(Event("old2"))
    async with topic.subscribe("1") as sub, trio.open_nursery() as nursery:
        topic.publish_nowait(Event("0"))
        topic.publish_nowait(Event("1"))
        nursery.start_soon(topic.publish, Event("2"))
        await trio.testing.wait_all_tasks_blocked()
        assert data(await sub.receive_batch(2)) == ["old2", "0"]  # refills "2"
        assert data(await sub.receive_batch()) == ["1", "2"]
    assert not sub.evicted


async def test_deliver_to_a_closed_topic() -> None:
    topic = make_broker().topic("t")
    topic.close()
    with pytest.raises(trio.ClosedResourceError):
        topic.deliver_nowait(Event(id="1"))
    with pytest.raises(trio.ClosedResourceError):
        await topic.deliver(Event(id="1"))
