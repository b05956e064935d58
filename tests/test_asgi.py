"""The ASGI adapter: what only exists under ASGI, and its edge cases.

Behaviour shared with the raw server is tested on both servers in
``test_app_both_servers.py``. Here: HTTP/2 under hypercorn, mounting inside a
Starlette app, the lifespan protocol's failure reports, write stalls, and the
refusal to run outside trio, partly against real hypercorn and partly by
calling the app directly with a fake ASGI server (``FakeServer``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import hypercorn.trio
import pytest
import trio
import trio.testing
from servers import hypercorn_config, start_hypercorn
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import PlainTextResponse as StarlettePlainText
from starlette.routing import Mount, Route

from trio_sse import (
    App,
    Config,
    Decoder,
    Event,
    EventStream,
    HTTPException,
    Request,
    Response,
    WebSocket,
    WebSocketClosed,
)
from trio_sse._asgi import Message

GUARD = 5


class FakeServer:
    """Drives an ASGI app by hand: scripted receive, recorded (and blockable) send."""

    def __init__(self, incoming: list[Message] | None = None) -> None:
        self.incoming = list(incoming or [])
        self.sent: list[Message] = []
        self.block_after: int | None = None  # send() blocks forever from this message on
        self.disconnect = trio.Event()

    async def receive(self) -> Message:
        if self.incoming:
            await trio.lowlevel.checkpoint()
            return self.incoming.pop(0)
        await self.disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.block_after is not None and len(self.sent) >= self.block_after:
            await trio.sleep_forever()
        await trio.lowlevel.checkpoint()
        self.sent.append(message)

    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


def http_scope(path: str = "/", method: str = "GET", **extra: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }
    scope.update(extra)
    return scope


# -- HTTP/2 ---------------------------------------------------------------------


async def test_http2_many_streams_on_one_connection(nursery: trio.Nursery) -> None:
    n_streams = 20
    app = App(config=Config(heartbeat_interval=None))
    seen: list[tuple[tuple[str, int] | None, str]] = []
    all_open = trio.Event()

    @app.stream("/s/{n}")
    async def numbered(request: Request, stream: EventStream) -> None:
        seen.append((request.client, request.http_version))
        if len(seen) == n_streams:
            all_open.set()
        n = request.path_params["n"]
        await stream.send(Event("open", id=f"{n}-0"))
        # Every stream is open at once, or this waits forever.
        await all_open.wait()
        await stream.send_many([Event(f"{n}:{i}", id=f"{n}-{i}") for i in range(1, 4)])

    @app.get("/warm")
    async def warm(request: Request) -> str:
        return request.http_version

    server = await start_hypercorn(nursery, app)
    bodies: dict[int, bytes] = {}
    with trio.fail_after(GUARD):
        async with server.client(http2=True, http1=False) as client:
            r = await client.get("/warm")
            assert (r.http_version, r.text) == ("HTTP/2", "2")

            async def fetch(i: int) -> None:
                r = await client.get(f"/s/{i}")
                assert r.http_version == "HTTP/2"
                assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
                bodies[i] = r.content

            async with trio.open_nursery() as fetching:
                for i in range(n_streams):
                    fetching.start_soon(fetch, i)

    assert len(seen) == n_streams
    # One connection: every request came from the same client port, over HTTP/2.
    assert len(set(seen)) == 1
    assert seen[0][1] == "2"
    for i, body in bodies.items():
        events = Decoder().feed(body)
        assert [e.data for e in events] == ["open", f"{i}:1", f"{i}:2", f"{i}:3"]
        assert events[-1].last_event_id == f"{i}-3"


# -- mounting -------------------------------------------------------------------


async def test_mounted_in_starlette(nursery: trio.Nursery) -> None:
    sse_app = App(config=Config(heartbeat_interval=None))
    sse_app.state.ticks = 0

    @sse_app.background
    async def ticker() -> None:
        while True:
            sse_app.state.ticks += 1
            await trio.sleep(0.01)

    @sse_app.get("/where/{name}")
    async def where(request: Request) -> dict[str, object]:
        return {
            "path": request.path,
            "root_path": request.root_path,
            "raw_path": request.raw_path.decode(),
            "name": request.path_params["name"],
        }

    @sse_app.stream("/ticks")
    async def ticks(request: Request, stream: EventStream) -> None:
        await stream.send(Event(str(sse_app.state.ticks), event="tick", id="1"))

    async def home(request: StarletteRequest) -> StarlettePlainText:
        return StarlettePlainText("starlette home")

    # Starlette does not pass the lifespan to mounted apps: enter ours in its.
    outer = Starlette(
        routes=[Route("/", home), Mount("/sse", app=sse_app)],
        lifespan=lambda _: sse_app.run_lifespan(),
    )
    server = await start_hypercorn(nursery, outer)
    with trio.fail_after(GUARD):
        async with server.client() as client:
            assert (await client.get("/")).text == "starlette home"
            r = await client.get("/sse/where/x%20y")
            assert r.json() == {
                "path": "/where/x y",
                "root_path": "/sse",
                "raw_path": "/sse/where/x%20y",
                "name": "x y",
            }
            r = await client.get("/sse/nowhere")
            assert (r.status_code, r.text) == (404, "not found\n")
            r = await client.post("/sse/ticks")
            assert (r.status_code, r.headers["allow"]) == (405, "GET, HEAD")
            r = await client.get("/sse/ticks")
            assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
            (event,) = Decoder().feed(r.content)
            assert event.type == "tick"
            assert int(event.data) > 0  # the background task ran


async def test_root_path_outside_the_path_is_ignored() -> None:
    app = App()

    @app.get("/p")
    async def p(request: Request) -> str:
        return f"{request.path} {request.root_path}"

    for scope in (
        # A proxy stripped the prefix already: path does not start with root_path.
        http_scope("/p", root_path="/prefix"),
        # root_path is a prefix of the path, but not at a segment boundary.
        http_scope("/p", root_path="/"),
    ):
        server = FakeServer([{"type": "http.request", "body": b""}])
        await app(scope, server.receive, server.send)
        assert server.body().startswith(b"/p ")
    server = FakeServer([{"type": "http.request", "body": b""}])
    await app(http_scope("/pre/fix", root_path="/pre/fix"), server.receive, server.send)
    assert server.sent[0]["status"] == 404


async def test_missing_raw_path_falls_back_to_path() -> None:
    app = App()

    @app.get("/a b")
    async def ab(request: Request) -> str:
        return request.raw_path.decode()

    server = FakeServer([{"type": "http.request", "body": b""}])
    await app(http_scope("/a b", raw_path=None), server.receive, server.send)
    assert server.body() == b"/a%20b"


# -- write stalls, disconnects, invalid responses (fake server) -------------------


async def test_write_stall_cancels_the_stream(autojump_clock: trio.testing.MockClock) -> None:
    app = App(config=Config(write_timeout=5, heartbeat_interval=None))
    sent = 0
    cancelled_at: list[float] = []

    @app.stream("/s")
    async def s(request: Request, stream: EventStream) -> None:
        nonlocal sent
        try:
            while True:
                await stream.send(Event("x"))
                sent += 1
        finally:
            cancelled_at.append(trio.current_time())

    server = FakeServer([{"type": "http.request", "body": b""}])
    server.block_after = 4  # start, the empty flush, two events
    start = trio.current_time()
    await app(http_scope("/s"), server.receive, server.send)
    assert sent == 2
    assert cancelled_at == [start + 5]
    # The body was not ended: the server closes the connection (or resets the stream).
    assert server.sent[-1]["more_body"] is True


async def test_heartbeat_under_autojump(autojump_clock: trio.testing.MockClock) -> None:
    app = App(
        config=Config(heartbeat_interval=15, max_stream_lifetime=40, stream_end_retry_jitter=0)
    )

    @app.stream("/s")
    async def s(request: Request, stream: EventStream) -> None:
        await trio.sleep(20)
        await stream.send("late")
        await trio.sleep_forever()

    server = FakeServer([{"type": "http.request", "body": b""}])
    await app(http_scope("/s"), server.receive, server.send)
    # 15 s: heartbeat; 20 s: event; 35 s: heartbeat; 40 s: end with retry hint.
    assert server.body() == b":\n\ndata: late\n\n:\n\nretry: 1000\n\n"
    assert server.sent[-1]["more_body"] is False


async def test_disconnect_before_the_handler_answers() -> None:
    app = App()
    cancelled = trio.Event()

    @app.get("/slow")
    async def slow(request: Request) -> str:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()
        return "never"  # pragma: no cover

    server = FakeServer([{"type": "http.request", "body": b""}])
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(app, http_scope("/slow"), server.receive, server.send)
            await trio.testing.wait_all_tasks_blocked()
            server.disconnect.set()
        assert cancelled.is_set()
        assert server.sent == []


async def test_body_timeout_is_408(autojump_clock: trio.testing.MockClock) -> None:
    app = App(config=Config(body_timeout=3))

    @app.post("/b")
    async def b(request: Request) -> str:
        return str(len(await request.body()))

    server = FakeServer([{"type": "http.request", "body": b"ab", "more_body": True}])
    task = app(http_scope("/b", method="POST"), server.receive, server.send)
    with trio.move_on_after(10):
        await task
    assert server.sent[0]["status"] == 408


async def test_invalid_response_is_500(caplog: pytest.LogCaptureFixture) -> None:
    app = App()

    @app.get("/bad-status")
    async def bad_status(request: Request) -> Response:
        return Response("x", status=42)

    @app.get("/bad-header")
    async def bad_header(request: Request) -> Response:
        return Response("x", headers={"x-snow": "☃"})

    for path in ("/bad-status", "/bad-header"):
        server = FakeServer([{"type": "http.request", "body": b""}])
        with caplog.at_level(logging.ERROR, logger="trio_sse"):
            await app(http_scope(path), server.receive, server.send)
        assert server.sent[0]["status"] == 500
        assert server.body() == b"internal server error\n"
    assert sum("invalid response" in r.getMessage() for r in caplog.records) == 2


# -- lifespan -------------------------------------------------------------------


async def run_lifespan_protocol(app: App, *, shutdown: bool = True) -> list[Message]:
    incoming: list[Message] = [{"type": "lifespan.startup"}]
    if shutdown:
        incoming.append({"type": "lifespan.shutdown"})
    server = FakeServer(incoming)
    with trio.fail_after(GUARD):
        await app({"type": "lifespan", "asgi": {"version": "3.0"}}, server.receive, server.send)
    return server.sent


async def test_lifespan_startup_and_shutdown() -> None:
    log: list[str] = []

    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[None]:
        log.append("enter")
        yield
        await trio.sleep(0.01)  # async teardown works: the lifespan is left normally
        log.append("exit")

    app = App(lifespan=lifespan)
    sent = await run_lifespan_protocol(app)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert log == ["enter", "exit"]


async def test_lifespan_startup_failure_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[None]:
        raise ValueError("no database")
        yield  # pragma: no cover

    with caplog.at_level(logging.ERROR, logger="trio_sse"):
        sent = await run_lifespan_protocol(App(lifespan=lifespan), shutdown=False)
    assert sent == [{"type": "lifespan.startup.failed", "message": "ValueError: no database"}]
    assert any(r.exc_info for r in caplog.records)


async def test_lifespan_shutdown_failure_is_reported() -> None:
    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[None]:
        yield
        raise OSError("flush failed")

    sent = await run_lifespan_protocol(App(lifespan=lifespan))
    assert sent == [
        {"type": "lifespan.startup.complete"},
        {"type": "lifespan.shutdown.failed", "message": "OSError: flush failed"},
    ]


async def test_background_task_failure_after_startup_raises() -> None:
    app = App()

    @app.background
    async def crash() -> None:
        await trio.sleep(0.01)
        raise KeyError("ticker")

    server = FakeServer([{"type": "lifespan.startup"}])  # then receive() waits
    with trio.fail_after(GUARD), pytest.RaisesGroup(KeyError, flatten_subgroups=True):
        await app({"type": "lifespan"}, server.receive, server.send)
    assert server.sent == [{"type": "lifespan.startup.complete"}]


async def test_hypercorn_exits_when_startup_fails(nursery: trio.Nursery) -> None:
    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[None]:
        raise RuntimeError("cannot start")
        yield  # pragma: no cover

    with (
        trio.fail_after(GUARD),
        pytest.RaisesGroup(pytest.RaisesExc(match="cannot start"), flatten_subgroups=True),
    ):
        await hypercorn.trio.serve(App(lifespan=lifespan), hypercorn_config())


# -- other scopes and event loops ------------------------------------------------


async def test_unknown_scope_type() -> None:
    server = FakeServer()
    with pytest.raises(RuntimeError, match="scope type 'mqtt'"):
        await App()({"type": "mqtt"}, server.receive, server.send)


def test_refuses_to_run_under_asyncio() -> None:
    app = App()

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        pass

    with pytest.raises(RuntimeError, match="hypercorn --worker-class trio"):
        asyncio.run(app(http_scope(), receive, send))


def test_lifespan_under_asyncio_fails_startup() -> None:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(App()({"type": "lifespan"}, receive, send))
    assert sent[0]["type"] == "lifespan.startup.failed"
    assert "hypercorn --worker-class trio" in sent[0]["message"]


async def test_http10_stream_under_hypercorn(nursery: trio.Nursery) -> None:
    app = App(config=Config(heartbeat_interval=None))

    @app.stream("/s")
    async def s(request: Request, stream: EventStream) -> None:
        await stream.send(Event(request.http_version))

    server = await start_hypercorn(nursery, app)
    with trio.fail_after(GUARD):
        stream = await server.connect()
        await stream.send_raw(b"GET /s HTTP/1.0\r\n\r\n")
        data = await stream.wait_closed()
        await stream.aclose()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")  # h11 answers 1.0 clients as 1.1, close-delimited
    assert b"transfer-encoding" not in head.lower()
    assert body == b"data: 1.0\n\n"


async def test_httpx_sse_over_http2(nursery: trio.Nursery) -> None:
    """A streamed read (not buffered) over HTTP/2, ended by the server's lifetime."""
    app = App(
        config=Config(heartbeat_interval=None, max_stream_lifetime=0.2, stream_end_retry_jitter=0)
    )

    @app.stream("/s")
    async def s(request: Request, stream: EventStream) -> None:
        await stream.send(Event("hi", id="1"))
        await trio.sleep_forever()

    server = await start_hypercorn(nursery, app)
    with trio.fail_after(GUARD):
        async with (
            httpx.AsyncClient(base_url=server.url, http2=True, http1=False) as client,
            client.stream("GET", "/s") as response,
        ):
            body = b""
            async for chunk in response.aiter_raw():
                body += chunk
    assert body == b"id: 1\ndata: hi\n\nretry: 1000\n\n"


# -- more edges, with the fake server --------------------------------------------------


def ws_scope(path: str = "/ws", **extra: Any) -> dict[str, Any]:
    scope = http_scope(path, type="websocket", extensions={})
    del scope["method"]
    scope.update(extra)
    return scope


async def test_websocket_refusal_without_the_response_extension() -> None:
    app = App()

    @app.websocket("/ws")
    async def ws(request: Request, ws: WebSocket) -> None:
        raise HTTPException(401)

    for path in ("/ws", "/nowhere"):
        server = FakeServer([{"type": "websocket.connect"}])
        await app(ws_scope(path), server.receive, server.send)
        # Only websocket.close is possible: the server answers 403.
        assert server.sent == [{"type": "websocket.close", "code": 1008}]


async def test_websocket_send_stall(autojump_clock: trio.testing.MockClock) -> None:
    app = App(config=Config(write_timeout=2))
    result: list[int] = []

    @app.websocket("/ws")
    async def ws(request: Request, ws: WebSocket) -> None:
        await ws.accept()
        try:
            while True:
                await ws.send(b"x")
        except WebSocketClosed as exc:
            result.append(exc.code)
            raise

    server = FakeServer([{"type": "websocket.connect"}])
    server.block_after = 3  # accept, two messages
    start = trio.current_time()
    await app(ws_scope(), server.receive, server.send)
    assert result == [1006]
    assert trio.current_time() - start == 2
    assert [m["type"] for m in server.sent] == ["websocket.accept"] + ["websocket.send"] * 2


async def test_heartbeat_skips_while_a_write_is_stuck(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = App(config=Config(heartbeat_interval=1, write_timeout=5))

    @app.stream("/s")
    async def s(request: Request, stream: EventStream) -> None:
        await stream.send("blocked")  # never returns: the fake server blocks it

    server = FakeServer([{"type": "http.request", "body": b""}])
    server.block_after = 2  # the head and the empty flush
    await app(http_scope("/s"), server.receive, server.send)
    # No heartbeat went out beside the stuck write; the stall ended the request.
    assert server.body() == b""
    assert trio.current_time() == 5


async def test_stall_on_a_plain_response(autojump_clock: trio.testing.MockClock) -> None:
    app = App(config=Config(write_timeout=3))
    server = FakeServer([{"type": "http.request", "body": b""}])
    server.block_after = 1  # the 404's head goes out, its body never does
    await app(http_scope("/nowhere"), server.receive, server.send)
    assert server.sent[0]["status"] == 404
    assert trio.current_time() == 3
