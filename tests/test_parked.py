"""A parked topic stream (``_parked.py``) on a fake direct transport, on the autojump clock.

Heartbeats, the stream's end, shutdown and the peer leaving, with one task and
no cancel scope while idle (it sleeps in the idle watch, ``_idle.py``).
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from test_exchange import END, HEARTBEAT, FakeTransport, idle, make, request

from trio_sse import App, Broker, Config, Event, topic_stream
from trio_sse._delivery import Mode
from trio_sse._exchange import Exchange
from trio_sse._idle import IdleStreams
from trio_sse._limits import ClientLimits
from trio_sse._subscription import Subscription
from trio_sse._transport import PeerGone

__all__ = ["idle"]  # the fixture


def app_with_topic(config: Config) -> tuple[App, Broker]:
    app = App(config=config)
    broker = Broker()
    broker.topic("t")
    app.add_route("/s", topic_stream(broker, ["t"]))
    return app, broker


def times(fake: FakeTransport, data: bytes) -> list[float]:
    return [t for t, d in fake.writes if d == data]


async def start(
    app: App, nursery: trio.Nursery, idle: IdleStreams
) -> tuple[Exchange, FakeTransport]:
    exchange, fake = make(app, idle, room=10_000)
    nursery.start_soon(exchange.dispatch, request(app, exchange, target=b"/s"))
    await trio.testing.wait_all_tasks_blocked()
    return exchange, fake


async def test_heartbeats_while_idle_and_after_direct_writes(
    autojump_clock: trio.testing.MockClock, idle: IdleStreams
) -> None:
    app, broker = app_with_topic(Config(heartbeat_interval=10))
    async with trio.open_nursery() as nursery:
        t0 = trio.current_time()
        _, fake = await start(app, nursery, idle)
        await trio.sleep(25)
        assert [t - t0 for t in times(fake, HEARTBEAT)] == [10, 20]
        event = broker.publish_nowait("t", Event("x"))  # t=25: written directly
        assert times(fake, event.encode()) == [t0 + 25]
        await trio.sleep(21)
        # The write pushed the next heartbeat to 35, then 45.
        assert [t - t0 for t in times(fake, HEARTBEAT)] == [10, 20, 35, 45]
        fake.gone.set()


async def test_the_end_of_the_stream_and_shutdown_send_the_final_retry(
    autojump_clock: trio.testing.MockClock, idle: IdleStreams
) -> None:
    config = Config(heartbeat_interval=10, max_stream_lifetime=28, stream_end_retry_jitter=0)
    app, broker = app_with_topic(config)
    final = config.stream_end_event().encode() + END
    with trio.fail_after(60):  # virtual seconds: the end must come at 28
        async with trio.open_nursery() as nursery:
            t0 = trio.current_time()
            _, fake = await start(app, nursery, idle)
            await trio.sleep(25)
            broker.publish_nowait("t", Event("x"))  # moves the heartbeat, never past the end
    assert trio.current_time() - t0 == 28
    assert fake.data().endswith(final)
    assert not broker.topics["t"]._subscribers
    # A shutdown stops an idle parked stream at once.
    app, broker = app_with_topic(Config(heartbeat_interval=10, stream_end_retry_jitter=0))
    with trio.fail_after(1):
        async with trio.open_nursery() as nursery:
            exchange, fake = await start(app, nursery, idle)
            t1 = trio.current_time()
            exchange.stop()
    assert trio.current_time() == t1
    assert fake.data().endswith(final)


async def test_a_vanished_peer_ends_the_stream_without_a_tail(
    autojump_clock: trio.testing.MockClock, idle: IdleStreams
) -> None:
    app, broker = app_with_topic(Config(heartbeat_interval=None))
    async with trio.open_nursery() as nursery:
        _, fake = await start(app, nursery, idle)
        fake.gone.set()
    assert not fake.data().endswith(END)
    assert fake.closing
    assert not broker.topics["t"]._subscribers


def parked_sub(broker: Broker, exchange: Exchange) -> Subscription:
    """The subscription a parked stream's exchange writes for (its entry sink's)."""
    subs = [s for t in broker.topics.values() for s in t._subscribers if exchange._sub is s]
    assert subs
    return subs[0]


async def test_one_call_per_delivery_for_one_topic_a_converted_event_for_several(
    idle: IdleStreams,
) -> None:
    """One topic: the exchange's entry sink is the DIRECT function; several: it is not."""
    app = App(config=Config(heartbeat_interval=None))
    broker = Broker()
    app.add_route("/one", topic_stream(broker, ["t"]))
    app.add_route("/both", topic_stream(broker, ["t", "u"]))
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            one, fake_one = make(app, idle, room=10_000)
            both, fake_both = make(app, idle, room=10_000)
            nursery.start_soon(one.dispatch, request(app, one, target=b"/one"))
            nursery.start_soon(both.dispatch, request(app, both, target=b"/both"))
            await trio.testing.wait_all_tasks_blocked()
            fan_out = broker.topics["t"]._subscribers
            sub_one, sub_both = parked_sub(broker, one), parked_sub(broker, both)
            assert sub_one._mode is Mode.DIRECT
            assert sub_both._mode is Mode.DIRECT
            assert fan_out[sub_one] == one.write_entry_nowait
            assert fan_out[sub_both] == sub_both._direct
            event = broker.publish_nowait("t", Event("x"))
            assert event.id is not None
            # Written in the publisher's task, and the position moved.
            assert fake_one.data().endswith(event.encode())
            assert sub_one.cursor == event.id
            # The merged stream got the event under its composite cursor.
            assert sub_both.cursor is not None
            assert sub_both.cursor != event.id
            assert fake_both.data().endswith(Event("x", id=sub_both.cursor).encode())
            fake_one.gone.set()
            fake_both.gone.set()


async def test_the_entry_sink_queues_behind_bytes_left_over_in_order(idle: IdleStreams) -> None:
    app, broker = app_with_topic(Config(heartbeat_interval=None))
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            exchange, fake = make(app, idle, room=4)
            nursery.start_soon(exchange.dispatch, request(app, exchange, target=b"/s"))
            await trio.testing.wait_all_tasks_blocked()
            start = len(fake.data())
            sub = parked_sub(broker, exchange)
            first = broker.publish_nowait("t", Event("first"))  # 4 bytes written, rest kept
            assert exchange._out
            second = broker.publish_nowait("t", Event("second"))  # refused: queued
            assert sub._mode is Mode.QUEUE
            assert sub.queued == 1
            await trio.testing.wait_all_tasks_blocked()
            assert fake.data()[start:] == first.encode() + second.encode()
            assert sub._mode is Mode.DIRECT  # idle again
            fake.gone.set()


async def start_on(
    fake: FakeTransport, app: App, idle: IdleStreams, nursery: trio.Nursery
) -> tuple[Exchange, FakeTransport]:
    """A stream of ``/s`` dispatched on ``fake``, parked once every task is blocked."""
    exchange = Exchange(app, app.config, fake, ClientLimits(app.config), idle, fake.fd or 0)
    fake.exchange = exchange
    nursery.start_soon(exchange.dispatch, request(app, exchange, target=b"/s"))
    await trio.testing.wait_all_tasks_blocked()
    return exchange, fake


class FailingTransport(FakeTransport):
    """A direct write of bytes containing ``marker`` raises ``error``."""

    def __init__(self, marker: bytes, error: Exception) -> None:
        super().__init__(room=10_000)
        self.marker = marker
        self.error = error

    def write_now(self, data: bytes) -> bytes | None:
        if self.marker in data:
            raise self.error
        return super().write_now(data)


async def test_an_entry_sink_failure_ends_that_stream_not_the_publisher(
    caplog: pytest.LogCaptureFixture, idle: IdleStreams
) -> None:
    app, broker = app_with_topic(Config(heartbeat_interval=None))
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            _, fake = await start_on(
                FailingTransport(b"boom", RuntimeError("bug in write_now")), app, idle, nursery
            )
            broker.publish_nowait("t", Event("boom"))  # does not raise here
            await trio.testing.wait_all_tasks_blocked()
    assert not broker.topics["t"]._subscribers
    assert fake.data().endswith(END)  # ended like a stream whose handler raised
    assert any("bug in write_now" in str(r.exc_info) for r in caplog.records if r.exc_info)


async def test_a_direct_write_to_a_vanished_peer_ends_the_stream_quietly(
    idle: IdleStreams,
) -> None:
    app, broker = app_with_topic(Config(heartbeat_interval=None))
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            exchange, fake = await start_on(
                FailingTransport(b"bye", PeerGone("connection reset")), app, idle, nursery
            )
            sub = parked_sub(broker, exchange)
            event = broker.publish_nowait("t", Event("bye"))  # does not raise here
            assert exchange._gone
            assert sub.cursor == event.id  # taken (dropped with the connection)
            broker.publish_nowait("t", Event("later"))  # taken and dropped too
            await trio.testing.wait_all_tasks_blocked()
    assert fake.closing
    assert not fake.data().endswith(END)  # nothing more is written
    assert b"later" not in fake.data()
    assert not broker.topics["t"]._subscribers
