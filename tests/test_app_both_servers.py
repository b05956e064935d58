"""App behaviour that must be the same on the raw server and under hypercorn.

Every test here takes the ``serve_app`` fixture (``tests/servers.py``), so it
runs twice: against :func:`trio_sse.serve` and against ``hypercorn.trio.serve``
serving the same :class:`~trio_sse.App` as an ASGI application. Real loopback
sockets and real (small) intervals; each test has a ``fail_after`` guard.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trio
from brokers import make_broker
from clients import Client
from servers import RunningServer

from trio_sse import (
    App,
    Broker,
    Config,
    Event,
    EventStream,
    HTTPException,
    JSONResponse,
    Request,
    Response,
    StreamResponse,
    TopicOptions,
    topic_stream,
)

ServeApp = Callable[[App], Awaitable[RunningServer]]

GUARD = 5  # seconds: every test finishes far sooner


@asynccontextmanager
async def sse(
    server: RunningServer, path: str, headers: dict[str, str] | None = None
) -> AsyncIterator[Client]:
    """GET ``path`` on a new connection; the client has read the response head."""
    client = await server.request("GET", path, headers)
    try:
        yield client
    finally:
        await client.aclose()


# -- routes and plain responses -------------------------------------------------


def routes_app() -> App:
    app = App()

    @app.get("/")
    async def index(request: Request) -> str:
        return "hello"

    @app.get("/json")
    async def as_json(request: Request) -> dict[str, object]:
        return {"ok": True, "path": request.path, "q": request.query_param("q")}

    @app.get("/rooms/{room}/files/{rest:path}")
    async def params(request: Request) -> dict[str, str]:
        return request.path_params

    @app.route("/both", methods=("GET", "PUT"))
    async def both(request: Request) -> str:
        return request.method

    @app.get("/empty")
    async def empty(request: Request) -> None:
        return None

    @app.get("/teapot")
    async def teapot(request: Request) -> Response:
        raise HTTPException(418, "short and stout", {"x-pot": "yes"})

    @app.get("/custom")
    async def custom(request: Request) -> Response:
        return JSONResponse([1, 2], status=201, headers={"x-custom": "1"})

    @app.get("/boom")
    async def boom(request: Request) -> str:
        raise RuntimeError("handler exploded")

    @app.get("/bytes")
    async def raw_bytes(request: Request) -> bytes:
        return b"\x00\x01"

    return app


async def test_routes_and_plain_responses(serve_app: ServeApp) -> None:
    server = await serve_app(routes_app())
    with trio.fail_after(GUARD):
        async with server.client() as client:
            r = await client.get("/")
            assert (r.status_code, r.text) == (200, "hello")
            assert r.headers["content-type"] == "text/plain; charset=utf-8"
            assert r.headers["content-length"] == "5"

            r = await client.get("/json", params={"q": "a b"})
            assert r.json() == {"ok": True, "path": "/json", "q": "a b"}
            assert r.headers["content-type"] == "application/json"

            r = await client.get("/rooms/r%201/files/a/b.txt")
            assert r.json() == {"room": "r 1", "rest": "a/b.txt"}

            assert (await client.put("/both")).text == "PUT"
            assert (await client.get("/empty")).status_code == 204

            r = await client.get("/teapot")
            assert (r.status_code, r.text, r.headers["x-pot"]) == (418, "short and stout\n", "yes")

            r = await client.get("/custom")
            assert (r.status_code, r.json(), r.headers["x-custom"]) == (201, [1, 2], "1")

            r = await client.get("/bytes")
            assert r.content == b"\x00\x01"
            assert r.headers["content-type"] == "application/octet-stream"


async def test_404_405_and_head(serve_app: ServeApp) -> None:
    server = await serve_app(routes_app())
    with trio.fail_after(GUARD):
        async with server.client() as client:
            r = await client.get("/nowhere")
            assert (r.status_code, r.text) == (404, "not found\n")

            r = await client.post("/both")
            assert r.status_code == 405
            assert r.headers["allow"] == "GET, HEAD, PUT"

            r = await client.head("/")
            assert r.status_code == 200
            assert r.content == b""
            assert r.headers["content-length"] == "5"

            r = await client.head("/nowhere")
            assert (r.status_code, r.content) == (404, b"")


async def test_handler_exception_is_logged_and_500(
    serve_app: ServeApp, caplog: pytest.LogCaptureFixture
) -> None:
    server = await serve_app(routes_app())
    with trio.fail_after(GUARD), caplog.at_level(logging.ERROR, logger="trio_sse"):
        async with server.client() as client:
            r = await client.get("/boom")
            assert (r.status_code, r.text) == (500, "internal server error\n")
            # ... and the server goes on serving.
            assert (await client.get("/")).text == "hello"
    records = [r for r in caplog.records if r.name.startswith("trio_sse")]
    assert any("GET /boom" in r.getMessage() and r.exc_info for r in records)


# -- request bodies --------------------------------------------------------------


def body_app() -> App:
    app = App(config=Config(max_body_size=1000))

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, object]:
        return {"json": await request.json()}

    @app.post("/form")
    async def form(request: Request) -> dict[str, str]:
        return await request.form()

    @app.post("/size")
    async def size(request: Request) -> str:
        return str(len(await request.body()))

    @app.post("/ignore")
    async def ignore(request: Request) -> str:
        return "not reading it"

    return app


class Chunks:
    """A chunked request body (an async iterator with nothing to finalize)."""

    def __init__(self, count: int, size: int) -> None:
        self.left = count
        self.size = size

    def __aiter__(self) -> Chunks:
        return self

    async def __anext__(self) -> bytes:
        if not self.left:
            raise StopAsyncIteration
        self.left -= 1
        return b"y" * self.size


async def test_request_bodies(serve_app: ServeApp) -> None:
    server = await serve_app(body_app())
    with trio.fail_after(GUARD):
        async with server.client() as client:
            r = await client.post("/echo", json={"a": [1, 2]})
            assert r.json() == {"json": {"a": [1, 2]}}

            r = await client.post("/form", data={"x": "1", "y": "two"})
            assert r.json() == {"x": "1", "y": "two"}

            r = await client.post("/echo", content=b"{not json")
            assert r.status_code == 400

            assert (await client.post("/size", content=b"x" * 1000)).text == "1000"
            assert (await client.post("/ignore", content=b"x" * 500)).text == "not reading it"

            # Chunked transfer encoding (no Content-Length).
            assert (await client.post("/size", content=Chunks(5, 100))).text == "500"


async def test_body_too_large_is_413(serve_app: ServeApp) -> None:
    server = await serve_app(body_app())
    with trio.fail_after(GUARD):
        async with server.client() as client:
            # Declared too large.
            r = await client.post("/size", content=b"x" * 1001)
            assert r.status_code == 413

        # Found too large while reading a chunked body.
        response = await server.request("POST", "/size", chunks=[b"y" * 100] * 30)
        assert response.status == 413
        await response.aclose()
        async with server.client() as client:
            assert (await client.post("/size", content=b"ok")).text == "2"


# -- event streams ---------------------------------------------------------------


def stream_app(config: Config | None = None) -> App:
    app = App(config=config)
    app.state.cancelled = trio.Event()
    app.state.started = trio.Event()

    @app.stream("/count")
    async def count(request: Request, stream: EventStream) -> None:
        n = int(request.query_param("n", "3") or 3)
        await stream.send("plain")
        await stream.send_many([Event(str(i), event="tick", id=str(i)) for i in range(n)])
        await stream.send_many([])
        await stream.send(Event("bye", event="end"))

    @app.stream("/resume")
    async def resume(request: Request, stream: EventStream) -> None:
        await stream.send(Event(f"after {stream.last_event_id}", id="next"))

    @app.stream("/forever")
    async def forever(request: Request, stream: EventStream) -> None:
        try:
            await stream.send(Event("first", id="1"))
            app.state.started.set()
            await trio.sleep_forever()
        finally:
            app.state.cancelled.set()

    @app.stream("/broken")
    async def broken(request: Request, stream: EventStream) -> None:
        await stream.send("before")
        raise RuntimeError("stream handler exploded")

    @app.get("/guarded")
    async def guarded(request: Request) -> Response | StreamResponse:
        if request.headers.get("authorization") != "yes":
            raise HTTPException(401, "no")

        async def run(stream: EventStream) -> None:
            await stream.send("allowed")

        return StreamResponse(run, headers={"x-stream": "1"})

    return app


async def test_stream_headers_and_events(serve_app: ServeApp) -> None:
    server = await serve_app(stream_app())
    with trio.fail_after(GUARD):
        async with sse(server, "/count?n=3") as reader:
            assert reader.status == 200
            assert reader.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert reader.headers["cache-control"] == "no-cache"
            assert reader.headers["x-accel-buffering"] == "no"
            assert "content-length" not in reader.headers
            events = await reader.events(5)
            assert [(e.type, e.data, e.last_event_id) for e in events] == [
                ("message", "plain", ""),
                ("tick", "0", "0"),
                ("tick", "1", "1"),
                ("tick", "2", "2"),
                ("end", "bye", "2"),
            ]
            assert not await reader.pump()  # the stream ended with the handler


async def test_stream_head_and_guarded_stream(serve_app: ServeApp) -> None:
    server = await serve_app(stream_app())
    with trio.fail_after(GUARD):
        async with server.client() as client:
            r = await client.head("/count")
            assert r.status_code == 200
            assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert r.content == b""

            assert (await client.get("/guarded")).status_code == 401
            r = await client.get("/guarded", headers={"authorization": "yes"})
            assert r.headers["x-stream"] == "1"
            assert r.text == "data: allowed\n\n"


async def test_last_event_id_header_and_query(serve_app: ServeApp) -> None:
    server = await serve_app(stream_app())
    with trio.fail_after(GUARD):
        async with server.client() as client:
            r = await client.get("/resume", headers={"Last-Event-ID": "41"})
            assert r.text == "id: next\ndata: after 41\n\n"
            r = await client.get("/resume", params={"lastEventId": "7"})
            assert r.text == "id: next\ndata: after 7\n\n"
            r = await client.get("/resume")
            assert r.text == "id: next\ndata: after None\n\n"


async def test_stream_handler_exception_ends_stream(
    serve_app: ServeApp, caplog: pytest.LogCaptureFixture
) -> None:
    server = await serve_app(stream_app())
    with trio.fail_after(GUARD), caplog.at_level(logging.ERROR, logger="trio_sse"):
        async with server.client() as client:
            r = await client.get("/broken")
            assert (r.status_code, r.text) == (200, "data: before\n\n")
            assert (await client.get("/resume")).status_code == 200
    assert any("/broken" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_heartbeats_on_a_silent_stream(serve_app: ServeApp) -> None:
    app = stream_app(Config(heartbeat_interval=0.2, heartbeat_comment="hb"))
    server = await serve_app(app)
    with trio.fail_after(GUARD):
        async with sse(server, "/forever") as reader:
            assert (await reader.event()).data == "first"
            start = trio.current_time()
            while reader.body.count(b": hb\n\n") < 2:
                assert await reader.pump()
            # Two heartbeats, each after ~0.2 s of silence.
            assert trio.current_time() - start >= 0.3


async def test_max_stream_lifetime_ends_with_retry_hint(serve_app: ServeApp) -> None:
    config = Config(
        max_stream_lifetime=0.3,
        stream_end_retry=2500,
        stream_end_retry_jitter=0,
        heartbeat_interval=None,
    )
    app = stream_app(config)
    server = await serve_app(app)
    with trio.fail_after(GUARD):
        async with sse(server, "/forever") as reader:
            raw = (await reader.rest()).body
            assert raw == b"id: 1\ndata: first\n\nretry: 2500\n\n"
            assert reader.decoder.retry == 2500
        assert app.state.cancelled.is_set()


async def test_stream_end_retry_is_jittered(serve_app: ServeApp) -> None:
    """Streams ended together get different ``retry:`` values within the window."""
    config = Config(
        max_stream_lifetime=0.3,
        stream_end_retry=2500,
        stream_end_retry_jitter=1000,
        heartbeat_interval=None,
    )
    server = await serve_app(stream_app(config))
    retries: list[int | None] = []

    async def one() -> None:
        async with sse(server, "/forever") as reader:
            raw = (await reader.rest()).body
            assert re.fullmatch(rb"id: 1\ndata: first\n\nretry: \d+\n\n", raw), raw
            retries.append(reader.decoder.retry)

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(one)
    assert all(r is not None and 2500 <= r <= 3500 for r in retries), retries
    # 8 draws from 1001 values: all equal with probability 1001**-7.
    assert len(set(retries)) > 1, retries


async def test_disconnect_cancels_the_handler(serve_app: ServeApp) -> None:
    app = stream_app(Config(heartbeat_interval=None))
    server = await serve_app(app)
    with trio.fail_after(GUARD):
        stream = await server.connect()
        await stream.send_raw(b"GET /forever HTTP/1.1\r\nhost: x\r\n\r\n")
        await app.state.started.wait()
        assert not app.state.cancelled.is_set()
        await stream.aclose()
        await app.state.cancelled.wait()
        # The server keeps serving.
        async with server.client() as client:
            assert (await client.get("/resume")).status_code == 200


async def test_disconnect_while_reading_body_cancels_the_handler(serve_app: ServeApp) -> None:
    app = App()
    reading = trio.Event()
    cancelled = trio.Event()

    @app.post("/slow")
    async def slow(request: Request) -> str:
        reading.set()
        try:
            return str(len(await request.body()))
        finally:
            cancelled.set()

    server = await serve_app(app)
    with trio.fail_after(GUARD):
        stream = await server.connect()
        await stream.send_raw(b"POST /slow HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nab")
        await reading.wait()
        await stream.aclose()
        await cancelled.wait()


# -- lifespan and background tasks ------------------------------------------------


async def test_lifespan_and_background_tasks(serve_app: ServeApp) -> None:
    log: list[str] = []

    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[None]:
        log.append("enter")
        app.state.ticks = 0
        app.state.tick = trio.Event()
        try:
            yield
        finally:
            # In a finally: the raw server leaves the lifespan by cancellation.
            log.append("exit")

    app = App(lifespan=lifespan)

    @app.background
    async def ticker() -> None:
        try:
            while True:
                app.state.ticks += 1
                app.state.tick.set()
                app.state.tick = trio.Event()
                await trio.sleep(0.05)
        finally:
            log.append("ticker cancelled")

    @app.stream("/ticks")
    async def ticks(request: Request, stream: EventStream) -> None:
        for _ in range(2):
            await app.state.tick.wait()
            await stream.send(Event(str(app.state.ticks), event="tick"))

    @app.get("/state")
    async def state(request: Request) -> dict[str, object]:
        return {"ticks": app.state.ticks > 0}

    server = await serve_app(app)
    with trio.fail_after(GUARD):
        assert log == ["enter"]
        async with server.client() as client:
            assert (await client.get("/state")).json() == {"ticks": True}
            body = (await client.get("/ticks")).text
            a, b = (
                json.loads(line.removeprefix("data: "))
                for line in body.split("\n")
                if line.startswith("data: ")
            )
            assert b > a
        await server.stop()
    assert log == ["enter", "ticker cancelled", "exit"]


# -- topics ----------------------------------------------------------------------


def topics_app(options: TopicOptions) -> tuple[App, Broker]:
    broker = make_broker(options)
    broker.declare("news")
    broker.declare("prices")
    app = App(config=Config(heartbeat_interval=None))
    app.add_route("/events/{topic}", topic_stream(broker))
    app.add_route("/multi", topic_stream(broker, ["news", "prices"]))
    return app, broker


async def test_topic_stream_resumes_from_last_event_id(serve_app: ServeApp) -> None:
    app, broker = topics_app(TopicOptions())
    server = await serve_app(app)
    first, _, _ = (broker.publish_nowait("news", Event(f"n{i}")) for i in range(1, 4))
    with trio.fail_after(GUARD):
        async with sse(server, "/events/news", {"Last-Event-ID": first.id or ""}) as reader:
            assert [e.data for e in await reader.events(2)] == ["n2", "n3"]
            live = broker.publish_nowait("news", Event("n4"))
            event = await reader.event()
            assert (event.data, event.last_event_id) == ("n4", live.id)


@pytest.mark.parametrize("path", ["/one", "/both"])
async def test_topic_stream_gets_what_is_published_while_its_head_is_sent(
    serve_app: ServeApp, path: str
) -> None:
    # The handler creates the subscription before the response head, the
    # stream enters it after (_resume.py, Rule 1b): an event published in
    # between (here by expires_at, which the handler calls) is not lost.
    app, broker = topics_app(TopicOptions())
    published: list[Event] = []

    def publish_meanwhile(request: Request) -> None:
        published.append(broker.publish_nowait("news", Event("meanwhile")))

    app.add_route("/one", topic_stream(broker, ["news"], expires_at=publish_meanwhile))
    app.add_route("/both", topic_stream(broker, ["news", "prices"], expires_at=publish_meanwhile))
    server = await serve_app(app)
    with trio.fail_after(GUARD):
        async with sse(server, path) as reader:
            event = await reader.event()
            assert event.data == "meanwhile"
            broker.publish_nowait("news", Event("live"))
            assert (await reader.event()).data == "live"
    assert len(published) == 1
    if path == "/one":
        assert event.last_event_id == published[0].id


async def test_topic_stream_composite_cursor(serve_app: ServeApp) -> None:
    app, broker = topics_app(TopicOptions())
    server = await serve_app(app)
    with trio.fail_after(GUARD):
        async with sse(server, "/multi") as reader:
            await reader.pump()  # the id-only event with the starting cursor
            broker.publish_nowait("news", Event("a"))
            broker.publish_nowait("prices", Event("b"))
            events = await reader.events(2)
            assert [e.data for e in events] == ["a", "b"]
            cursor = events[1].last_event_id
        broker.publish_nowait("prices", Event("c"))
        broker.publish_nowait("news", Event("d"))
        async with sse(server, "/multi", {"Last-Event-ID": cursor}) as reader:
            assert [e.data for e in await reader.events(2)] == ["c", "d"]


async def test_topic_evicts_a_client_that_stops_reading(serve_app: ServeApp) -> None:
    options = TopicOptions(buffer_size=2, eviction_event=Event(retry=1500))
    app, broker = topics_app(options)
    server = await serve_app(app)
    payload = "x" * 65536
    with trio.fail_after(GUARD):
        # This client never reads while the topic publishes...
        slow = await server.request("GET", "/events/news")
        sent = 0
        while broker.topic("news").stats().evicted == 0:
            assert sent < 2000, "never evicted"
            broker.publish_nowait("news", Event(payload))  # ...and the publisher never waits.
            sent += 1
            await trio.sleep(0.001)
        assert broker.topic("news").stats().subscribers == 0
        # Once it reads again it finds what was written, then the eviction event, then the end.
        raw = (await slow.rest()).body
        await slow.aclose()
        assert raw.endswith(b"\n\nretry: 1500\n\n")
        assert slow.decoder.retry == 1500
        assert 0 < raw.count(b"data: x") < sent
