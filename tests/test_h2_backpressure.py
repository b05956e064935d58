"""HTTP/2 backpressure: a stream whose peer grants no window is a slow subscriber.

Its topic subscription overflows and is evicted by the topic's policy, its
stalled write resets the stream (``RST_STREAM``) after ``write_timeout``, and
the other streams of the same connection keep flowing. A client that grants
window but never reads its socket cannot make the server hold more than
``Config.h2_max_buffer`` bytes for its connection.
"""

from __future__ import annotations

from pathlib import Path

import h2.errors
import pytest
import trio
from h2_peers import Certs, H2Peer, start_tls_server

from trio_sse import App, Broker, Event, EventStream, Request, TopicOptions, topic_stream
from trio_sse._h2_connection import H2ServerConnection

BIG = 10_000_000


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return Certs.make(tmp_path)


async def test_window_starved_stream_is_evicted_and_reset_others_flow(
    nursery: trio.Nursery, certs: Certs
) -> None:
    app = App()
    broker = Broker(TopicOptions(buffer_size=4, overflow="evict"))
    topic = broker.topic("t")
    app.add_route("/events/{topic}", topic_stream(broker))
    server = await start_tls_server(nursery, app, certs, write_timeout=1.0)
    with trio.fail_after(15):
        # SETTINGS_INITIAL_WINDOW_SIZE 0: no stream may send until granted.
        peer = await H2Peer.connect(server.port, certs, window=0)
        peer.conn.increment_flow_control_window(BIG)  # the connection's window is open
        slow, fast = peer.request("/events/t"), peer.request("/events/t")
        peer.grant(fast, 1_000_000)
        peer.auto_grant.add(fast)
        await peer.flush()
        while topic.stats().subscribers < 2:
            await peer.receive()  # (nothing may arrive: a timeout-free poll)
        async with trio.open_nursery() as inner:
            inner.start_soon(peer.receive_until, lambda: slow in peer.resets)
            for i in range(40):
                topic.publish_nowait(Event(f"e{i}"))
                await trio.sleep(0.01)
        received = bytes(peer.data[fast]).decode()
        assert [f"e{i}" for i in range(40)] == [
            line[6:] for line in received.split("\n") if line.startswith("data:")
        ]
        stats = topic.stats()
        assert stats.evicted == 1
        assert stats.subscribers == 1
        # The evicted stream could not even take its final bytes: reset.
        assert peer.resets[slow] == h2.errors.ErrorCodes.CANCEL
        assert not peer.data.get(slow)
        # The connection is alive: the fast stream still gets events.
        topic.publish_nowait(Event("after"))
        await peer.receive_until(lambda: b"data: after" in peer.data[fast])
        await peer.aclose()


async def test_write_deadline_resets_a_starved_stream(nursery: trio.Nursery, certs: Certs) -> None:
    app = App()
    ended: list[float] = []

    @app.stream("/flood")
    async def flood(request: Request, stream: EventStream) -> None:
        try:
            for i in range(100_000):
                await stream.send(Event("x" * 1000, id=str(i)))
        finally:
            ended.append(trio.current_time())

    server = await start_tls_server(nursery, app, certs, write_timeout=0.5)
    with trio.fail_after(10):
        peer = await H2Peer.connect(server.port, certs)  # default 64 KiB windows, never granted
        start = trio.current_time()
        sid = peer.request("/flood")
        await peer.flush()
        await peer.receive_until(lambda: sid in peer.resets)
        assert peer.resets[sid] == h2.errors.ErrorCodes.CANCEL
        assert len(peer.data[sid]) == 65_535  # exactly the window it was given
        assert 0.4 < trio.current_time() - start < 3
        while not ended:
            await trio.sleep(0.01)
        await peer.aclose()


async def test_connection_buffer_is_bounded_when_the_client_stops_reading(
    nursery: trio.Nursery, certs: Certs
) -> None:
    app = App()
    limit = 64 * 1024

    @app.stream("/flood")
    async def flood(request: Request, stream: EventStream) -> None:
        for i in range(100_000):
            await stream.send(Event("y" * 3000, id=str(i)))

    server = await start_tls_server(nursery, app, certs, write_timeout=1.0, h2_max_buffer=limit)
    with trio.fail_after(15):
        peer = await H2Peer.connect(server.port, certs, window=2**31 - 1)
        peer.conn.increment_flow_control_window(2**31 - 1 - 65_535)
        for _ in range(10):
            peer.request("/flood")
        await peer.flush()
        # Then never read the socket again: windows are open, the socket is not.
        conns: list[H2ServerConnection] = []
        while not conns:
            conns = [c for c in server.server.connections if isinstance(c, H2ServerConnection)]
            await trio.sleep(0.001)
        conn = conns[0]
        peak = 0
        while conn in server.server.connections:
            peak = max(peak, len(conn.proto.out) + conn.proto.in_flight)
            await trio.sleep(0.001)
        # Frames over the bound: only HEADERS and h2's own small frames.
        assert limit / 2 < peak <= limit + 4096, peak
        await peer.aclose()
