"""The raw server's deadlines, heartbeats and disconnects, on trio's autojump clock.

Every ``Config`` deadline is applied by one cancel scope in ``_server.py``;
these tests check each one to the exact (virtual) instant, over in-memory
streams. A client that stops reading is a :func:`trio.testing.lockstep_stream_pair`
client: the server's writes then block until it reads.
"""

from __future__ import annotations

import h11
import pytest
import trio
import trio.testing
from clients import Client, MemoryListener
from probe_app import Probe, probe_app
from servers import connected, running

from trio_sse import App, Config, Event, EventStream, Request

HEARTBEAT = b"3\r\n:\n\n\r\n"  # Event(comment="") as one chunk


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def make_app(config: Config | None = None) -> tuple[App, Probe]:
    return probe_app(config)


# -- request head: header_timeout and keep_alive_timeout -----------------------------


async def test_slowloris_partial_head_gets_408_at_header_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app, _ = make_app()
    cfg = Config(header_timeout=10)
    with trio.fail_after(60):
        async with running(app, cfg) as (server, listener):
            start = trio.current_time()
            client = await listener.client()
            # Drip a byte a second: each byte is progress, but the deadline is
            # for the whole head, counted from the accept.
            for byte in b"GET / HTTP/1.1\r\nhost: t\r\nx-slow: ":
                await client.send_raw(bytes([byte]))
                await trio.sleep(0.25)
            assert len(server.connections) == 1
            await client.receive_some()  # wait for the 408 to start
            assert trio.current_time() == start + 10
            await client.wait_closed()
            raw = bytes(client.raw)
            assert raw.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), raw
            assert b"connection: close\r\n" in raw
            assert server.connections == set()


async def test_silent_connection_is_closed_without_a_response(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app, _ = make_app()
    cfg = Config(header_timeout=7)
    with trio.fail_after(60):
        async with running(app, cfg) as (server, listener):
            start = trio.current_time()
            client = await listener.client()
            assert await client.wait_closed() == b""
            assert trio.current_time() == start + 7
            assert server.connections == set()


async def test_keep_alive_timeout_closes_an_idle_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app, _ = make_app()
    cfg = Config(keep_alive_timeout=5, header_timeout=10)
    with trio.fail_after(60):
        async with connected(app, cfg) as (server, client):
            await trio.sleep(3)
            assert (await client.request()).status == 200
            # The idle clock restarts after each response.
            await trio.sleep(4)
            assert (await client.request()).status == 200
            done = trio.current_time()
            assert await client.wait_closed() == b""
            assert trio.current_time() == done + 5
            assert server.connections == set()


async def test_next_request_head_gets_header_timeout_from_its_first_byte(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app, _ = make_app()
    cfg = Config(keep_alive_timeout=5, header_timeout=10)
    with trio.fail_after(60):
        async with connected(app, cfg) as (_, client):
            assert (await client.request()).status == 200
            await trio.sleep(4)
            first_byte = trio.current_time()
            await client.send_raw(b"GET / HT")
            # Past the keep-alive timeout, within the header timeout: waiting.
            raw = await client.wait_closed()
            assert trio.current_time() == first_byte + 10
            assert raw.startswith(b"HTTP/1.1 408 ")


async def test_pipelined_head_after_a_response_is_not_an_idle_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A second head already buffered behind the first is served even though
    # it arrived before the idle wait began.
    app, _ = make_app()
    cfg = Config(keep_alive_timeout=5)
    with trio.fail_after(60):
        async with connected(app, cfg) as (_, client):
            await client.send_raw(
                b"GET / HTTP/1.1\r\nhost: t\r\n\r\nGET / HTTP/1.1\r\nhost: t\r\n\r\n"
            )
            raw = await client.wait_closed()
            assert raw.count(b"HTTP/1.1 200 OK\r\n") == 2


# -- body_timeout ---------------------------------------------------------------------


async def test_body_timeout_is_408(autojump_clock: trio.testing.MockClock) -> None:
    app, _ = make_app()
    cfg = Config(body_timeout=30)
    with trio.fail_after(120):
        async with connected(app, cfg) as (server, client):
            await client.send(
                h11.Request(
                    method="POST",
                    target="/echo",
                    headers=[("host", "t"), ("content-length", "10")],
                ),
                h11.Data(data=b"12345"),
            )
            start = trio.current_time()
            reply = await client.reply()
            assert trio.current_time() == start + 30
            assert reply.status == 408
            assert reply.header("connection") == "close"
            assert await client.wait_closed() == b""
            assert server.connections == set()


async def test_body_arriving_in_time_is_read(autojump_clock: trio.testing.MockClock) -> None:
    app, _ = make_app()
    cfg = Config(body_timeout=30)
    with trio.fail_after(120):
        async with connected(app, cfg) as (_, client):
            await client.send(
                h11.Request(
                    method="POST",
                    target="/echo",
                    headers=[("host", "t"), ("content-length", "10")],
                ),
                h11.Data(data=b"12345"),
            )
            await trio.sleep(29)
            await client.send(h11.Data(data=b"67890"), h11.EndOfMessage())
            assert (await client.reply()).body == b"1234567890"


# -- write_timeout ---------------------------------------------------------------------


async def test_write_stall_cancels_the_handler_and_frees_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app, probe = make_app()
    cfg = Config(write_timeout=30, heartbeat_interval=None)
    listener = MemoryListener(lockstep=True)
    with trio.fail_after(120):
        async with running(app, cfg, [listener]) as (server, plain):
            client = await listener.client()
            await client.send_request("GET", "/firehose")
            await client.head()
            await probe.started.wait()
            # Read a little, then stop reading.
            await client.events(3)
            stalled = trio.current_time()
            await probe.finished.wait()
            assert probe.cancelled.is_set()
            assert probe.cancelled_at == stalled + 30
            await trio.testing.wait_all_tasks_blocked()
            assert server.connections == set()
            # The server stays usable.
            other = Client(await plain.connect())
            assert (await other.request()).status == 200


async def test_heartbeat_does_not_hide_a_write_stall(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # An idle stream whose client stopped reading: the heartbeat's own write
    # stalls, and write_timeout still cuts it.
    app, probe = make_app()
    cfg = Config(write_timeout=30, heartbeat_interval=15)
    listener = MemoryListener(lockstep=True)
    with trio.fail_after(120):
        async with running(app, cfg, [listener]) as (server, _):
            client = await listener.client()
            start = trio.current_time()
            await client.send_request("GET", "/idle")
            await client.head()
            await probe.finished.wait()
            assert probe.cancelled_at == start + 15 + 30
            await trio.testing.wait_all_tasks_blocked()
            assert server.connections == set()


# -- heartbeats -----------------------------------------------------------------------


async def test_heartbeats_on_a_silent_stream_every_15_seconds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app, _ = make_app()
    with trio.fail_after(120):
        async with running(app) as (_, listener):  # default Config: 15 s
            client = await listener.client()
            start = trio.current_time()
            await client.send_request("GET", "/idle")
            await client.head()
            arrivals = []
            for _ in range(3):
                data = await client.stream.receive_some(65536)
                arrivals.append(trio.current_time() - start)
                assert data == HEARTBEAT
            assert arrivals == [15, 30, 45]
            # Comments dispatch nothing.
            assert client.decoder.feed(b":\n\n" * 3) == []


async def test_events_postpone_the_heartbeat(autojump_clock: trio.testing.MockClock) -> None:
    app = App()

    @app.stream("/sometimes")
    async def sometimes(request: Request, stream: EventStream) -> None:
        await trio.sleep(10)
        await stream.send("a")  # t=10: next heartbeat at 25, not 15
        await trio.sleep(20)
        await stream.send("b")  # t=30 (after the heartbeat at 25)
        await trio.sleep_forever()

    with trio.fail_after(120):
        async with connected(app, Config(heartbeat_interval=15)) as (_, client):
            start = trio.current_time()
            await client.send_request("GET", "/sometimes")
            await client.head()
            seen: list[tuple[float, bytes | bytearray]] = []
            while len(seen) < 4:
                data = await client.stream.receive_some(65536)
                seen.append((trio.current_time() - start, data))
            assert seen == [
                (10, chunk(Event("a").encode())),
                (25, HEARTBEAT),
                (30, chunk(Event("b").encode())),
                (45, HEARTBEAT),
            ]


async def test_heartbeat_comment_text_and_http10(autojump_clock: trio.testing.MockClock) -> None:
    app, _ = make_app()
    cfg = Config(heartbeat_interval=2, heartbeat_comment="ping")
    with trio.fail_after(60):
        async with running(app, cfg) as (_, listener):
            client = await listener.client()
            await client.send_request("GET", "/idle")
            await client.head()
            assert await client.stream.receive_some(65536) == chunk(b": ping\n\n")
            # HTTP/1.0: no chunk framing around the comment.
            raw10 = await listener.client()
            await raw10.send_raw(b"GET /idle HTTP/1.0\r\n\r\n")
            while b"\r\n\r\n" not in raw10.raw:
                await raw10.receive_some()
            assert raw10.raw.endswith(b"\r\n\r\n")
            assert await raw10.stream.receive_some(65536) == b": ping\n\n"


async def test_no_heartbeat_when_disabled(autojump_clock: trio.testing.MockClock) -> None:
    app, _ = make_app()
    with trio.fail_after(1000):
        async with connected(app, Config(heartbeat_interval=None)) as (_, client):
            await client.send_request("GET", "/idle")
            await client.head()
            with trio.move_on_after(600):
                data = await client.stream.receive_some(65536)
                pytest.fail(f"received {data!r}")


# -- max_stream_lifetime -----------------------------------------------------------------


async def test_max_stream_lifetime_ends_with_retry_then_last_chunk(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app, probe = make_app()
    cfg = Config(max_stream_lifetime=10, stream_end_retry=2500, stream_end_retry_jitter=0)
    with trio.fail_after(60):
        async with connected(app, cfg) as (server, client):
            start = trio.current_time()
            await client.send_request("GET", "/ticks")
            await client.head()
            body = await client.rest()
            assert trio.current_time() == start + 10
            assert probe.cancelled_at == start + 10
            assert [e.data for e in body.events] == [str(n) for n in range(10)]
            assert body.retry == 2500
            assert body.ended == "EndOfMessage"
            assert client.raw.endswith(chunk(b"retry: 2500\n\n") + b"0\r\n\r\n")
            assert await client.wait_closed() == b""
            assert server.connections == set()


async def test_max_stream_lifetime_without_retry_hint(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app, _ = make_app()
    cfg = Config(max_stream_lifetime=3, stream_end_retry=None)
    with trio.fail_after(60):
        async with connected(app, cfg) as (_, client):
            await client.send_request("GET", "/ticks")
            await client.head()
            body = await client.rest()
            assert [e.data for e in body.events] == ["0", "1", "2"]
            assert body.retry is None
            assert client.raw.endswith(chunk(Event("2", id="2").encode()) + b"0\r\n\r\n")


async def test_max_stream_lifetime_http10_sends_retry_then_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app, _ = make_app()
    cfg = Config(max_stream_lifetime=2, stream_end_retry=0, stream_end_retry_jitter=0)
    with trio.fail_after(60):
        async with connected(app, cfg) as (_, client):
            await client.send_raw(b"GET /ticks HTTP/1.0\r\n\r\n")
            raw = await client.wait_closed()
            body = raw.partition(b"\r\n\r\n")[2]
            assert body == (
                Event("0", id="0").encode() + Event("1", id="1").encode() + b"retry: 0\n\n"
            )


# -- disconnects ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/idle", "/ticks"])
async def test_client_closing_mid_stream_cancels_the_handler_promptly(
    autojump_clock: trio.testing.MockClock, path: str
) -> None:
    app, probe = make_app()
    with trio.fail_after(60):
        async with connected(app) as (server, client):
            await client.send_request("GET", path)
            await client.head()
            await probe.started.wait()
            await trio.sleep(2.5)
            closed_at = trio.current_time()
            await client.aclose()
            await probe.finished.wait()
            assert probe.cancelled_at == closed_at  # no time passes
            await trio.testing.wait_all_tasks_blocked()
            assert server.connections == set()


async def test_bytes_sent_during_a_stream_are_ignored(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app, probe = make_app()
    with trio.fail_after(60):
        async with connected(app, Config(max_stream_lifetime=3)) as (_, client):
            start = trio.current_time()
            await client.send_request("GET", "/ticks")
            await client.head()
            await client.send_raw(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
            body = await client.rest()
            assert [e.data for e in body.events] == ["0", "1", "2"]
            assert probe.cancelled_at == start + 3


async def test_an_active_stream_never_wakes_its_companion(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes push the heartbeat deadline back instead of letting it expire.

    At 10,000 streams, a companion task that woke every heartbeat interval to
    re-arm its socket wait cost a third of the server's CPU. A stream that
    writes every second for a minute must not re-arm its socket wait.
    """
    from trio_sse import _server

    receives = 0
    original = _server._Connection._receive

    async def counting(self: _server._Connection) -> bytes:
        nonlocal receives
        receives += 1
        return await original(self)

    monkeypatch.setattr(_server._Connection, "_receive", counting)
    app = App()
    done = trio.Event()

    @app.stream("/every-second")
    async def every_second(request: Request, stream: EventStream) -> None:
        for i in range(60):
            await stream.send(Event(str(i)))
            await trio.sleep(1)
        done.set()
        await trio.sleep_forever()

    with trio.fail_after(120):
        async with running(app) as (_, listener):  # default Config: 15 s heartbeats
            client = await listener.client()
            await client.send_request("GET", "/every-second")
            await client.head()
            await trio.testing.wait_all_tasks_blocked()
            waiting = receives  # the companion is now waiting on the socket
            await done.wait()
            events = await client.events(60)
            assert [e.data for e in events] == [str(i) for i in range(60)]
            assert receives == waiting
