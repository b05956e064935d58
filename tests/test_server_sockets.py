"""The raw server over real loopback sockets.

The in-memory tests (``test_server*.py``) pin the behaviour down exactly;
these check that it holds on real TCP: ``serve()`` on port 0, the peer's address,
a client that stops reading with a small receive buffer, resets, and a
graceful shutdown of a couple of hundred real streams.
"""

from __future__ import annotations

import socket
import struct
import time
from functools import partial

import pytest
import trio
import trio.testing
from clients import Client
from probe_app import Probe, probe_app
from servers import running_tcp

from trio_sse import App, Broker, Config, Event, serve, topic_stream
from trio_sse._connection import _Connection
from trio_sse._server import Server

FINAL_RETRY = b"retry: 1000\n\n"
FINAL_TAIL = b"%x\r\n%b\r\n0\r\n\r\n" % (len(FINAL_RETRY), FINAL_RETRY)


def make_app() -> tuple[App, Probe]:
    return probe_app(event_size=16_000, greet=True)


async def connect(port: int, *, rcvbuf: int | None = None) -> Client:
    if rcvbuf is None:
        return await Client.connect("127.0.0.1", port)
    return await Client.connect("127.0.0.1", port, rcvbuf=rcvbuf, read_size=1024)


async def wait_for_no_connections(server: Server) -> None:
    while server.connections:
        await trio.sleep(0.01)


async def test_serve_on_port_0_keep_alive_and_streams() -> None:
    app, _ = make_app()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(serve, app, "127.0.0.1", 0)
            port = listeners[0].socket.getsockname()[1]
            assert port != 0
            client = await connect(port)
            for _ in range(3):
                reply = await client.request()
                assert (reply.status, reply.body) == (200, b"hello")
            await client.send_request("GET", "/events")
            head = await client.head()
            assert (b"content-type", b"text/event-stream; charset=utf-8") in head.headers
            body = await client.rest()
            assert [(e.type, e.data) for e in body.events] == [("message", "one"), ("x", "two")]
            assert client.raw.endswith(b"0\r\n\r\n")
            await client.aclose()
            nursery.cancel_scope.cancel()


async def test_pipelined_requests_over_tcp() -> None:
    app, _ = make_app()
    with trio.fail_after(10):
        async with running_tcp(app) as (_, port, _):
            client = await connect(port)
            await client.send_raw(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n" * 3)
            raw = b""
            while raw.count(b"hello") < 3:
                raw += await client.receive_some()
            assert raw.count(b"HTTP/1.1 200 OK\r\n") == 3
            await client.aclose()


async def test_an_accepted_connection_knows_its_peer() -> None:
    # (TCP_NODELAY is trio's SocketStream default, not ours to test.)
    app, probe = make_app()
    with trio.fail_after(10):
        async with running_tcp(app) as (server, port, _):
            client = await connect(port)
            await client.send_request("GET", "/idle")
            await client.head()
            await probe.started.wait()
            [conn] = server.connections
            # The peer address is known for logs and Request.client.
            assert conn.client == client.stream.socket.getsockname()  # type: ignore[attr-defined]
            await client.aclose()


async def test_http10_stream_over_tcp_is_close_delimited() -> None:
    app, _ = make_app()
    with trio.fail_after(10):
        async with running_tcp(app) as (_, port, _):
            client = await connect(port)
            await client.send_raw(b"GET /events HTTP/1.0\r\n\r\n")
            raw = await client.wait_closed()
            head, _, body = raw.partition(b"\r\n\r\n")
            assert b"transfer-encoding" not in head.lower()
            assert body == Event("one", id="1").encode() + Event("two", event="x").encode()
            await client.aclose()


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_disconnect_cancels_the_handler(how: str) -> None:
    app, probe = make_app()
    with trio.fail_after(10):
        async with running_tcp(app) as (server, port, _):
            client = await connect(port)
            await client.send_request("GET", "/idle")
            await client.head()
            assert [e.data for e in await client.events(1)] == ["ready"]
            if how == "reset":
                reset_on_close(client)
            await client.aclose()
            with trio.fail_after(1):
                await probe.finished.wait()
            assert probe.cancelled.is_set()
            with trio.fail_after(1):
                await wait_for_no_connections(server)
            # The server goes on.
            other = await connect(port)
            assert (await other.request()).body == b"hello"
            await other.aclose()


async def test_write_stall_on_a_real_socket_cuts_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app, probe = make_app()
    cfg = Config(write_timeout=30)
    with trio.fail_after(600):
        async with running_tcp(app, cfg) as (server, port, _):
            client = await connect(port, rcvbuf=4096)
            await client.send_request("GET", "/firehose")
            await client.head()
            start = trio.current_time()
            # Stop reading: the socket buffers fill, then the write stalls.
            await probe.finished.wait()
            assert probe.cancelled.is_set()
            assert probe.sent > 0
            assert trio.current_time() - start >= 30
            await wait_for_no_connections(server)
            other = await connect(port)
            assert (await other.request()).body == b"hello"
            await other.aclose()
            await client.aclose()


async def test_malformed_request_over_tcp_and_others_go_on() -> None:
    app, _ = make_app()
    with trio.fail_after(10):
        async with running_tcp(app) as (_, port, _):
            other = await connect(port)
            assert (await other.request()).status == 200
            for data in (b"NOT HTTP\r\n\r\n", b"GET / HTTP/1.1\r\nhost: t\r\nx: \x00\r\n\r\n"):
                bad = await connect(port)
                await bad.send_raw(data)
                raw = await bad.wait_closed()
                assert raw.startswith(b"HTTP/1.1 400 Bad Request\r\n")
                await bad.aclose()
            assert (await other.request()).status == 200
            await other.aclose()


async def test_max_connections_over_tcp() -> None:
    app, _ = make_app()
    with trio.fail_after(10):
        async with running_tcp(app, Config(max_connections=1)) as (_, port, _):
            first = await connect(port)
            assert (await first.request()).status == 200
            second = await connect(port)
            reply = await second.reply()
            assert reply.status == 503
            assert reply.header("retry-after") == "1"
            await second.aclose()
            await first.aclose()


async def test_graceful_shutdown_of_200_real_streams() -> None:
    app, _ = make_app()
    cfg = Config(stream_end_retry_jitter=0, shutdown_grace_period=5)
    n = 200
    with trio.fail_after(20):
        async with running_tcp(app, cfg) as (server, port, scope), trio.open_nursery() as nursery:
            clients = []
            for _ in range(n):
                client = await connect(port)
                await client.send_request("GET", "/idle")
                await client.head()
                assert [e.data for e in await client.events(1)] == ["ready"]
                clients.append(client)
            assert len(server.connections) == n
            ended = 0

            async def read_to_end(client: Client) -> None:
                nonlocal ended
                body = await client.rest()
                assert body.ended == "EndOfMessage"
                assert body.retry == 1000
                assert client.raw.endswith(FINAL_TAIL)
                await client.aclose()
                ended += 1

            for client in clients:
                nursery.start_soon(read_to_end, client)
            start = trio.current_time()
            scope.cancel()
        # serve() has returned and every client has read its stream's end.
        assert trio.current_time() - start < cfg.shutdown_grace_period
        assert ended == n
        assert server.connections == set()


def reset_on_close(client: Client) -> None:
    """SO_LINGER 0: closing sends RST instead of FIN."""
    sock = client.stream.socket  # type: ignore[attr-defined]
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def test_reset_while_the_server_writes() -> None:
    app, probe = make_app()
    with trio.fail_after(10):
        async with running_tcp(app) as (server, port, _):
            client = await connect(port)
            await client.send_request("GET", "/firehose")
            await client.head()
            await client.events(2)
            reset_on_close(client)
            await client.aclose()
            with trio.fail_after(2):
                await probe.finished.wait()
                await wait_for_no_connections(server)
            assert probe.cancelled.is_set()


async def test_reset_of_an_idle_keep_alive_connection() -> None:
    app, _ = make_app()
    with trio.fail_after(10):
        async with running_tcp(app) as (server, port, _):
            client = await connect(port)
            assert (await client.request()).status == 200
            reset_on_close(client)
            await client.aclose()
            with trio.fail_after(2):
                await wait_for_no_connections(server)


async def test_serve_with_a_listen_backlog() -> None:
    app, _ = make_app()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                partial(serve, app, "127.0.0.1", 0, config=Config(backlog=8))
            )
            client = await connect(listeners[0].socket.getsockname()[1])
            assert (await client.request()).body == b"hello"
            await client.aclose()
            nursery.cancel_scope.cancel()


async def parked_stream(port: int, server: Server, broker: Broker, **kw: int) -> Client:
    """A client of ``/s`` whose stream is parked: the topic's DIRECT function is its sink."""
    client = await connect(port, **kw)
    await client.send_request("GET", "/s")
    await client.head()
    while not any(isinstance(c, _Connection) and c.exchange._park for c in server.connections):
        await trio.sleep(0.01)
    return client


async def test_a_parked_stream_writes_its_socket_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """``_direct.py`` Rule 4: a delivery is an ``os.write`` on the socket, no call into the
    connection; what does not fit is kept and sent in order; a reset ends the stream."""
    app = App(config=Config(heartbeat_interval=None))
    broker = Broker()
    app.add_route("/s", topic_stream(broker, ["t"]))
    calls: list[int] = []
    write_now = _Connection.write_now

    def counted(self: _Connection, data: bytes) -> bytes | None:
        calls.append(len(data))
        return write_now(self, data)

    monkeypatch.setattr(_Connection, "write_now", counted)
    with trio.fail_after(10):
        async with running_tcp(app) as (server, port, _):
            client = await parked_stream(port, server, broker, rcvbuf=4096)
            [conn] = server.connections
            assert isinstance(conn, _Connection)
            exchange = conn.exchange
            calls.clear()
            sent: list[Event] = []
            # The client does not read: the socket's buffers fill, a write
            # goes through in part and the rest is kept for the stream.
            while not exchange._out:
                assert len(sent) < 500
                sent.append(broker.publish_nowait("t", Event(f"{len(sent)} " + "x" * 16_000)))
            assert calls == []
            assert sent[-1].encode_chunk().endswith(exchange._out)
            received = await client.events(len(sent))
            assert [e.data for e in received] == [e.data for e in sent]
            assert [e.last_event_id for e in received] == [e.id for e in sent]
            assert calls  # the stream itself wrote what was kept, through the connection
            calls.clear()

            # A reset peer: the next delivery's write fails, and the stream ends.
            reset_on_close(client)
            client.stream.socket.close()  # type: ignore[attr-defined]
            # Blocking on purpose: no checkpoint, so the idle watch has not seen it.
            time.sleep(0.05)  # noqa: ASYNC251
            broker.publish_nowait("t", Event("after the reset"))
            assert exchange._gone
            assert calls == []
            with trio.fail_after(2):
                await wait_for_no_connections(server)
            assert not broker.topics["t"]._subscribers
