"""A parked topic stream (``_parked.py``) on a fake direct transport, on the autojump clock.

Heartbeats, the stream's end, shutdown and the peer leaving, with one task and
no cancel scope while idle (it sleeps in the idle watch, ``_idle.py``).
"""

from __future__ import annotations

import trio
import trio.testing
from test_exchange import END, HEARTBEAT, FakeTransport, idle, make, request

from trio_sse import App, Broker, Config, Event, topic_stream
from trio_sse._exchange import Exchange
from trio_sse._idle import IdleStreams

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
