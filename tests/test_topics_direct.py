"""The direct-sink path: publishers writing straight to idle subscribers."""

from __future__ import annotations

import trio
import trio.testing

from trio_sse import Broker, Event, TopicOptions


async def test_sink_takes_events_while_idle_then_queue_keeps_order() -> None:
    broker = Broker(TopicOptions(buffer_size=4))
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
        sub.set_direct_sink(sink)
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
    broker = Broker(TopicOptions(buffer_size=2, eviction_event=Event(retry=500)))
    topic = broker.topic("t")
    async with topic.subscribe() as sub:
        sub.set_direct_sink(lambda event: False)
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
    broker = Broker()
    a, b = broker.topic("a"), broker.topic("b")
    ids: list[str] = []

    def sink(event: Event) -> bool:
        assert event.id is not None
        ids.append(event.id)
        return True

    async with broker.subscribe_many(["a", "b"]) as sub:
        sub.set_direct_sink(sink)
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
