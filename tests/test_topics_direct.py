"""The direct sink: publishers write to an idle subscriber without a task switch."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_sse._event import Event
from trio_sse._topics import Broker, Subscription, TopicOptions


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
    topic = Broker().topic("t")
    sink = Sink()
    batches: list[list[Event]] = []
    async with topic.subscribe() as sub, trio.open_nursery() as nursery:
        sub.set_direct_sink(sink)
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
    topic = Broker().topic("t")
    sink = Sink()
    async with topic.subscribe() as sub:
        sub.set_direct_sink(sink)
        topic.publish_nowait(Event("queued"))
        assert [e.data for e in await sub.receive_batch()] == ["queued"]
        assert sink.taken == []


async def test_sink_off_and_merged_ids() -> None:
    broker = Broker()
    sink = Sink()
    batches: list[list[Event]] = []
    async with broker.subscribe_many(["a", "b"]) as sub, trio.open_nursery() as nursery:
        sub.set_direct_sink(sink)
        nursery.start_soon(writer, sub, batches)
        await trio.testing.wait_all_tasks_blocked()
        broker.publish_nowait("a", Event("a1"))
        broker.publish_nowait("b", Event("b1"))
        assert [e.id for e in sink.taken] == ["a:1,b:", "a:1,b:1"]
        sub.set_direct_sink(None)
        broker.publish_nowait("a", Event("a2"))
        await trio.testing.wait_all_tasks_blocked()
        assert [[e.id for e in b] for b in batches] == [["a:2,b:1"]]
        broker.close()


async def test_eviction_and_close_while_direct() -> None:
    topic = Broker(TopicOptions(buffer_size=1, eviction_event=Event(retry=5))).topic("t")
    sink = Sink()
    batches: list[list[Event]] = []
    async with topic.subscribe() as sub, trio.open_nursery() as nursery:
        sub.set_direct_sink(sink)
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
    topic = Broker(TopicOptions(buffer_size=1, overflow="block", block_deadline=10)).topic("t")
    sink = Sink()
    async with topic.subscribe() as sub, trio.open_nursery() as nursery:
        sub.set_direct_sink(sink)
        topic.publish_nowait(Event("0"))
        nursery.start_soon(topic.publish, Event("1"))  # waits in the backlog
        await trio.testing.wait_all_tasks_blocked()
        assert [e.data for e in await sub.receive_batch()] == ["0"]
        assert [e.data for e in await sub.receive_batch()] == ["1"]
        assert sink.taken == []


async def test_a_raising_sink_fails_the_writer_not_the_publisher() -> None:
    topic = Broker().topic("t")

    def broken(event: Event) -> bool:
        raise OSError("boom")

    async with topic.subscribe() as bad, topic.subscribe() as good:
        bad.set_direct_sink(broken)
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
    topic = Broker().topic("t")
    async with topic.subscribe() as sub:
        sub.set_direct_sink(Sink())
        topic.publish_nowait(Event("x"))
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(trio.Cancelled):
                await sub.receive_batch()
        assert [e.data for e in await sub.receive_batch()] == ["x"]  # not lost
