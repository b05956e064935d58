"""A subscription without a resume point starts where its topics stood when it was created.

``_resume.py``, Rule 1b: a server creates a topic stream's subscription before it
sends the response head and enters it after, so the events recorded in between
are replayed from the history, neither lost nor doubled, without a reset.
"""

from __future__ import annotations

import trio

from trio_sse import Broker, Event, TopicOptions


async def test_a_fresh_subscription_gets_what_was_published_before_it_was_entered() -> None:
    broker = Broker()
    topic = broker.topic("t")
    before = topic.publish_nowait(Event("before"))
    sub = topic.subscribe()
    between = [topic.publish_nowait(Event(f"between {i}")) for i in range(2)]
    async with sub:
        assert sub.cursor == before.id  # the position it was created at
        assert not sub.reset
        assert sub.replayed == 2
        after = topic.publish_nowait(Event("after"))
        got = [sub.receive_nowait() for _ in range(3)]
    assert [e.id for e in got] == [between[0].id, between[1].id, after.id]


async def test_nothing_published_meanwhile_means_live_from_the_newest() -> None:
    broker = Broker()
    topic = broker.topic("t")
    sub = topic.subscribe()  # the topic never had an event
    async with sub:
        assert sub.cursor is None
        assert sub.replayed == 0
        with_id = topic.publish_nowait(Event("first"))
        assert sub.receive_nowait().id == with_id.id
    newest = topic.publish_nowait(Event("newest"))
    async with topic.subscribe() as sub:
        assert sub.cursor == newest.id
        assert sub.replayed == 0


async def test_an_empty_topic_at_creation_replays_everything_since() -> None:
    broker = Broker()
    topic = broker.topic("t")
    sub = topic.subscribe()
    first = topic.publish_nowait(Event("first"))
    async with sub:
        assert sub.cursor is None  # no position yet: no id-only announcement
        assert sub.receive_nowait().id == first.id
        assert sub.cursor == first.id


async def test_what_the_history_no_longer_holds_is_skipped_without_a_reset() -> None:
    broker = Broker(TopicOptions(history_size=2))
    topic = broker.topic("t")
    sub = topic.subscribe()
    published = [topic.publish_nowait(Event(str(i))) for i in range(5)]
    async with sub:
        assert not sub.reset
        got = [sub.receive_nowait() for _ in range(2)]
    assert [e.id for e in got] == [e.id for e in published[-2:]]


async def test_several_topics_start_where_each_stood() -> None:
    broker = Broker()
    a, b = broker.topic("a"), broker.topic("b")
    a.publish_nowait(Event("a0"))
    sub = broker.subscribe_many(["a", "b"])
    b.publish_nowait(Event("b1"))
    a.publish_nowait(Event("a1"))
    async with sub:
        start = sub.cursor
        got = [sub.receive_nowait() for _ in range(2)]
        b.publish_nowait(Event("b2"))
        got.append(sub.receive_nowait())
    assert [e.data for e in got] == ["b1", "a1", "b2"]
    assert sub.replayed == 2
    assert not sub.reset
    # Resuming from the announced start replays the same two events.
    async with broker.subscribe_many(["a", "b"], start) as again:
        assert [again.receive_nowait().data for _ in range(3)] == ["b1", "a1", "b2"]


async def test_a_subscription_created_during_a_sliced_pass_gets_each_event_once() -> None:
    # The pass's members were fixed when its event was recorded: one created
    # then and entered during the pass takes the event from the history.
    broker = Broker(TopicOptions(fanout_slice=2))
    topic = broker.topic("t")
    got: list[str] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            members = [topic.subscribe() for _ in range(6)]
            for m in members:
                await m.__aenter__()
            late = topic.subscribe()

            async def enter_late() -> None:
                await late.__aenter__()
                got.extend(e.data or "" for e in await late.receive_batch())

            nursery.start_soon(enter_late)
            await topic.publish(Event("x"))
            await trio.testing.wait_all_tasks_blocked()
            topic.publish_nowait(Event("y"))
            await trio.testing.wait_all_tasks_blocked()
            got.append(late.receive_nowait().data or "")
            for m in [*members, late]:
                await m.__aexit__(None, None, None)
    assert got == ["x", "y"]
