"""The raw h11 server over in-memory streams: HTTP semantics, limits, malformed input.

Each test drives a :class:`trio_sse._server.Server` with the h11 client of
``clients.py`` over :func:`trio.testing.memory_stream_pair` (or, to make a
client that stops reading, :func:`trio.testing.lockstep_stream_pair`). Every
test runs under a ``fail_after`` guard; the ones about time use the autojump
clock, so a deadline of minutes costs nothing and is checked to the exact
instant. Timeouts, disconnects and shutdown have their own modules
(``test_server_timeouts.py``, ``test_server_shutdown.py``); real loopback
sockets are in ``test_server_sockets.py``.
"""

from __future__ import annotations

import errno
import logging

import h11
import pytest
import trio
import trio.testing
from clients import Client, MemoryListener
from servers import connected, running

from trio_sse import (
    App,
    Config,
    Event,
    EventStream,
    HTTPException,
    Request,
    Response,
    StreamResponse,
    serve_listeners,
)
from trio_sse._server import Server

STREAM_HEADERS = [
    ("content-type", "text/event-stream; charset=utf-8"),
    ("cache-control", "no-cache"),
    ("x-accel-buffering", "no"),
]


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def make_app(config: Config | None = None) -> App:
    app = App(config=config)

    @app.get("/")
    async def index(request: Request) -> str:
        return "hello"

    @app.route("/echo", methods=["POST", "PUT"])
    async def echo(request: Request) -> bytes:
        return await request.body()

    @app.get("/items/{item}")
    async def item(request: Request) -> dict[str, str]:
        return {"item": request.path_params["item"], "q": request.query_param("q") or ""}

    @app.stream("/events")
    async def events(request: Request, stream: EventStream) -> None:
        await stream.send(Event("one", id="1"))
        await stream.send(Event("two\nlines", event="x"))

    @app.stream("/resume")
    async def resume(request: Request, stream: EventStream) -> None:
        await stream.send(Event(f"from {stream.last_event_id}"))

    return app


# -- keep-alive, pipelining, request bodies ------------------------------------


async def test_keep_alive_serves_requests_on_one_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(5):
        async with connected(make_app()) as (server, client):
            for n in range(3):
                reply = await client.request("GET", f"/items/{n}?q=x")
                assert reply.status == 200
                assert reply.body == b'{"item":"%d","q":"x"}' % n
                assert reply.header("content-length") == str(len(reply.body))
                assert reply.header("connection") is None
                assert reply.header("server") == "trio-sse"
                assert reply.header("date") is not None
                assert len(server.connections) == 1
            await client.aclose()


async def test_serve_listeners_entry_point(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(5):
        listener = MemoryListener()
        async with trio.open_nursery() as nursery:
            started = await nursery.start(serve_listeners, make_app(), [listener])
            assert started == [listener]
            client = await listener.client()
            assert (await client.request()).body == b"hello"
            nursery.cancel_scope.cancel()
        assert listener.closed


async def test_pipelined_requests_in_one_write(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(5):
        async with connected(make_app()) as (_, client):
            data = client.request_bytes("GET", "/")
            # h11 will not let a client send a second request before the
            # first response; the bytes are the same, so prepare them apart.
            other = Client(trio.testing.memory_stream_pair()[0])
            data += other.request_bytes("POST", "/echo", body=b"ping")
            data += Client(trio.testing.memory_stream_pair()[0]).request_bytes("GET", "/items/z")
            await client.send_raw(data)
            assert (await client.reply()).body == b"hello"
            # The client-side h11 is one request behind; keep it in step.
            client.conn.send(h11.Request(method="POST", target="/echo", headers=[("host", "t")]))
            client.conn.send(h11.EndOfMessage())
            assert (await client.reply()).body == b"ping"
            client.conn.send(h11.Request(method="GET", target="/items/z", headers=[("host", "t")]))
            client.conn.send(h11.EndOfMessage())
            assert (await client.reply()).body == b'{"item":"z","q":""}'
            # Still open for more.
            assert (await client.request()).status == 200


async def test_request_bodies_content_length_and_chunked(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(5):
        async with connected(make_app()) as (_, client):
            assert (await client.request("POST", "/echo", body=b"x" * 1000)).body == b"x" * 1000
            await client.send(
                h11.Request(
                    method="PUT",
                    target="/echo",
                    headers=[("host", "t"), ("transfer-encoding", "chunked")],
                ),
                h11.Data(data=b"abc"),
                h11.Data(data=b"def"),
                h11.EndOfMessage(),
            )
            reply = await client.reply()
            assert reply.body == b"abcdef"
            assert reply.header("connection") is None
            assert (await client.request()).body == b"hello"


async def test_unread_request_body_does_not_desync_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The handler ignores the body: the server must not read it as a request.
    app = make_app()

    @app.post("/ignore")
    async def ignore(request: Request) -> str:
        return "ignored"

    with trio.fail_after(5):
        async with connected(app) as (_, client):
            smuggled = b"GET /items/smuggled HTTP/1.1\r\nhost: t\r\n\r\n"
            reply = await client.request("POST", "/ignore", body=smuggled)
            assert reply.body == b"ignored"
            # The body was taken whole: the connection serves the next request.
            assert (await client.request()).body == b"hello"
            assert b"smuggled" not in client.raw


async def test_unfinished_unread_request_body_closes_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = make_app()

    @app.post("/ignore")
    async def ignore(request: Request) -> str:
        return "ignored"

    with trio.fail_after(5):
        async with connected(app) as (server, client):
            await client.send(
                h11.Request(
                    method="POST",
                    target="/ignore",
                    headers=[("host", "t"), ("content-length", "100")],
                ),
                h11.Data(data=b"x" * 10),
            )
            assert (await client.reply()).body == b"ignored"
            # 90 bytes never sent: the connection cannot be reused.
            assert await client.wait_closed() == b""
            await trio.testing.wait_all_tasks_blocked()
            assert server.connections == set()


# -- status codes ---------------------------------------------------------------


async def test_404_and_405_with_allow_keep_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(5):
        async with connected(make_app()) as (_, client):
            reply = await client.request("GET", "/nope")
            assert reply.status == 404
            reply = await client.request("DELETE", "/echo")
            assert reply.status == 405
            assert reply.header("allow") == "POST, PUT"
            reply = await client.request("POST", "/")
            assert reply.status == 405
            assert reply.header("allow") == "GET, HEAD"
            reply = await client.request("POST", "/events")
            assert reply.status == 405
            assert reply.header("allow") == "GET, HEAD"
            reply = await client.request("HEAD", "/nope")
            assert reply.status == 404
            assert reply.body == b""
            assert (await client.request()).body == b"hello"


async def test_head_on_a_plain_route(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(5):
        async with connected(make_app()) as (_, client):
            reply = await client.request("HEAD", "/")
            assert reply.status == 200
            assert reply.header("content-length") == "5"
            assert reply.body == b""
            # No body bytes on the wire: the next response starts right away.
            start = len(client.raw)
            assert (await client.request()).body == b"hello"
            assert bytes(client.raw[start:]).startswith(b"HTTP/1.1 200 OK\r\n")


async def test_head_on_a_stream_route_runs_no_handler(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = App()
    ran = False

    @app.stream("/s")
    async def s(request: Request, stream: EventStream) -> None:
        nonlocal ran
        ran = True

    with trio.fail_after(5):
        async with connected(app) as (_, client):
            start = len(client.raw)
            reply = await client.request("HEAD", "/s")
            assert reply.status == 200
            for item in STREAM_HEADERS:
                assert item in reply.headers
            assert reply.body == b""
            assert bytes(client.raw[start:]).endswith(b"\r\n\r\n")
            assert reply.header("connection") is None
            # Kept alive.
            assert (await client.request("HEAD", "/s")).status == 200
    assert not ran


async def test_http_exception_and_return_values(autojump_clock: trio.testing.MockClock) -> None:
    app = App()

    @app.get("/teapot")
    async def teapot(request: Request) -> None:
        raise HTTPException(418, "short and stout", {"x-pot": "1"})

    @app.get("/none")
    async def none(request: Request) -> None:
        return None

    @app.get("/bytes")
    async def raw(request: Request) -> bytes:
        return b"\x00\x01"

    with trio.fail_after(5):
        async with connected(app) as (_, client):
            reply = await client.request("GET", "/teapot")
            assert (reply.status, reply.body) == (418, b"short and stout\n")
            assert reply.header("x-pot") == "1"
            reply = await client.request("GET", "/none")
            assert (reply.status, reply.body) == (204, b"")
            reply = await client.request("GET", "/bytes")
            assert reply.header("content-type") == "application/octet-stream"
            assert reply.body == b"\x00\x01"


async def test_no_content_length_on_204(autojump_clock: trio.testing.MockClock) -> None:
    # RFC 9110 8.6: a server MUST NOT send Content-Length in a 204 response.
    app = App()

    @app.get("/none")
    async def none(request: Request) -> None:
        return None

    with trio.fail_after(5):
        async with connected(app) as (_, client):
            reply = await client.request("GET", "/none")
            assert reply.status == 204
            assert reply.header("content-length") is None


# -- streams: headers and framing --------------------------------------------------


async def test_stream_headers_exactly(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(5):
        async with connected(make_app()) as (_, client):
            await client.send_request("GET", "/events", [("accept-encoding", "gzip, br")])
            head = await client.head()
            assert head.status_code == 200
            headers = [(k.decode(), v.decode()) for k, v in head.headers]
            names = [k for k, _ in headers]
            for item in STREAM_HEADERS:
                assert item in headers
            assert names.count("content-type") == 1
            assert ("transfer-encoding", "chunked") in headers
            assert "content-encoding" not in names
            assert "content-length" not in names
            assert ("connection", "close") in headers


async def test_stream_body_is_chunked_and_ends_with_the_last_chunk(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(5):
        async with connected(make_app()) as (server, client):
            await client.send_request("GET", "/events")
            await client.head()
            head_end = len(client.raw)
            body = await client.rest()
            assert [(e.type, e.data, e.last_event_id) for e in body.events] == [
                ("message", "one", "1"),
                ("x", "two\nlines", "1"),
            ]
            assert body.ended == "EndOfMessage"
            one = Event("one", id="1").encode()
            two = Event("two\nlines", event="x").encode()
            assert bytes(client.raw[head_end:]) == chunk(one) + chunk(two) + b"0\r\n\r\n"
            # The handler returned: no retry hint. The server closes.
            assert body.retry is None
            assert await client.wait_closed() == b""
            assert server.connections == set()


async def test_last_event_id_reaches_the_handler(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(5):
        async with running(make_app()) as (_, listener):
            client = await listener.client()
            await client.send_request("GET", "/resume", [("last-event-id", "41")])
            assert (await client.head()).status_code == 200
            assert [e.data for e in (await client.rest()).events] == ["from 41"]
            client = await listener.client()
            await client.send_request("GET", "/resume?lastEventId=7")
            await client.head()
            assert [e.data for e in (await client.rest()).events] == ["from 7"]


async def test_stream_response_with_status_and_headers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = App()

    @app.get("/guarded")
    async def guarded(request: Request) -> StreamResponse:
        if request.headers.get("authorization") != "yes":
            raise HTTPException(401)

        async def run(stream: EventStream) -> None:
            await stream.send("ok")

        return StreamResponse(run, status=201, headers={"x-extra": "1"})

    with trio.fail_after(5):
        async with connected(app) as (_, client):
            reply = await client.request("GET", "/guarded")
            assert reply.status == 401
            await client.send_request("GET", "/guarded", [("authorization", "yes")])
            head = await client.head()
            assert head.status_code == 201
            assert (b"x-extra", b"1") in head.headers
            assert (b"content-type", b"text/event-stream; charset=utf-8") in head.headers
            assert [e.data for e in (await client.rest()).events] == ["ok"]


async def test_send_many_is_one_write(autojump_clock: trio.testing.MockClock) -> None:
    # Over a lockstep stream each send_all is delivered by itself: one
    # receive_some that returns both events proves they went in one write.
    app = App()
    sent = trio.Event()

    @app.stream("/many")
    async def many(request: Request, stream: EventStream) -> None:
        await stream.send_many([Event("a"), Event("b", id="2")])
        sent.set()
        await trio.sleep_forever()

    with trio.fail_after(5):
        listener = MemoryListener(lockstep=True)
        server = Server(app, Config(heartbeat_interval=None))
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run, [listener])
            client = await listener.client()
            await client.send_request("GET", "/many")
            await client.head()
            data = await client.stream.receive_some(65536)
            assert data == chunk(Event("a").encode()) + chunk(Event("b", id="2").encode())
            await sent.wait()
            await client.aclose()
            nursery.cancel_scope.cancel()


async def test_http10_stream_is_close_delimited(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(5):
        async with connected(make_app()) as (_, client):
            await client.send_raw(b"GET /events HTTP/1.0\r\n\r\n")
            raw = await client.wait_closed()
            head, _, body = raw.partition(b"\r\n\r\n")
            lines = head.lower().split(b"\r\n")
            assert lines[0] == b"http/1.1 200 ok"
            assert b"connection: close" in lines
            assert b"content-type: text/event-stream; charset=utf-8" in lines
            assert not any(line.startswith(b"transfer-encoding") for line in lines)
            assert not any(line.startswith(b"content-length") for line in lines)
            # No chunk framing: the event bytes themselves, then EOF.
            assert body == Event("one", id="1").encode() + Event("two\nlines", event="x").encode()


async def test_http10_plain_request_closes_after_the_response(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(5):
        async with connected(make_app()) as (server, client):
            await client.send_raw(b"GET / HTTP/1.0\r\n\r\n")
            raw = await client.wait_closed()
            assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
            assert raw.lower().count(b"connection: close\r\n") == 1
            assert raw.endswith(b"\r\n\r\nhello")
            await trio.testing.wait_all_tasks_blocked()
            assert server.connections == set()


async def test_http10_head_on_a_stream_route(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(5):
        async with connected(make_app()) as (_, client):
            await client.send_raw(b"HEAD /events HTTP/1.0\r\n\r\n")
            raw = await client.wait_closed()
            assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
            assert raw.endswith(b"\r\n\r\n")
            assert raw.lower().count(b"connection: close\r\n") == 1


# -- malformed requests --------------------------------------------------------------


MALFORMED = {
    "bad request line": b"GARBAGE\r\n\r\n",
    "bad header": b"GET / HTTP/1.1\r\nhost: t\r\nbad header\r\n\r\n",
    "NUL in header": b"GET / HTTP/1.1\r\nhost: t\r\nx-a: b\x00c\r\n\r\n",
    "NUL in target": b"GET /\x00 HTTP/1.1\r\nhost: t\r\n\r\n",
    "no host": b"GET / HTTP/1.1\r\n\r\n",
    "bad content-length": b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: x\r\n\r\n",
    "bad chunk": b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_request_is_400_then_close(
    autojump_clock: trio.testing.MockClock, data: bytes
) -> None:
    with trio.fail_after(5):
        async with running(make_app()) as (server, listener):
            # Another client, mid-conversation, is unaffected.
            other = await listener.client()
            assert (await other.request()).status == 200
            client = await listener.client()
            await client.send_raw(data)
            raw = await client.wait_closed()
            assert raw.startswith(b"HTTP/1.1 400 Bad Request\r\n"), raw
            assert b"connection: close\r\n" in raw
            assert (await other.request()).status == 200
            fresh = await listener.client()
            assert (await fresh.request()).status == 200
            await trio.testing.wait_all_tasks_blocked()
            assert len(server.connections) == 2


async def test_other_http_versions_get_505(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(5):
        async with connected(make_app()) as (_, client):
            await client.send_raw(b"GET / HTTP/2.0\r\nhost: x\r\n\r\n")
            raw = await client.wait_closed()
            assert raw.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n"), raw
            assert b"connection: close\r\n" in raw


async def test_huge_header_in_one_write_is_431(autojump_clock: trio.testing.MockClock) -> None:
    cfg = Config(max_header_size=1024)
    with trio.fail_after(5):
        async with running(make_app(), cfg) as (_, listener):
            other = await listener.client()
            client = await listener.client()
            await client.send_raw(
                b"GET / HTTP/1.1\r\nhost: t\r\nx-big: " + b"a" * 2000 + b"\r\n\r\n"
            )
            raw = await client.wait_closed()
            assert raw.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), raw
            assert (await other.request()).status == 200


async def test_huge_header_that_never_ends_is_431(autojump_clock: trio.testing.MockClock) -> None:
    # h11's buffer bound: the head is refused before it is complete.
    cfg = Config(max_header_size=1024)
    with trio.fail_after(5):
        async with connected(make_app(), cfg) as (_, client):
            await client.send_raw(b"GET / HTTP/1.1\r\nhost: t\r\nx-big: ")
            for _ in range(10):
                await client.send_raw(b"a" * 200)
            raw = await client.wait_closed()
            assert raw.startswith(b"HTTP/1.1 431 "), raw


async def test_just_under_the_header_size_limit_is_served(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cfg = Config(max_header_size=1024)
    with trio.fail_after(5):
        async with connected(make_app(), cfg) as (_, client):
            reply = await client.request("GET", "/", [("x-big", "a" * 900)])
            assert reply.status == 200


async def test_too_many_headers_is_431(autojump_clock: trio.testing.MockClock) -> None:
    cfg = Config(max_header_count=10)
    with trio.fail_after(5):
        async with connected(make_app(), cfg) as (_, client):
            ok = [(f"x-{n}", "v") for n in range(9)]  # + host = 10
            assert (await client.request("GET", "/", ok)).status == 200
            too_many = [(f"x-{n}", "v") for n in range(10)]  # + host = 11
            await client.send_request("GET", "/", too_many)
            raw = await client.wait_closed()
            assert b"HTTP/1.1 431 " in raw
            assert b"more than 10 request headers" in raw


# -- limits: connections, bodies ----------------------------------------------------


async def test_max_connections_refuses_with_503_immediately(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cfg = Config(max_connections=2, retry_after=7)
    with trio.fail_after(60):
        async with running(make_app(), cfg) as (server, listener):
            a = await listener.client()
            b = await listener.client()
            assert (await a.request()).status == 200
            assert (await b.request()).status == 200
            start = trio.current_time()
            c = await listener.client()
            # The 503 comes without the client sending anything.
            reply = await c.reply()
            assert trio.current_time() == start
            assert reply.status == 503
            assert reply.header("retry-after") == "7"
            assert reply.header("connection") == "close"
            assert await c.wait_closed() == b""
            assert len(server.connections) == 2
            # Once a connection is gone, a new one is served again.
            await a.aclose()
            await trio.testing.wait_all_tasks_blocked()
            d = await listener.client()
            assert (await d.request()).status == 200


async def test_body_over_the_limit_with_content_length_is_413_unread(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cfg = Config(max_body_size=100)
    with trio.fail_after(5):
        async with connected(make_app(), cfg) as (_, client):
            assert (await client.request("POST", "/echo", body=b"x" * 100)).status == 200
            # Only the head: the server answers from Content-Length alone.
            await client.send(
                h11.Request(
                    method="POST",
                    target="/echo",
                    headers=[("host", "t"), ("content-length", "101")],
                )
            )
            reply = await client.reply()
            assert reply.status == 413
            assert reply.header("connection") == "close"


async def test_chunked_body_over_the_limit_is_413(autojump_clock: trio.testing.MockClock) -> None:
    cfg = Config(max_body_size=100)
    with trio.fail_after(5):
        async with connected(make_app(), cfg) as (_, client):
            await client.send(
                h11.Request(
                    method="POST",
                    target="/echo",
                    headers=[("host", "t"), ("transfer-encoding", "chunked")],
                ),
                h11.Data(data=b"x" * 60),
                h11.Data(data=b"x" * 41),
            )
            reply = await client.reply()
            assert reply.status == 413
            assert reply.header("connection") == "close"


async def test_expect_100_continue(autojump_clock: trio.testing.MockClock) -> None:
    cfg = Config(max_body_size=100)
    with trio.fail_after(5):
        async with connected(make_app(), cfg) as (_, client):
            await client.send(
                h11.Request(
                    method="POST",
                    target="/echo",
                    headers=[("host", "t"), ("content-length", "4"), ("expect", "100-continue")],
                )
            )
            # The body is only sent after the 100.
            event = await client.next_event()
            assert isinstance(event, h11.InformationalResponse)
            assert event.status_code == 100
            await client.send(h11.Data(data=b"body"), h11.EndOfMessage())
            reply = await client.reply()
            assert (reply.status, reply.body) == (200, b"body")

            # Declared too large: 413 at once, no 100.
            await client.send(
                h11.Request(
                    method="POST",
                    target="/echo",
                    headers=[("host", "t"), ("content-length", "101"), ("expect", "100-continue")],
                )
            )
            reply = await client.reply()
            assert reply.status == 413
            assert reply.informational == []


async def test_expect_100_continue_not_sent_when_body_is_not_read(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = App()

    @app.post("/ignore")
    async def ignore(request: Request) -> str:
        return "no thanks"

    with trio.fail_after(5):
        async with connected(app) as (_, client):
            await client.send(
                h11.Request(
                    method="POST",
                    target="/ignore",
                    headers=[("host", "t"), ("content-length", "4"), ("expect", "100-continue")],
                )
            )
            reply = await client.reply()
            assert reply.informational == []
            assert (reply.status, reply.body) == (200, b"no thanks")


# -- handler errors -----------------------------------------------------------------


async def test_handler_exception_is_logged_500_and_others_go_on(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app()

    @app.get("/boom")
    async def boom(request: Request) -> str:
        raise RuntimeError("kaboom")

    @app.get("/bad-return")
    async def bad_return(request: Request) -> object:
        return 42

    with trio.fail_after(5):
        async with running(app) as (server, listener):
            other = await listener.client()
            await other.send_request("GET", "/events")
            await other.head()
            for target in ("/boom", "/bad-return"):
                client = await listener.client()
                reply = await client.request("GET", target)
                assert (reply.status, reply.body) == (500, b"internal server error\n")
                # The response is complete: the connection stays usable (as under ASGI).
                assert reply.header("connection") is None
                assert (await client.request("GET", "/")).status == 200
                await client.aclose()
            assert [e.data for e in (await other.rest()).events] == ["one", "two\nlines"]
            assert (await (await listener.client()).request()).status == 200
            await trio.testing.wait_all_tasks_blocked()
            assert len(server.connections) == 1
    records = [r for r in caplog.records if r.name == "trio_sse.exchange"]
    assert len(records) == 2
    boom_record, bad_record = records
    assert boom_record.levelno == logging.ERROR
    assert "GET /boom" in boom_record.getMessage()
    assert boom_record.exc_info is not None
    assert isinstance(boom_record.exc_info[1], RuntimeError)
    assert "kaboom" in caplog.text
    assert "Traceback" in caplog.text
    assert bad_record.exc_info is not None
    assert isinstance(bad_record.exc_info[1], TypeError)


async def test_stream_handler_exception_ends_the_stream_cleanly(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App()

    @app.stream("/fails")
    async def fails(request: Request, stream: EventStream) -> None:
        await stream.send(Event("before", id="1"))
        raise ValueError("stream broke")

    go = trio.Event()

    @app.stream("/other")
    async def other_stream(request: Request, stream: EventStream) -> None:
        await stream.send("first")
        await go.wait()
        await stream.send("after the failure")

    @app.get("/")
    async def index(request: Request) -> str:
        return "still here"

    with trio.fail_after(5):
        async with running(app) as (server, listener):
            other = await listener.client()
            await other.send_request("GET", "/other")
            await other.head()
            assert [e.data for e in await other.events(1)] == ["first"]
            client = await listener.client()
            await client.send_request("GET", "/fails")
            assert (await client.head()).status_code == 200
            body = await client.rest()
            assert [e.data for e in body.events] == ["before"]
            assert body.ended == "EndOfMessage"
            assert client.raw.endswith(chunk(Event("before", id="1").encode()) + b"0\r\n\r\n")
            assert body.retry is None
            assert await client.wait_closed() == b""
            # The other stream and the server go on.
            go.set()
            assert [e.data for e in (await other.rest()).events] == ["after the failure"]
            assert (await (await listener.client()).request()).body == b"still here"
            await other.aclose()
            await trio.testing.wait_all_tasks_blocked()
            assert len(server.connections) == 1
    [record] = [r for r in caplog.records if r.name == "trio_sse.exchange"]
    assert "/fails" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ValueError)


async def test_invalid_response_from_a_handler_is_500(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App()

    @app.get("/bad-header")
    async def bad_header(request: Request) -> Response:
        return Response("x", headers={"x-bad": "a\r\nb"})

    with trio.fail_after(5):
        async with connected(app) as (_, client):
            reply = await client.request("GET", "/bad-header")
            assert (reply.status, reply.body) == (500, b"internal server error\n")
            # Checked before framing: the connection stays usable (as under ASGI).
            assert (await client.request("GET", "/bad-header")).status == 500
            await client.aclose()
    assert "returned an invalid response" in caplog.text


async def test_unknown_status_code_has_an_empty_reason(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = App()

    @app.get("/odd")
    async def odd(request: Request) -> None:
        raise HTTPException(599, "odd")

    with trio.fail_after(5):
        async with connected(app) as (_, client):
            await client.send_request("GET", "/odd")
            reply = await client.reply()
            assert (reply.status, reply.body) == (599, b"odd\n")
            assert client.raw.startswith(b"HTTP/1.1 599 \r\n")


async def test_send_many_with_zero_and_one_event(autojump_clock: trio.testing.MockClock) -> None:
    app = App()

    @app.stream("/few")
    async def few(request: Request, stream: EventStream) -> None:
        await stream.send_many([])
        await stream.send_many([Event("only")])
        await stream.send_many([Event("a"), Event("b")])

    with trio.fail_after(5):
        async with running(app) as (_, listener):
            client = await listener.client()
            await client.send_request("GET", "/few")
            await client.head()
            start = len(client.raw)
            body = await client.rest()
            assert [e.data for e in body.events] == ["only", "a", "b"]
            assert bytes(client.raw[start:]) == (
                chunk(Event("only").encode())
                + chunk(Event("a").encode())
                + chunk(Event("b").encode())
                + b"0\r\n\r\n"
            )
            # HTTP/1.0: the same events unframed.
            client = await listener.client()
            await client.send_raw(b"GET /few HTTP/1.0\r\n\r\n")
            raw = await client.wait_closed()
            assert raw.endswith(b"\r\n\r\ndata: only\n\ndata: a\n\ndata: b\n\n")


async def test_client_closing_mid_body_frees_the_connection(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app()
    with trio.fail_after(5):
        async with running(app) as (server, listener):
            client = await listener.client()
            await client.send(
                h11.Request(
                    method="POST",
                    target="/echo",
                    headers=[("host", "t"), ("content-length", "100")],
                ),
                h11.Data(data=b"x" * 10),
            )
            await trio.testing.wait_all_tasks_blocked()
            await client.aclose()
            await trio.testing.wait_all_tasks_blocked()
            assert server.connections == set()
            assert (await (await listener.client()).request()).status == 200
    assert "Traceback" not in caplog.text


class FlakyListener(MemoryListener):
    """Fails its first accept() calls with the given errors."""

    def __init__(self, *errors: OSError) -> None:
        super().__init__()
        self.errors = list(errors)

    async def accept(self) -> trio.abc.Stream:
        if self.errors:
            await trio.lowlevel.checkpoint()
            raise self.errors.pop(0)
        return await super().accept()


async def test_accept_out_of_descriptors_is_retried(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    listener = FlakyListener(OSError(errno.EMFILE, "Too many open files"))
    server = Server(make_app(), Config())
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run, [listener])
            start = trio.current_time()
            client = await listener.client()
            assert trio.current_time() == start + 0.1
            assert (await client.request()).status == 200
            nursery.cancel_scope.cancel()
    assert "accept() failed" in caplog.text


async def test_other_accept_errors_stop_the_server(
    autojump_clock: trio.testing.MockClock,
) -> None:
    listener = FlakyListener(OSError(errno.EBADF, "Bad file descriptor"))
    server = Server(make_app(), Config())
    with (
        trio.fail_after(5),
        pytest.RaisesGroup(pytest.RaisesExc(OSError, match="Bad file"), flatten_subgroups=True),
    ):
        await server.run([listener])
    assert listener.closed


async def test_refusals_beyond_their_bound_are_just_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # At most 256 refused connections wait for their 503 to be read; beyond
    # that a new one is closed at once, with no response.
    cfg = Config(max_connections=1, close_linger=10)
    with trio.fail_after(60):
        async with running(make_app(), cfg) as (_, listener):
            kept = await listener.client()
            assert (await kept.request()).status == 200
            refused = [await listener.client() for _ in range(256)]
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            extra = await listener.client()
            assert await extra.wait_closed() == b""
            assert trio.current_time() == start
            assert (await refused[0].reply()).status == 503
            # Once the refusals are read and closed, 503s are sent again.
            for client in refused:
                await client.aclose()
            await trio.testing.wait_all_tasks_blocked()
            late = await listener.client()
            assert (await late.reply()).status == 503
