"""The EventSource client (``open_event_source``) against trio-sse over real sockets.

Every server here is a real :class:`~trio_sse.App` on the raw server or under
hypercorn (``serve_app``) on ``127.0.0.1``; intervals are real but small
(milliseconds), and every test has a ``fail_after`` guard.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import httpx
import pytest
import trio
from servers import RunningServer

from trio_sse import (
    App,
    Event,
    EventSource,
    EventSourceConnectionError,
    EventSourceResponseError,
    EventStream,
    EventTooLargeError,
    MessageEvent,
    PlainTextResponse,
    ReadyState,
    Request,
    Response,
    StreamResponse,
    open_event_source,
)

Serve = Callable[[App], Awaitable[RunningServer]]

#: EventSource's settings as open_event_source defaults them.
SOURCE_DEFAULTS: dict[str, Any] = {
    "method": "GET",
    "headers": None,
    "json": None,
    "content": None,
    "last_event_id": "",
    "reconnect": None,
    "retry": 3.0,
    "max_backoff": 60.0,
    "stable_after": 10.0,
    "stall_timeout": None,
    "max_reconnects": None,
    "max_event_size": 1024 * 1024,
    "sentinel": None,
    "on_open": None,
    "on_reconnect": None,
}


async def collect(url: str, got: list[MessageEvent], **kwargs: Any) -> None:
    """Iterate a stream to its end (or error), appending its events to ``got``."""
    async with open_event_source(url, **kwargs) as source:
        async for event in source:
            got.append(event)


def resumable_app(batch: int = 2, retry: int = 10) -> tuple[App, list[str | None]]:
    """Each connection sends ``batch`` numbered events after Last-Event-ID, then ends."""
    app = App()
    seen: list[str | None] = []

    @app.stream("/numbers")
    async def numbers(request: Request, stream: EventStream) -> None:
        seen.append(request.last_event_id)
        start = int(request.last_event_id or 0)
        await stream.send(Event(retry=retry, comment="hello"))
        for n in range(start + 1, start + batch + 1):
            await stream.send(Event(f"n{n}\nline two", event="number", id=str(n)))

    return app, seen


async def test_events_ids_and_reconnect_with_last_event_id(serve_app: Serve) -> None:
    app, seen = resumable_app()
    server = await serve_app(app)
    reconnects: list[tuple[Exception | None, float]] = []
    with trio.fail_after(10):
        async with open_event_source(
            f"{server.url}/numbers", on_reconnect=lambda e, d: reconnects.append((e, d))
        ) as source:
            events = []
            async for event in source:
                events.append(event)
                if len(events) == 5:
                    break
            assert source.retry == 0.010
            assert source.connections == 3
    assert [(e.type, e.data, e.last_event_id) for e in events] == [
        ("number", f"n{n}\nline two", str(n)) for n in range(1, 6)
    ]
    assert seen == [None, "2", "4"]
    # The stream ended cleanly each time: the browser's delay, the server's retry.
    assert reconnects == [(None, 0.010), (None, 0.010)]


async def test_resume_from_last_event_id_setting(serve_app: Serve) -> None:
    app, seen = resumable_app()
    server = await serve_app(app)
    with trio.fail_after(10):
        async with open_event_source(f"{server.url}/numbers", last_event_id="40") as source:
            event = await anext(source)
            assert source.last_event_id == "41"
    assert event.data.startswith("n41")
    assert seen == ["40"]


def status_app() -> App:
    app = App()

    @app.get("/gone")
    async def gone(request: Request) -> None:
        return None  # 204

    @app.get("/broken")
    async def broken(request: Request) -> Response:
        return PlainTextResponse("database is down " * 200, status=503)

    @app.get("/html")
    async def html(request: Request) -> Response:
        return Response("<p>login</p>", media_type="text/html")

    @app.get("/moved")
    async def moved(request: Request) -> Response:
        return Response(status=307, headers={"location": "/one"})

    @app.stream("/one")
    async def one(request: Request, stream: EventStream) -> None:
        await stream.send(Event("hi", id="1"))
        await trio.sleep_forever()

    return app


async def test_204_stops_without_error(serve_app: Serve) -> None:
    server = await serve_app(status_app())
    with trio.fail_after(5):
        async with open_event_source(f"{server.url}/gone") as source:
            assert source.ready_state is ReadyState.CLOSED
            assert [e async for e in source] == []


@pytest.mark.parametrize(
    ("path", "status", "content_type", "excerpt"),
    [("/broken", 503, "text/plain", "database is down"), ("/html", 200, "text/html", "<p>login")],
)
async def test_bad_response_is_fatal(
    serve_app: Serve, path: str, status: int, content_type: str, excerpt: str
) -> None:
    server = await serve_app(status_app())
    with trio.fail_after(5), pytest.raises(EventSourceResponseError) as info:
        async with open_event_source(f"{server.url}{path}"):
            pass  # pragma: no cover
    err = info.value
    assert err.status == status
    assert err.content_type.startswith(content_type)
    assert err.body.decode().startswith(excerpt)
    assert len(err.body) <= 1024
    assert str(status) in str(err) or "text/html" in str(err)
    assert excerpt in str(err)


async def test_redirect_followed(serve_app: Serve) -> None:
    server = await serve_app(status_app())
    with trio.fail_after(5):
        async with open_event_source(f"{server.url}/moved") as source:
            assert (await anext(source)).data == "hi"
            assert source.response is not None
            assert source.response.url.path == "/one"


async def test_custom_headers_and_close_inside_the_loop(serve_app: Serve) -> None:
    app = App()

    @app.stream("/echo")
    async def echo(request: Request, stream: EventStream) -> None:
        for n in range(100):
            await stream.send(Event(f"{request.headers.get('x-token')} {n}"))
        await trio.sleep_forever()

    server = await serve_app(app)
    with trio.fail_after(5):
        async with open_event_source(f"{server.url}/echo", headers={"x-token": "abc"}) as source:
            got = []
            async for event in source:
                got.append(event.data)
                source.close()
            assert source.ready_state is ReadyState.CLOSED
    assert got == ["abc 0"]


async def test_max_event_size(serve_app: Serve) -> None:
    app = App()

    @app.stream("/big")
    async def big(request: Request, stream: EventStream) -> None:
        await stream.send(Event("small"))
        await stream.send(Event("x" * 5000))

    server = await serve_app(app)
    got: list[MessageEvent] = []
    with trio.fail_after(5), pytest.raises(EventTooLargeError):
        await collect(f"{server.url}/big", got, max_event_size=1000)
    assert [e.data for e in got] == ["small"]


async def test_stall_deadline_reconnects(serve_app: Serve) -> None:
    app = App()
    calls: list[str | None] = []

    @app.stream("/quiet")
    async def quiet(request: Request, stream: EventStream) -> None:
        calls.append(request.last_event_id)
        await stream.send(Event(f"c{len(calls)}", id=str(len(calls)), retry=1))
        await trio.sleep_forever()  # and no heartbeats (see below)

    from trio_sse import Config

    app.config = Config(heartbeat_interval=None)
    server = await serve_app(app)
    errors: list[Exception | None] = []
    with trio.fail_after(10):
        async with open_event_source(
            f"{server.url}/quiet", stall_timeout=0.2, on_reconnect=lambda e, d: errors.append(e)
        ) as source:
            assert [(await anext(source)).data for _ in range(2)] == ["c1", "c2"]
    assert calls == [None, "1"]
    assert len(errors) == 1
    assert isinstance(errors[0], trio.TooSlowError)


async def test_heartbeats_keep_a_stall_deadline_at_bay() -> None:
    app = App()

    @app.stream("/beat")
    async def beat(request: Request, stream: EventStream) -> None:
        await trio.sleep(0.6)
        await stream.send(Event("after the quiet"))
        await trio.sleep_forever()

    from servers import start_raw

    from trio_sse import Config

    app.config = Config(heartbeat_interval=0.05)
    async with trio.open_nursery() as nursery:
        server = await start_raw(nursery, app)
        with trio.fail_after(5):
            async with open_event_source(f"{server.url}/beat", stall_timeout=0.3) as source:
                assert (await anext(source)).data == "after the quiet"
                assert source.connections == 1
        nursery.cancel_scope.cancel()


async def test_backoff_grows_jittered_and_capped() -> None:
    # Nothing listens on this port: every attempt fails to connect.
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    delays: list[float] = []
    with trio.fail_after(5), pytest.raises(EventSourceConnectionError) as info:
        async with open_event_source(
            f"http://127.0.0.1:{port}/",
            retry=0.001,
            max_backoff=0.008,
            max_reconnects=8,
            on_reconnect=lambda e, d: delays.append(d),
        ):
            pass  # pragma: no cover
    sock.close()
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert "max_reconnects" in str(info.value)
    assert len(delays) == 8
    assert delays[0] == 0.001
    for n, delay in enumerate(delays[1:], start=2):
        base = min(0.008, 0.001 * 2 ** (n - 1))
        assert max(0.001, base / 2) <= delay <= base
    assert delays[-1] >= 0.004  # capped at 0.008, at least half of it


async def test_stable_connection_resets_backoff(serve_app: Serve) -> None:
    # Connections without events: only the time they stayed open counts.
    app, _ = resumable_app(batch=0, retry=1)
    server = await serve_app(app)
    for stable_after, grows in ((0.0, False), (60.0, True)):
        delays = await reconnect_delays(f"{server.url}/numbers", stable_after, count=6)
        assert delays[0] == 0.001
        assert (max(delays) > 0.001) is grows, delays


async def reconnect_delays(url: str, stable_after: float, count: int) -> list[float]:
    delays: list[float] = []
    stop = trio.CancelScope()

    def on_reconnect(error: Exception | None, delay: float) -> None:
        delays.append(delay)
        if len(delays) == count:
            stop.cancel()

    with trio.fail_after(10), stop:
        async with open_event_source(
            url, max_backoff=0.05, stable_after=stable_after, on_reconnect=on_reconnect
        ) as source:
            await anext(source)
    return delays


def post_app() -> tuple[App, list[object]]:
    app = App()
    bodies: list[object] = []

    @app.post("/chat")
    async def chat(request: Request) -> StreamResponse:
        body = await request.json()
        bodies.append(body)

        async def run(stream: EventStream) -> None:
            for word in body["prompt"].split():
                await stream.send(Event(json.dumps({"token": word})))
            if body.get("done"):
                await stream.send(Event("[DONE]"))
                await trio.sleep_forever()

        return StreamResponse(run)

    return app, bodies


async def test_post_json_stream_ends_without_retry(serve_app: Serve) -> None:
    app, bodies = post_app()
    server = await serve_app(app)
    with trio.fail_after(5):
        async with open_event_source(
            f"{server.url}/chat", method="POST", json={"prompt": "a b c"}
        ) as source:
            tokens = [json.loads(e.data)["token"] async for e in source]
    assert tokens == ["a", "b", "c"]
    assert bodies == [{"prompt": "a b c"}]


async def test_post_sentinel_ends_the_stream(serve_app: Serve) -> None:
    app, _ = post_app()
    server = await serve_app(app)
    with trio.fail_after(5):
        async with open_event_source(
            f"{server.url}/chat",
            method="POST",
            json={"prompt": "x y", "done": True},
            sentinel="[DONE]",
        ) as source:
            data = [e.data async for e in source]
    assert data == ['{"token": "x"}', '{"token": "y"}']


async def read_head(stream: trio.SocketStream, requests: list[bytes]) -> bytes:
    """A fake server's side: read a request head (5 s at most); record and return it."""
    data = b""
    with trio.move_on_after(5):
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(65536)
    requests.append(data)
    return data


async def start_breaking_server(nursery: trio.Nursery, requests: list[bytes]) -> int:
    """A TCP server that answers each request with one event, then drops the connection.

    The chunked body is never terminated: the stream is broken, not ended.
    """

    async def handle(stream: trio.SocketStream) -> None:
        await read_head(stream, requests)
        event = b'data: {"token": "p"}\n\n'
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n" % (len(event), event)
        )
        await stream.aclose()

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


async def test_post_broken_stream_is_not_resent_unless_asked(nursery: trio.Nursery) -> None:
    requests: list[bytes] = []
    port = await start_breaking_server(nursery, requests)
    url = f"http://127.0.0.1:{port}/chat"
    got: list[MessageEvent] = []
    with trio.fail_after(5), pytest.raises(EventSourceConnectionError) as info:
        await collect(url, got, method="POST", json={"prompt": "p"})
    assert [json.loads(e.data) for e in got] == [{"token": "p"}]
    assert "reconnect=True" in str(info.value)
    assert isinstance(info.value.__cause__, httpx.TransportError)
    assert len(requests) == 1
    assert requests[0].startswith(b"POST /chat ")

    requests.clear()
    with trio.fail_after(5):
        async with open_event_source(
            url, method="POST", json={"prompt": "p"}, reconnect=True, retry=0.001
        ) as source:
            assert [(await anext(source)).data for _ in range(2)] == ['{"token": "p"}'] * 2
    assert len(requests) == 2


async def test_get_broken_stream_reconnects(nursery: trio.Nursery) -> None:
    requests: list[bytes] = []
    port = await start_breaking_server(nursery, requests)
    errors: list[Exception | None] = []
    with trio.fail_after(5):
        async with open_event_source(
            f"http://127.0.0.1:{port}/", retry=0.001, on_reconnect=lambda e, d: errors.append(e)
        ) as source:
            for _ in range(3):
                await anext(source)
    assert len(requests) == 3
    assert all(isinstance(e, httpx.RemoteProtocolError) for e in errors), errors


async def test_own_client_is_used_and_left_open(serve_app: Serve) -> None:
    app, seen = resumable_app()
    server = await serve_app(app)
    async with httpx.AsyncClient(base_url=server.url, timeout=None) as client:
        with trio.fail_after(5):
            async with open_event_source("/numbers", client=client) as source:
                assert (await anext(source)).last_event_id == "1"
        assert not client.is_closed
    assert seen == [None]


async def test_invalid_settings() -> None:
    for kwargs in ({"retry": -1}, {"stall_timeout": 0}, {"max_reconnects": -1}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            async with open_event_source("http://127.0.0.1:9/", **kwargs):  # type: ignore[arg-type]
                pass  # pragma: no cover


async def refused_port() -> tuple[trio.socket.SocketType, int]:
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]


async def test_backoff_never_zero_after_retry_0() -> None:
    sock, port = await refused_port()
    delays: list[float] = []
    with trio.fail_after(5), pytest.raises(EventSourceConnectionError):
        await collect(
            f"http://127.0.0.1:{port}/",
            [],
            retry=0,
            max_reconnects=4,
            on_reconnect=lambda e, d: delays.append(d),
        )
    sock.close()
    assert delays[0] == 0
    assert all(d > 0 for d in delays[1:]), delays


async def test_close_from_the_reconnect_hook_stops_at_once() -> None:
    sock, port = await refused_port()
    calls: list[float] = []
    source_box: list[EventSource] = []

    def on_reconnect(error: Exception | None, delay: float) -> None:
        calls.append(delay)
        source_box[0].close()

    with trio.fail_after(5):
        async with httpx.AsyncClient(timeout=None) as client:
            source = EventSource(
                client,
                f"http://127.0.0.1:{port}/",
                **{**SOURCE_DEFAULTS, "retry": 3600.0, "on_reconnect": on_reconnect},
            )
            source_box.append(source)
            assert [e async for e in source] == []
    sock.close()
    assert calls == [3600.0]  # and it did not sleep an hour


async def test_excerpt_of_a_body_that_never_ends_is_bounded(nursery: trio.Nursery) -> None:
    async def handle(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(
            b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\n"
            b"content-length: 100000\r\n\r\nstill writing..."
        )
        await trio.sleep_forever()

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(5), pytest.raises(EventSourceResponseError) as info:
        await collect(f"http://127.0.0.1:{port}/", [])
    assert info.value.status == 500
    assert info.value.body == b"still writing..."


async def test_unicode_id_is_resent_as_utf8(nursery: trio.Nursery) -> None:
    requests: list[bytes] = []

    async def handle(stream: trio.SocketStream) -> None:
        await read_head(stream, requests)
        body = "id: café ☕\ndata: x\n\n".encode()
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        await stream.aclose()

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(5):
        async with open_event_source(f"http://127.0.0.1:{port}/", retry=0.001) as source:
            assert (await anext(source)).last_event_id == "café ☕"
            await anext(source)
    assert "last-event-id" not in requests[0].decode().lower()
    assert "last-event-id: café ☕\r\n".encode() in requests[1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "ftp://127.0.0.1/"}, "ftp"),
        ({"url": "http://[::1"}, "invalid URL"),
    ],
)
async def test_requests_that_cannot_be_sent_are_fatal(kwargs: dict[str, Any], message: str) -> None:
    url = kwargs.pop("url", "http://127.0.0.1:9/")
    with trio.fail_after(5), pytest.raises(EventSourceConnectionError, match=message) as info:
        await collect(url, [], retry=0.001, **kwargs)
    assert info.value.__cause__ is not None


@pytest.mark.parametrize(
    "kwargs", [{"last_event_id": "1\r\nx-evil: yes"}, {"headers": {"x-bad": "a\nb"}}]
)
async def test_line_breaks_in_header_values_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="cannot contain CR, LF or NUL"):
        await collect("http://127.0.0.1:9/", [], **kwargs)


async def test_async_hooks_are_refused() -> None:
    async def on_open(response: httpx.Response) -> None:
        pass  # pragma: no cover

    with pytest.raises(TypeError, match="on_open must be a plain function"):
        await collect("http://127.0.0.1:9/", [], on_open=on_open)


async def test_redirect_loop_is_fatal(serve_app: Serve) -> None:
    app = App()

    @app.get("/loop")
    async def loop(request: Request) -> Response:
        return Response(status=302, headers={"location": "/loop"})

    server = await serve_app(app)
    with trio.fail_after(5), pytest.raises(EventSourceConnectionError, match="redirect"):
        await collect(f"{server.url}/loop", [])


async def test_http2_client_reconnects_on_the_same_connection(nursery: trio.Nursery) -> None:
    from servers import hypercorn_config, start_hypercorn

    app, seen = resumable_app()
    server = await start_hypercorn(nursery, app, hypercorn_config())
    opened: list[str] = []
    async with httpx.AsyncClient(http1=False, http2=True, timeout=None) as client:
        with trio.fail_after(10):
            async with open_event_source(
                f"{server.url}/numbers",
                client=client,
                on_open=lambda r: opened.append(r.http_version),
            ) as source:
                events = [await anext(source) for _ in range(5)]
    assert [e.last_event_id for e in events] == ["1", "2", "3", "4", "5"]
    assert seen == [None, "2", "4"]
    assert opened == ["HTTP/2"] * 3


async def test_an_event_cut_by_a_drop_is_not_dispatched(nursery: trio.Nursery) -> None:
    """The spec: an unfinished event is discarded; the resume starts after the last whole one."""
    requests: list[bytes] = []

    async def handle(stream: trio.SocketStream) -> None:
        data = await read_head(stream, requests)
        first = b"last-event-id: 1" not in data.lower()
        body = b"id: 1\ndata: one\n\nid: 2\ndata: cut" if first else b"id: 2\ndata: two\n\n"
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n" + body
        )  # no length, no chunks: the body ends when the connection does
        await stream.aclose()

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(5):
        async with open_event_source(f"http://127.0.0.1:{port}/", retry=0.001) as source:
            events = [await anext(source) for _ in range(2)]
    assert [(e.data, e.last_event_id) for e in events] == [("one", "1"), ("two", "2")]
    assert b"last-event-id: 1\r\n" in requests[1].lower()
