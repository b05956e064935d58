"""The direct sink: publishers write to an idle subscriber without a task switch."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from brokers import make_broker

from trio_sse._event import Event
from trio_sse._history import Entry
from trio_sse._options import TopicOptions
from trio_sse._subscription import Subscription
from trio_sse._topic import Topic


class Sink:
    """A fake connection: takes events while ``open``, else refuses."""

    def __init__(self) -> None:
        self.open = True
        self.taken: list[Event] = []

    def __call__(self, event: Event) -> bool:
        if self.open:
            self.taken.append(event)
        return self.open


async def writer(sub: Subscription, batches: list[list[Event]]) -> None:
    while batch := await sub.receive_batch():
        batches.append(batch)


async def test_an_idle_writer_is_bypassed_without_waking() -> None:
    topic = make_broker().topic("t")
    sink = Sink()
    batches: list[list[Event]] = []
    async with topic.subscribe() as sub, trio.open_nursery() as nursery:
        sub._set_direct_sink(sink)
        nursery.start_soon(writer, sub, batches)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(3):
            topic.publish_nowait(Event(str(i)))
        await trio.testing.wait_all_tasks_blocked()
        assert [e.data for e in sink.taken] == ["0", "1", "2"]
        assert batches == []  # the writer never woke
        assert sub.cursor == "3"
        assert topic.stats().delivered == 3
        assert sub.queued == 0
        # The connection gets busy: events queue, in order, and wake the writer.
        sink.open = False
        topic.publish_nowait(Event("3"))
        topic.publish_nowait(Event("4"))
        await trio.testing.wait_all_tasks_blocked()
        assert [[e.data for e in b] for b in batches] == [["3", "4"]]
        # Idle again: direct again.
        sink.open = True
        topic.publish_nowait(Event("5"))
        await trio.testing.wait_all_tasks_blocked()
        assert sink.taken[-1].data == "5"
        assert len(batches) == 1
        topic.close()
    assert topic.stats().subscribers == 0


async def test_queued_events_are_received_before_the_sink_is_used() -> None:
    topic = make_broker().topic("t")
    sink = Sink()
    async with topic.subscribe() as sub:
        sub._set_direct_sink(sink)
        topic.publish_nowait(Event("queued"))
        assert [e.data for e in await sub.receive_batch()] == ["queued"]
        assert sink.taken == []


async def test_sink_off_and_merged_ids() -> None:
    broker = make_broker()
    sink = Sink()
    batches: list[list[Event]] = []
    async with broker.subscribe_many(["a", "b"]) as sub, trio.open_nursery() as nursery:
        sub._set_direct_sink(sink)
        nursery.start_soon(writer, sub, batches)
        await trio.testing.wait_all_tasks_blocked()
        broker.publish_nowait("a", Event("a1"))
        broker.publish_nowait("b", Event("b1"))
        assert [e.id for e in sink.taken] == ["a:1,b:", "a:1,b:1"]
        sub._set_direct_sink(None)
        broker.publish_nowait("a", Event("a2"))
        await trio.testing.wait_all_tasks_blocked()
        assert [[e.id for e in b] for b in batches] == [["a:2,b:1"]]
        broker.close()


async def test_eviction_and_close_while_direct() -> None:
    topic = make_broker(TopicOptions(buffer_size=1, eviction_event=Event(retry=5))).topic("t")
    sink = Sink()
    batches: list[list[Event]] = []
    async with topic.subscribe() as sub, trio.open_nursery() as nursery:
        sub._set_direct_sink(sink)
        nursery.start_soon(writer, sub, batches)
        await trio.testing.wait_all_tasks_blocked()
        sink.open = False
        topic.publish_nowait(Event("0"))  # refused: handed to the parked writer
        topic.publish_nowait(Event("1"))  # buffered
        topic.publish_nowait(Event("2"))  # overflow: evicted
        assert sub.evicted
    assert [[e.data for e in b] for b in batches] == [["0"], [None]]
    assert batches[1] == [Event(retry=5)]


async def test_block_policy_backlog_bypasses_the_sink(
    autojump_clock: trio.testing.MockClock,
) -> None:
    topic = make_broker(TopicOptions(buffer_size=1, overflow="block", block_deadline=10)).topic("t")
    sink = Sink()
    async with topic.subscribe() as sub, trio.open_nursery() as nursery:
        sub._set_direct_sink(sink)
        topic.publish_nowait(Event("0"))
        nursery.start_soon(topic.publish, Event("1"))  # waits in the backlog
        await trio.testing.wait_all_tasks_blocked()
        assert [e.data for e in await sub.receive_batch()] == ["0"]
        assert [e.data for e in await sub.receive_batch()] == ["1"]
        assert sink.taken == []


async def test_a_raising_sink_fails_the_writer_not_the_publisher() -> None:
    topic = make_broker().topic("t")

    def broken(event: Event) -> bool:
        raise OSError("boom")

    async with topic.subscribe() as bad, topic.subscribe() as good:
        bad._set_direct_sink(broken)
        errors: list[BaseException] = []

        async def bad_writer() -> None:
            try:
                await bad.receive_batch()
            except OSError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(bad_writer)
            await trio.testing.wait_all_tasks_blocked()
            topic.publish_nowait(Event("x"))  # does not raise
        assert [e.data for e in await good.receive_batch()] == ["x"]
        assert [str(e) for e in errors] == ["boom"]
        # The sink is off now; the event that failed is kept for the next receive.
        assert [e.data for e in await bad.receive_batch()] == ["x"]


async def test_receive_batch_with_a_sink_is_a_checkpoint() -> None:
    topic = make_broker().topic("t")
    async with topic.subscribe() as sub:
        sub._set_direct_sink(Sink())
        topic.publish_nowait(Event("x"))
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(trio.Cancelled):
                await sub.receive_batch()
        assert [e.data for e in await sub.receive_batch()] == ["x"]  # not lost


# -- from cefc707 (restored: 9edc523 overwrote the file by mistake) --------------


async def test_sink_takes_events_while_idle_then_queue_keeps_order() -> None:
    broker = make_broker(TopicOptions(buffer_size=4))
    topic = broker.topic("t")
    taken: list[str] = []
    accept = True

    def sink(event: Event) -> bool:
        if accept:
            assert event.data is not None
            taken.append(event.data)
        return accept

    batches: list[list[str]] = []
    async with topic.subscribe() as sub:
        sub._set_direct_sink(sink)
        async with trio.open_nursery() as nursery:

            async def writer() -> None:
                while batch := await sub.receive_batch():
                    batches.append([e.data or "" for e in batch])

            nursery.start_soon(writer)
            await trio.testing.wait_all_tasks_blocked()
            topic.publish_nowait(Event("a"))
            topic.publish_nowait(Event("b"))
            # Taken synchronously, in the publisher's task: no wake-up.
            assert taken == ["a", "b"]
            assert sub.cursor == topic.last_event_id
            accept = False
            topic.publish_nowait(Event("c"))  # refused: queued, wakes the writer
            topic.publish_nowait(Event("d"))  # queued behind it, not offered
            accept = True
            topic.publish_nowait(Event("e"))  # still queued: writer not idle yet
            await trio.testing.wait_all_tasks_blocked()
            assert batches == [["c", "d", "e"]]
            topic.publish_nowait(Event("f"))  # idle again: direct
            assert taken == ["a", "b", "f"]
            stats = topic.stats()
            assert stats.delivered == 6
            assert stats.subscribers == 1
            nursery.cancel_scope.cancel()
    assert topic.stats().subscribers == 0
    # Leaving the block restored nothing behind: publishing reaches no one.
    topic.publish_nowait(Event("g"))
    assert taken == ["a", "b", "f"]


async def test_refused_sink_with_full_queue_applies_overflow_policy() -> None:
    broker = make_broker(TopicOptions(buffer_size=2, eviction_event=Event(retry=500)))
    topic = broker.topic("t")
    async with topic.subscribe() as sub:
        sub._set_direct_sink(lambda event: False)
        async with trio.open_nursery() as nursery:
            got: list[list[Event]] = []

            async def slow_writer() -> None:
                got.append(await sub.receive_batch())
                await trio.sleep_forever()  # never comes back for more

            nursery.start_soon(slow_writer)
            await trio.testing.wait_all_tasks_blocked()
            for i in range(4):
                topic.publish_nowait(Event(str(i)))
            await trio.testing.wait_all_tasks_blocked()
            assert [e.data for e in got[0]] == ["0"]
            assert sub.evicted
            nursery.cancel_scope.cancel()
        assert [e.retry for e in await sub.receive_batch()] == [500]
        assert await sub.receive_batch() == []


async def test_merged_subscription_sink_gets_composite_ids() -> None:
    broker = make_broker()
    a, b = broker.topic("a"), broker.topic("b")
    ids: list[str] = []

    def sink(event: Event) -> bool:
        assert event.id is not None
        ids.append(event.id)
        return True

    async with broker.subscribe_many(["a", "b"]) as sub:
        sub._set_direct_sink(sink)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sub.receive_batch)
            await trio.testing.wait_all_tasks_blocked()
            a.publish_nowait(Event("x"))
            b.publish_nowait(Event("y"))
            nursery.cancel_scope.cancel()
    assert len(ids) == 2
    assert all("," in i for i in ids)
    # The last composite id resumes both topics exactly.
    b.publish_nowait(Event("z"))
    async with broker.subscribe_many(["a", "b"], ids[-1]) as sub:
        assert [e.data for e in await sub.receive_batch()] == ["z"]


async def test_changing_the_sinks_while_direct_changes_the_fan_out_function() -> None:
    """An entry sink takes over (one topic only); turning the sinks off queues again."""
    topic = make_broker().topic("t")
    sink = Sink()
    entries: list[str | None] = []

    def entry_sink(entry: Entry[Topic]) -> None:
        entries.append(entry.event.data)
        sub._position = entry.event.id

    batches: list[list[Event]] = []
    async with topic.subscribe() as sub, trio.open_nursery() as nursery:
        sub._set_direct_sink(sink)
        nursery.start_soon(writer, sub, batches)
        await trio.testing.wait_all_tasks_blocked()
        assert topic._subscribers[sub] == sub._direct
        sub._set_direct_sink(sink, entry_sink)  # while DIRECT
        assert topic._subscribers[sub] is entry_sink
        topic.publish_nowait(Event("0"))
        assert entries == ["0"]
        assert sink.taken == []
        sub._set_direct_sink(None)  # while DIRECT: nothing takes events now
        assert topic._subscribers[sub] == sub._direct
        topic.publish_nowait(Event("1"))
        await trio.testing.wait_all_tasks_blocked()
        assert [[e.data for e in b] for b in batches] == [["1"]]
        assert entries == ["0"]
        nursery.cancel_scope.cancel()
