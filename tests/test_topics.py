"""Broker, topics and subscriptions: ids, lifecycle, history and resume.

Overflow policies are in test_topics_policies.py, composite cursors in
test_topics_cursors.py, the randomized model in test_topics_model.py, metrics
and leak checks in test_topics_metrics.py.
"""

from __future__ import annotations

import inspect
import random

import pytest
import trio
import trio.testing
from brokers import data, drain, make_broker

from trio_sse._backplane import LocalBackplane
from trio_sse._broker import Broker
from trio_sse._cursor import with_id
from trio_sse._event import Event
from trio_sse._options import OverflowPolicy, TopicOptions
from trio_sse._topic import Topic


def ids(events: list[Event]) -> list[str | None]:
    return [e.id for e in events]


# -- ids and publishing ---------------------------------------------------------


async def test_publish_assigns_monotonic_ids_and_returns_the_event() -> None:
    topic = make_broker().topic("t")
    first = topic.publish_nowait(Event("a"))
    second = await topic.publish(Event("b"))
    assert (first.id, second.id) == ("1", "2")
    assert first == Event("a", id="1")
    assert topic.last_event_id == "2"


async def test_event_with_id_keeps_it_and_empty_id_gets_one() -> None:
    topic = make_broker().topic("t")
    assert topic.publish_nowait(Event("a", id="custom")).id == "custom"
    assert topic.publish_nowait(Event("b", id="")).id == "1"


async def test_ids_are_per_topic() -> None:
    broker = make_broker()
    assert broker.publish_nowait("a", Event("x")).id == "1"
    assert (await broker.publish("b", Event("x"))).id == "1"
    assert broker.publish_nowait("a", Event("x")).id == "2"


async def test_publish_rejects_non_events() -> None:
    topic = make_broker().topic("t")
    with pytest.raises(TypeError, match="expected an Event"):
        topic.publish_nowait("data")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected an Event"):
        await topic.publish(b"data")  # type: ignore[arg-type]


async def test_deliver_requires_an_id() -> None:
    topic = make_broker().topic("t")
    with pytest.raises(ValueError, match="needs an event with an id"):
        topic.deliver_nowait(Event("x"))


def test_with_id_copies_every_field_of_event() -> None:
    # If Event grows a field, with_id must learn it (this test fails first).
    assert list(inspect.signature(Event).parameters) == ["data", "event", "id", "retry", "comment"]
    event = Event("d", event="e", id="old", retry=5, comment="c")
    copy = with_id(event, "new")
    assert copy == Event("d", event="e", id="new", retry=5, comment="c")
    assert copy.encode() == Event("d", event="e", id="new", retry=5, comment="c").encode()


async def test_id_prefix() -> None:
    broker = make_broker(backplane=LocalBackplane(id_prefix="boot7-"))
    assert broker.publish_nowait("t", Event("x")).id == "boot7-1"
    with pytest.raises(ValueError, match="CR or LF"):
        LocalBackplane(id_prefix="a\nb")
    with pytest.raises(TypeError, match="id_prefix must be a str"):
        LocalBackplane(id_prefix=3)  # type: ignore[arg-type]


async def test_ids_keep_counting_after_a_topic_is_recreated() -> None:
    broker = make_broker()
    broker.publish_nowait("t", Event("x"))
    broker.topic("t").close()
    assert broker.publish_nowait("t", Event("y")).id == "2"


class PrefixBackplane:
    """A fake networked backplane: assigns its own ids, delivers later."""

    cross_process = False
    remote_history = None

    def __init__(self) -> None:
        self.n = 0
        self.log: list[tuple[Topic, Event]] = []

    def attach(self, broker: Broker) -> None:
        pass

    def topic_added(self, topic: Topic) -> None:
        pass

    def publish_nowait(self, topic: Topic, event: Event) -> Event:
        self.n += 1
        event = with_id(event, f"{self.n}-0")
        self.log.append((topic, event))
        return event

    async def publish(self, topic: Topic, event: Event) -> Event:
        await trio.lowlevel.checkpoint()
        return self.publish_nowait(topic, event)

    async def pump(self) -> None:
        while self.log:
            topic, event = self.log.pop(0)
            await topic.deliver(event)


async def test_a_backplane_assigns_ids_and_delivers() -> None:
    backplane = PrefixBackplane()
    broker = make_broker(backplane=backplane)
    assert broker.backplane is backplane
    topic = broker.topic("t")
    async with topic.subscribe() as sub:
        assert topic.publish_nowait(Event("a")).id == "1-0"
        assert (await topic.publish(Event("b"))).id == "2-0"
        assert drain(sub) == []  # nothing until the backplane delivers
        await backplane.pump()
        assert ids(drain(sub)) == ["1-0", "2-0"]
    async with topic.subscribe("1-0") as sub:
        assert ids(drain(sub)) == ["2-0"]


# -- subscription lifecycle -------------------------------------------------------


async def test_live_events_in_order_via_all_receive_methods() -> None:
    topic = make_broker().topic("t")
    topic.publish_nowait(Event("before"))
    async with topic.subscribe() as sub:
        assert sub.cursor == "1"
        for name in "abcdef":
            topic.publish_nowait(Event(name))
        assert (await sub.receive()).data == "a"
        assert sub.receive_nowait().data == "b"
        assert data(await sub.receive_batch(3)) == ["c", "d", "e"]
        async for event in sub:
            assert event.data == "f"
            break
        assert sub.cursor == "7"
        with pytest.raises(trio.WouldBlock):
            sub.receive_nowait()


async def test_receive_waits_for_a_publisher() -> None:
    topic = make_broker().topic("t")
    async with topic.subscribe() as sub, trio.open_nursery() as nursery:
        got: list[list[Event]] = []

        async def reader() -> None:
            got.append(await sub.receive_batch())

        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        topic.publish_nowait(Event("x"))
    assert data(got[0]) == ["x"]


async def test_receive_batch_respects_max_events() -> None:
    topic = make_broker().topic("t")
    async with topic.subscribe() as sub:
        for i in range(5):
            topic.publish_nowait(Event(str(i)))
        assert data(await sub.receive_batch(2)) == ["0", "1"]
        assert data(await sub.receive_batch(1)) == ["2"]
        assert data(await sub.receive_batch()) == ["3", "4"]
        with pytest.raises(ValueError, match="at least 1"):
            await sub.receive_batch(0)


async def test_leaving_normally_removes_the_subscriber_at_once() -> None:
    topic = make_broker().topic("t")
    async with topic.subscribe() as sub:
        assert topic.stats().subscribers == 1
        assert (sub.end_reason, sub.evicted) == (None, False)
    assert topic.stats().subscribers == 0
    assert sub.end_reason == "left"
    assert sub.queued == 0
    topic.publish_nowait(Event("x"))  # nobody to deliver to, no error
    with pytest.raises(trio.ClosedResourceError):
        sub.receive_nowait()
    with pytest.raises(trio.ClosedResourceError):
        await sub.receive()


async def test_cancellation_removes_the_subscriber(autojump_clock: trio.testing.MockClock) -> None:
    topic = make_broker().topic("t")
    with trio.move_on_after(1) as scope:
        async with topic.subscribe() as sub:
            assert topic.stats().subscribers == 1
            await sub.receive()  # nothing is published: cancelled here
    assert scope.cancelled_caught
    assert topic.stats().subscribers == 0
    assert sub.end_reason == "left"


async def test_an_error_in_the_block_removes_the_subscriber() -> None:
    topic = make_broker().topic("t")

    async def fail() -> None:
        async with topic.subscribe():
            assert topic.stats().subscribers == 1
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await fail()
    assert topic.stats().subscribers == 0


async def test_closing_while_a_reader_waits_wakes_it() -> None:
    topic = make_broker().topic("t")
    async with trio.open_nursery() as nursery:
        sub = topic.subscribe()
        await sub.__aenter__()
        errors: list[BaseException] = []

        async def reader() -> None:
            try:
                await sub.receive()
            except trio.ClosedResourceError as exc:
                errors.append(exc)

        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        await sub.__aexit__(None, None, None)
    assert len(errors) == 1


async def test_subscription_misuse() -> None:
    topic = make_broker().topic("t")
    sub = topic.subscribe()
    with pytest.raises(RuntimeError, match="async with"):
        sub.receive_nowait()
    await sub.__aexit__(None, None, None)  # exiting an unentered one is harmless
    async with sub:
        pass
    with pytest.raises(RuntimeError, match="only be entered once"):
        async with sub:
            pass  # pragma: no cover


async def test_subscription_properties_and_reprs() -> None:
    broker = make_broker()
    topic = broker.topic("t")
    sub = topic.subscribe()
    assert "new" in repr(sub)
    assert "Topic 't'" in repr(topic)
    assert "topics=1" in repr(broker)
    async with sub:
        assert sub.topics == ("t",)
        assert "active queue" in repr(sub)
        assert not sub.evicted
        assert sub.cursor is None  # no event yet
    assert "left" in repr(sub)


async def test_entering_under_a_cancelled_scope_registers_nothing() -> None:
    topic = make_broker().topic("t")
    with trio.CancelScope() as scope:
        scope.cancel()
        async with topic.subscribe():
            pytest.fail("not reached")  # pragma: no cover
    assert topic.stats().subscribers == 0


# -- closing --------------------------------------------------------------------


async def test_topic_close_ends_subscriptions_without_final_event() -> None:
    broker = make_broker(TopicOptions(eviction_event=Event(retry=1)))
    topic = broker.topic("t")
    async with topic.subscribe() as sub:
        topic.publish_nowait(Event("x"))
        topic.close()
        topic.close()  # idempotent
        assert sub.end_reason == "closed"
        assert await sub.receive_batch() == []  # queue discarded, no final event
        with pytest.raises(trio.EndOfChannel):
            await sub.receive()
    assert topic.closed
    assert "t" not in broker.topics
    assert topic.stats().history_size == 0
    with pytest.raises(trio.ClosedResourceError):
        topic.publish_nowait(Event("y"))
    with pytest.raises(trio.ClosedResourceError):
        await topic.publish(Event("y"))
    with pytest.raises(trio.ClosedResourceError):
        async with topic.subscribe():
            pass  # pragma: no cover
    assert broker.topic("t") is not topic


async def test_broker_close_ends_everything_and_refuses_new_topics() -> None:
    broker = make_broker()
    async with broker.subscribe("a") as a, broker.subscribe_many(["b", "c"]) as bc:
        broker.close()
        assert broker.closed
        assert (a.end_reason, bc.end_reason) == ("closed", "closed")
        async for _ in a:
            pytest.fail("no events after close")  # pragma: no cover
    with pytest.raises(trio.ClosedResourceError):
        broker.topic("a")
    with pytest.raises(trio.ClosedResourceError):
        broker.declare("a")


# -- declaring topics ------------------------------------------------------------


async def test_declare_and_topic() -> None:
    broker = make_broker(TopicOptions(buffer_size=3))
    options = TopicOptions(history_size=5, overflow="drop_oldest")
    topic = broker.declare("a", options)
    assert topic.options.overflow is OverflowPolicy.DROP_OLDEST
    assert broker.declare("a", options) is topic
    assert broker.topic("a") is topic
    assert broker.topic("b").options == broker.defaults
    assert broker.declare("b") is broker.topic("b")
    assert set(broker.topics) == {"a", "b"}
    assert topic.broker is broker
    assert topic.name == "a"
    with pytest.raises(ValueError, match="already exists with other options"):
        broker.declare("a", TopicOptions())


async def test_only_declared_topics() -> None:
    broker = make_broker(create_topics=False)
    broker.declare("a")
    broker.publish_nowait("a", Event("x"))
    with pytest.raises(KeyError, match="only has declared topics"):
        broker.topic("b")
    with pytest.raises(KeyError):
        broker.subscribe("b")
    with pytest.raises(KeyError):
        broker.subscribe_many(["a", "b"])


@pytest.mark.parametrize(
    ("name", "error"), [("", ValueError), (None, TypeError), (b"a", TypeError)]
)
async def test_topic_names(name: object, error: type[Exception]) -> None:
    broker = make_broker()
    with pytest.raises(error):
        broker.topic(name)  # type: ignore[arg-type]
    with pytest.raises(error):
        broker.declare(name)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"buffer_size": 0}, ValueError, "buffer_size"),
        ({"buffer_size": 1.5}, ValueError, "buffer_size"),
        ({"buffer_size": True}, ValueError, "buffer_size"),
        ({"history_size": -1}, ValueError, "history_size"),
        ({"history_max_age": 0}, ValueError, "history_max_age"),
        ({"history_max_age": "1"}, ValueError, "history_max_age"),
        ({"block_deadline": -1}, ValueError, "block_deadline"),
        ({"block_deadline": None}, ValueError, "block_deadline"),
        ({"overflow": "disconnect"}, ValueError, "disconnect"),
        ({"eviction_event": "bye"}, TypeError, "eviction_event"),
        ({"reset_event": 1}, TypeError, "reset_event"),
    ],
)
def test_topic_options_validation(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        TopicOptions(**kwargs)  # type: ignore[arg-type]


def test_topic_options_accept_any_policy_spelling() -> None:
    for policy in OverflowPolicy:
        assert TopicOptions(overflow=policy.value).overflow is policy
    assert TopicOptions(history_max_age=1, block_deadline=0).history_max_age == 1


# -- history and resume -----------------------------------------------------------


async def test_resume_replays_exactly_the_missed_events_then_live() -> None:
    topic = make_broker().topic("t")
    for i in range(5):
        topic.publish_nowait(Event(f"e{i + 1}"))
    async with topic.subscribe("2") as sub:
        assert sub.replayed == 3
        assert not sub.reset
        assert sub.cursor == "5"
        topic.publish_nowait(Event("e6"))
        assert ids(await sub.receive_batch(2)) == ["3", "4"]
        assert ids(await sub.receive_batch()) == ["5", "6"]  # replay tops up with live
    assert topic.stats().replayed == 3


async def test_resume_from_the_newest_id_replays_nothing() -> None:
    topic = make_broker().topic(
        "t",
    )
    topic.publish_nowait(Event("a"))
    topic.publish_nowait(Event("b"))
    async with topic.subscribe("2") as sub:
        assert drain(sub) == []
        assert not sub.reset
        topic.publish_nowait(Event("c"))
        assert ids(drain(sub)) == ["3"]


async def test_resume_from_newest_id_works_without_history() -> None:
    broker = make_broker(TopicOptions(history_size=0))
    topic = broker.topic("t")
    topic.publish_nowait(Event("a"))
    async with topic.subscribe("1") as sub:
        assert drain(sub) == []
        assert not sub.reset
    async with topic.subscribe("0") as sub:
        assert drain(sub)[0].event == "reset"
    assert topic.stats().history_size == 0


@pytest.mark.parametrize("last_id", ["", None])
async def test_empty_or_missing_last_id_means_live_only(last_id: str | None) -> None:
    topic = make_broker().topic("t")
    topic.publish_nowait(Event("a"))
    async with topic.subscribe(last_id) as sub:
        assert drain(sub) == []
        assert not sub.reset


async def test_unknown_id_yields_reset_then_live() -> None:
    topic = make_broker().topic("news")
    topic.publish_nowait(Event("a"))
    async with topic.subscribe("no-such-id") as sub:
        assert sub.reset
        topic.publish_nowait(Event("b"))
        events = await sub.receive_batch()
    # The reset event carries the newest id, so the next reconnect resumes.
    assert events == [Event(event="reset", data="news", id="1"), Event("b", id="2")]
    assert topic.stats().resets == 1


async def test_reset_on_an_empty_topic_has_no_id() -> None:
    topic = make_broker().topic("t")
    async with topic.subscribe("57") as sub:
        assert sub.receive_nowait() == Event(event="reset", data="t")
        assert sub.cursor is None


async def test_custom_reset_event() -> None:
    custom = Event(event="resync", data="{}", retry=500)
    topic = make_broker(TopicOptions(reset_event=custom)).topic("t")
    topic.publish_nowait(Event("a"))
    async with topic.subscribe("x") as sub:
        assert sub.receive_nowait() == Event(event="resync", data="{}", retry=500, id="1")
    with_id = Event(event="resync", data="{}", id="fixed")
    topic2 = make_broker(TopicOptions(reset_event=with_id)).topic("t")
    topic2.publish_nowait(Event("a"))
    async with topic2.subscribe("x") as sub:
        assert sub.receive_nowait() is with_id


async def test_history_is_bounded_by_count() -> None:
    topic = make_broker(TopicOptions(history_size=3)).topic("t")
    for i in range(6):
        topic.publish_nowait(Event(str(i)))
    assert topic.stats().history_size == 3
    async with topic.subscribe("3") as sub:  # oldest kept id is 4
        assert drain(sub)[0].event == "reset"
    async with topic.subscribe("4") as sub:
        assert ids(drain(sub)) == ["5", "6"]


async def test_history_is_bounded_by_age(autojump_clock: trio.testing.MockClock) -> None:
    topic = make_broker(TopicOptions(history_max_age=10)).topic("t")
    topic.publish_nowait(Event("old"))
    await trio.sleep(6)
    topic.publish_nowait(Event("mid"))
    await trio.sleep(6)
    topic.publish_nowait(Event("new"))
    # "old" is 12 s old: gone. Resuming from it needs a reset, from "mid" works.
    assert topic.stats().history_size == 2
    async with topic.subscribe("1") as sub:
        assert drain(sub)[0].event == "reset"
    async with topic.subscribe("2") as sub:
        assert data(drain(sub)) == ["new"]
    # Age is checked on access too, not only when publishing.
    await trio.sleep(20)
    assert topic.stats().history_size == 0
    async with topic.subscribe("2") as sub:
        assert drain(sub)[0].event == "reset"
    async with topic.subscribe("3") as sub:  # still the newest id: nothing missed
        assert drain(sub) == []


async def test_duplicate_custom_ids_resume_from_the_newest() -> None:
    topic = make_broker(TopicOptions(history_size=3)).topic("t")
    topic.publish_nowait(Event("a", id="x"))
    topic.publish_nowait(Event("b"))
    topic.publish_nowait(Event("c", id="x"))
    topic.publish_nowait(Event("d"))
    async with topic.subscribe("x") as sub:
        assert data(drain(sub)) == ["d"]
    # The first "x" left the history when "d" came; the index kept the second.
    topic.publish_nowait(Event("e"))
    async with topic.subscribe("x") as sub:
        assert data(drain(sub)) == ["d", "e"]
    topic.publish_nowait(Event("f"))  # now the second "x" leaves too
    async with topic.subscribe("x") as sub:
        assert drain(sub)[0].event == "reset"


async def test_concurrent_publishers_and_resumers_see_no_gap_or_duplicate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Subscribers join mid-stream from random ids while publishers run."""
    rng = random.Random(4)
    topic = make_broker(TopicOptions(history_size=1000, buffer_size=1000)).topic("t")
    per_publisher = 150
    streams: list[tuple[str | None, list[str]]] = []

    async def publisher(name: str) -> None:
        for i in range(per_publisher):
            if rng.random() < 0.5:
                await topic.publish(Event(f"{name}{i}"))
            else:
                topic.publish_nowait(Event(f"{name}{i}"))
                await trio.lowlevel.checkpoint()

    async def subscriber() -> None:
        for _ in range(rng.randint(0, 200)):
            await trio.lowlevel.checkpoint()
        newest = topic.last_event_id
        start = None
        if newest is not None and rng.random() < 0.8:
            start = str(rng.randint(max(1, int(newest) - 50), int(newest)))
        got: list[str] = []
        async with topic.subscribe(start) as sub:
            # Ends once everything is blocked, i.e. after the publishers.
            with trio.move_on_after(1):
                while batch := await sub.receive_batch(rng.randint(1, 5)):
                    got.extend(e.id for e in batch if e.id)
        streams.append((start, got))

    async with trio.open_nursery() as nursery:
        for name in "abc":
            nursery.start_soon(publisher, name)
        for _ in range(30):
            nursery.start_soon(subscriber)
    last = 3 * per_publisher
    assert topic.last_event_id == str(last)
    assert len(streams) == 30
    for start, got in streams:
        numbers = [int(i) for i in got]
        if start is not None:
            assert numbers == list(range(int(start) + 1, last + 1))
        else:
            assert numbers == list(range(last - len(numbers) + 1, last + 1))
