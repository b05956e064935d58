"""WebSocket routes and topics over WebSocket, on both servers.

Every test takes ``serve_app`` (``tests/servers.py``): the raw server hands
upgrades to trio-websocket, hypercorn serves the App's ``websocket`` scope.
The client is trio-websocket's.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import wsproto
import wsproto.events
from brokers import make_broker
from servers import RunningServer
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    wrap_client_stream,
)

from trio_sse import (
    CLOSE_EVICTED,
    App,
    Broker,
    Config,
    Event,
    HTTPException,
    Request,
    TopicOptions,
    WebSocket,
    WebSocketClosed,
    topic_stream,
    topic_websocket,
)
from trio_sse._websocket import event_frame

ServeApp = Callable[[App], Awaitable[RunningServer]]

GUARD = 5


@asynccontextmanager
async def connect(
    server: RunningServer,
    path: str,
    *,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    message_queue_size: int = 1,
) -> AsyncIterator[WebSocketConnection]:
    """A trio-websocket client connection.

    Like ``open_websocket``, but the TCP stream is ours to close: trio-websocket's
    client leaves its socket open when the server closes first.
    """
    stream = await trio.open_tcp_stream(server.host, server.port)
    rejected: list[ConnectionRejected] = []
    try:
        async with trio.open_nursery() as nursery:
            ws = await wrap_client_stream(
                nursery,
                stream,
                server.host,
                path,
                extra_headers=extra_headers,
                message_queue_size=message_queue_size,
            )
            try:
                yield ws
            finally:
                with trio.move_on_after(1):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    except* ConnectionRejected as group:
        # Raised by the client's reader task: unwrap it from the nursery's group.
        rejected.extend(e for e in _leaves(group) if isinstance(e, ConnectionRejected))
    finally:
        await trio.aclose_forcefully(stream)
    if rejected:
        raise rejected[0]


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


async def frames(ws: WebSocketConnection, n: int) -> list[dict[str, Any]]:
    return [json.loads(await ws.get_message()) for _ in range(n)]


# -- WebSocket routes ------------------------------------------------------------


def echo_app() -> App:
    app = App(config=Config(heartbeat_interval=None))
    app.state.ended = trio.Event()

    @app.websocket("/echo/{room}")
    async def echo(request: Request, ws: WebSocket) -> None:
        await ws.accept()
        await ws.send(f"room={request.path_params['room']} q={request.query_param('q')}")
        try:
            while True:
                await ws.send(await ws.receive())
        finally:
            app.state.ended.set()

    @app.get("/echo/{room}")
    async def plain(request: Request) -> str:
        return "plain GET"

    @app.websocket("/private")
    async def private(request: Request, ws: WebSocket) -> None:
        if request.headers.get("authorization") != "yes":
            raise HTTPException(401, "who are you?")
        await ws.accept()
        await ws.close(4321, "bye")

    @app.websocket("/shy")
    async def shy(request: Request, ws: WebSocket) -> None:
        pass

    @app.websocket("/broken-early")
    async def broken_early(request: Request, ws: WebSocket) -> None:
        raise RuntimeError("before accepting")

    @app.websocket("/broken-late")
    async def broken_late(request: Request, ws: WebSocket) -> None:
        await ws.accept()
        raise RuntimeError("after accepting")

    return app


async def test_echo_route(serve_app: ServeApp) -> None:
    app = echo_app()
    server = await serve_app(app)
    with trio.fail_after(GUARD):
        async with connect(server, "/echo/r1?q=x") as ws:
            assert await ws.get_message() == "room=r1 q=x"
            await ws.send_message("hello")
            assert await ws.get_message() == "hello"
            await ws.send_message(b"\x00bin")
            assert await ws.get_message() == b"\x00bin"
        # The client closed: the handler's receive() raised and it ended quietly.
        await app.state.ended.wait()
        # The same path still answers plain HTTP requests.
        async with server.client() as client:
            assert (await client.get("/echo/r1")).text == "plain GET"


async def test_refusals_and_errors(serve_app: ServeApp, caplog: pytest.LogCaptureFixture) -> None:
    server = await serve_app(echo_app())
    with trio.fail_after(GUARD):
        for path, status in [
            ("/private", 401),
            ("/shy", 403),
            ("/nowhere", 404),
            ("/broken-early", 500),
        ]:
            with pytest.raises(ConnectionRejected) as rejected:
                async with connect(server, path):
                    pass  # pragma: no cover
            assert rejected.value.status_code == status, path

        async with connect(server, "/private", extra_headers=[(b"authorization", b"yes")]) as ws:
            with pytest.raises(ConnectionClosed):
                await ws.get_message()
            assert ws.closed is not None
            assert (ws.closed.code, ws.closed.reason) == (4321, "bye")

        async with connect(server, "/broken-late") as ws:
            with pytest.raises(ConnectionClosed):
                await ws.get_message()
            assert ws.closed is not None
            assert ws.closed.code == 1011
    assert any("/broken-late" in r.getMessage() and r.exc_info for r in caplog.records)


# -- topics over WebSocket ----------------------------------------------------------


def topics_app(options: TopicOptions | None = None) -> tuple[App, Broker]:
    broker = make_broker(options or TopicOptions())
    for name in ("news", "prices"):
        # An event before anyone subscribes: fresh subscribers then get a start cursor.
        broker.declare(name).publish_nowait(Event("seed"))
    app = App(config=Config(heartbeat_interval=None))
    app.add_websocket_route("/ws", topic_websocket(broker))
    app.add_route("/sse", topic_stream(broker))
    return app, broker


async def subscribe(ws: WebSocketConnection, topics: list[str], last: str | None = None) -> None:
    await ws.send_message(json.dumps({"subscribe": topics, "last_event_id": last}))


async def test_topic_frames_and_resume(serve_app: ServeApp) -> None:
    app, broker = topics_app()
    server = await serve_app(app)
    with trio.fail_after(GUARD):
        async with connect(server, "/ws") as ws:
            await subscribe(ws, ["news"])
            (start,) = await frames(ws, 1)
            assert set(start) == {"id"}  # a fresh subscriber learns where it starts
            first = broker.publish_nowait("news", Event("n1", event="headline"))
            broker.publish_nowait("news", Event("n2", retry=500))
            got = await frames(ws, 2)
            assert got[0] == {"data": "n1", "event": "headline", "id": first.id}
            assert got[1]["data"] == "n2"
            assert got[1]["retry"] == 500
        broker.publish_nowait("news", Event("n3"))
        async with connect(server, "/ws") as ws:
            await subscribe(ws, ["news"], last=first.id)
            assert [f["data"] for f in await frames(ws, 2)] == ["n2", "n3"]
        # The same resume point works for the SSE route.
        response = await server.request("GET", "/sse?topic=news", {"last-event-id": first.id or ""})
        while response.body.count(b"\n\n") < 2:
            assert await response.pump()
        body = bytes(response.body)
        await response.aclose()
        assert b"data: n2\n" in body
        assert b"data: n3\n" in body


async def test_topic_composite_cursor_and_query_resume(serve_app: ServeApp) -> None:
    app, broker = topics_app()
    server = await serve_app(app)
    with trio.fail_after(GUARD):
        async with connect(server, "/ws") as ws:
            await subscribe(ws, ["news", "prices"])
            await frames(ws, 1)
            broker.publish_nowait("prices", Event("p1"))
            broker.publish_nowait("news", Event("n1"))
            got = await frames(ws, 2)
            assert [f["data"] for f in got] == ["p1", "n1"]
            cursor = got[-1]["id"]
        broker.publish_nowait("news", Event("n2"))
        broker.publish_nowait("prices", Event("p2"))
        # last_event_id may also come from the URL (lastEventId), as for SSE.
        async with connect(server, f"/ws?lastEventId={cursor}") as ws:
            await ws.send_message(json.dumps({"subscribe": ["news", "prices"]}))
            assert [f["data"] for f in await frames(ws, 2)] == ["n2", "p2"]


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("not json", "not JSON"),
        ('{"topics": ["news"]}', "expected"),
        ('{"subscribe": []}', "at least one topic"),
        ('{"subscribe": ["nope"]}', "no such topic: nope"),
        ('{"subscribe": "news", "last_event_id": 7}', "must be a string"),
    ],
)
async def test_bad_subscribe_messages(serve_app: ServeApp, message: str, error: str) -> None:
    app, _ = topics_app()
    server = await serve_app(app)
    with trio.fail_after(GUARD):
        async with connect(server, "/ws") as ws:
            await ws.send_message(message)
            reply = json.loads(await ws.get_message())
            assert error in reply["error"]
            with pytest.raises(ConnectionClosed):
                await ws.get_message()
            assert ws.closed is not None
            assert ws.closed.code == 1008


async def test_client_disconnect_unsubscribes(serve_app: ServeApp) -> None:
    app, broker = topics_app()
    server = await serve_app(app)
    with trio.fail_after(GUARD):
        async with connect(server, "/ws") as ws:
            await subscribe(ws, ["news"])
            await frames(ws, 1)
            assert broker.topic("news").stats().subscribers == 1
        while broker.topic("news").stats().subscribers:
            await trio.sleep(0.01)


async def test_topic_closed_closes_with_1001(serve_app: ServeApp) -> None:
    app, broker = topics_app()
    server = await serve_app(app)
    with trio.fail_after(GUARD):
        async with connect(server, "/ws") as ws:
            await subscribe(ws, ["news"])
            await frames(ws, 1)
            broker.topic("news").close()
            with pytest.raises(ConnectionClosed):
                await ws.get_message()
            assert ws.closed is not None
            assert ws.closed.code == 1001


@pytest.mark.parametrize("eviction_event", [None, Event(retry=1500)])
async def test_slow_client_is_evicted(serve_app: ServeApp, eviction_event: Event | None) -> None:
    app, broker = topics_app(TopicOptions(buffer_size=2, eviction_event=eviction_event))
    server = await serve_app(app)
    payload = "x" * 65536
    with trio.fail_after(GUARD):
        # message_queue_size=1: the client stops reading the socket while we do not read.
        async with connect(server, "/ws", message_queue_size=1) as ws:
            await subscribe(ws, ["news"])
            await frames(ws, 1)
            sent = 0
            while broker.topic("news").stats().evicted == 0:
                assert sent < 2000, "never evicted"
                broker.publish_nowait("news", Event(payload))  # never waits
                sent += 1
                await trio.sleep(0.001)
            received: list[dict[str, Any]] = []
            while True:
                try:
                    message = await ws.get_message()
                except ConnectionClosed:
                    break
                received.append(json.loads(message))
            assert ws.closed is not None
            assert ws.closed.code == CLOSE_EVICTED
    assert 0 < sum(f.get("data") == payload for f in received) < sent
    expected = {"event": "evicted"} if eviction_event is None else {"retry": 1500}
    assert received[-1] == expected


# -- raw server only -----------------------------------------------------------------


async def test_raw_heartbeat_is_an_unsolicited_pong(nursery: trio.Nursery) -> None:
    from servers import start_raw

    app = App(config=Config(heartbeat_interval=0.2))

    @app.websocket("/quiet")
    async def quiet(request: Request, ws: WebSocket) -> None:
        await ws.accept()
        await ws.receive()

    server = await start_raw(nursery, app)
    with trio.fail_after(GUARD):
        stream = await server.open_stream()
        client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        await stream.send_all(client.send(wsproto.events.Request(host="x", target="/quiet")))
        seen: list[type] = []
        start = trio.current_time()
        while wsproto.events.Pong not in seen:
            client.receive_data(await stream.receive_some(4096))
            seen.extend(type(e) for e in client.events())
        assert wsproto.events.AcceptConnection in seen
        assert trio.current_time() - start >= 0.15
        await stream.aclose()


async def test_raw_shutdown_closes_with_1001(nursery: trio.Nursery) -> None:
    from servers import start_raw

    app, _ = topics_app()
    server = await start_raw(nursery, app)
    with trio.fail_after(GUARD):
        async with connect(server, "/ws") as ws:
            await subscribe(ws, ["news"])
            await frames(ws, 1)
            async with trio.open_nursery() as stopping:
                stopping.start_soon(server.stop)
                with pytest.raises(ConnectionClosed):
                    await ws.get_message()
            assert ws.closed is not None
            assert ws.closed.code == 1001


async def test_write_stall_on_the_raw_server(nursery: trio.Nursery) -> None:
    from servers import start_raw

    app = App(config=Config(heartbeat_interval=None, write_timeout=0.3))
    closed: list[WebSocketClosed] = []

    @app.websocket("/flood")
    async def flood(request: Request, ws: WebSocket) -> None:
        await ws.accept()
        try:
            while True:
                await ws.send("y" * 65536)
        except WebSocketClosed as exc:
            closed.append(exc)
            raise

    server = await start_raw(nursery, app)
    with trio.fail_after(GUARD):
        stream = await server.open_stream()
        client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        await stream.send_all(client.send(wsproto.events.Request(host="x", target="/flood")))
        # ... and never read again.
        while not closed:
            await trio.sleep(0.05)
        assert closed[0].code == 1006
        await stream.aclose()


def test_event_frame_is_cached_json() -> None:
    event = Event("é\n☃", event="e", id="1", retry=10, comment="c")
    frame = event_frame(event)
    assert json.loads(frame) == {
        "data": "é\n☃",
        "event": "e",
        "id": "1",
        "retry": 10,
        "comment": "c",
    }
    assert event_frame(event) is frame
    assert event_frame(Event()) == "{}"


# -- the WebSocket API's edges ---------------------------------------------------------


def edges_app() -> App:
    app = App(config=Config(heartbeat_interval=None))
    app.state.errors = []
    app.state.done = trio.Event()

    @app.websocket("/misuse")
    async def misuse(request: Request, ws: WebSocket) -> None:
        errors: list[str] = app.state.errors
        try:
            await ws.receive()
        except RuntimeError as exc:
            errors.append(str(exc))
        try:
            await ws.send("too early")
        except RuntimeError as exc:
            errors.append(str(exc))
        await ws.accept()
        try:
            await ws.accept()
        except RuntimeError as exc:
            errors.append(str(exc))
        await ws.send_event(Event("ok"))
        await ws.close(4001, "done")
        await ws.close()  # idempotent
        try:
            await ws.send("after close")
        except WebSocketClosed as exc:
            errors.append(f"closed {exc.code}")
        app.state.done.set()

    @app.websocket("/close-first")
    async def close_first(request: Request, ws: WebSocket) -> None:
        await ws.close()

    @app.websocket("/late-send")
    async def late_send(request: Request, ws: WebSocket) -> None:
        await ws.accept()
        try:
            while True:
                await ws.receive()
        except WebSocketClosed:
            pass
        try:
            await ws.send("into the void")
        except WebSocketClosed as exc:
            app.state.errors.append(f"late {exc.code}")
        app.state.done.set()

    @app.websocket("/group")
    async def group(request: Request, ws: WebSocket) -> None:
        await ws.accept()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ws.receive)
        finally:
            app.state.done.set()

    return app


async def test_websocket_misuse_is_reported(serve_app: ServeApp) -> None:
    app = edges_app()
    server = await serve_app(app)
    with trio.fail_after(GUARD):
        async with connect(server, "/misuse") as ws:
            assert json.loads(await ws.get_message()) == {"data": "ok"}
            with pytest.raises(ConnectionClosed):
                await ws.get_message()
            assert ws.closed is not None
            assert (ws.closed.code, ws.closed.reason) == (4001, "done")
        await app.state.done.wait()
    assert app.state.errors == [
        "accept() the WebSocket first",
        "accept() the WebSocket first",
        "accept() may only be called once, before close()",
        "closed 4001",
    ]


async def test_close_before_accept_refuses(serve_app: ServeApp) -> None:
    server = await serve_app(edges_app())
    with trio.fail_after(GUARD), pytest.raises(ConnectionRejected) as rejected:
        async with connect(server, "/close-first"):
            pass  # pragma: no cover
    assert rejected.value.status_code == 403


async def test_send_after_the_peer_left(serve_app: ServeApp) -> None:
    app = edges_app()
    server = await serve_app(app)
    with trio.fail_after(GUARD):
        async with connect(server, "/late-send"):
            pass
        await app.state.done.wait()
    assert len(app.state.errors) == 1
    assert app.state.errors[0].startswith("late ")


async def test_closed_inside_an_exception_group_is_quiet(
    serve_app: ServeApp, caplog: pytest.LogCaptureFixture
) -> None:
    app = edges_app()
    server = await serve_app(app)
    with trio.fail_after(GUARD):
        async with connect(server, "/group"):
            pass
        await app.state.done.wait()
        await trio.sleep(0.05)
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_topic_websocket_options(serve_app: ServeApp) -> None:
    app, broker = topics_app()
    allowed = {"news"}

    async def authorize(request: Request, names: list[str]) -> bool:
        await trio.lowlevel.checkpoint()
        return set(names) <= allowed

    app.add_websocket_route(
        "/strict",
        topic_websocket(broker, max_topics=1, subscribe_timeout=0.2, authorize=authorize),
    )
    server = await serve_app(app)
    with trio.fail_after(GUARD):
        for send, error in [
            (b'{"subscribe": ["news"]}', "as a text frame"),
            ('{"subscribe": ["news", "prices"]}', "at most 1 topics"),
            ('{"subscribe": ["prices"]}', "not allowed"),
            (None, "no subscribe message within 0.2 s"),
        ]:
            async with connect(server, "/strict") as ws:
                if send is not None:
                    await ws.send_message(send)
                assert error in json.loads(await ws.get_message())["error"]
                with pytest.raises(ConnectionClosed):
                    await ws.get_message()
                assert ws.closed is not None
                assert ws.closed.code == 1008
        async with connect(server, "/strict") as ws:
            await ws.send_message('{"subscribe": "news"}')
            assert set(json.loads(await ws.get_message())) == {"id"}
    with pytest.raises(ValueError, match="at least 1"):
        topic_websocket(broker, max_topics=0)


async def test_raw_shutdown_before_accept_refuses_with_503(nursery: trio.Nursery) -> None:
    from servers import start_raw

    app = App()
    waiting = trio.Event()

    @app.websocket("/hold")
    async def hold(request: Request, ws: WebSocket) -> None:
        waiting.set()
        await trio.sleep_forever()

    server = await start_raw(nursery, app)
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as stopping:

            async def stop_when_waiting() -> None:
                await waiting.wait()
                await server.stop()

            stopping.start_soon(stop_when_waiting)
            with pytest.raises(ConnectionRejected) as rejected:
                async with connect(server, "/hold"):
                    pass  # pragma: no cover
    assert rejected.value.status_code == 503


async def test_raw_heartbeat_waits_for_silence(nursery: trio.Nursery) -> None:
    """A heartbeat is due only after ``heartbeat_interval`` without any write."""
    from servers import start_raw

    app = App(config=Config(heartbeat_interval=0.15))

    @app.websocket("/chatty")
    async def chatty(request: Request, ws: WebSocket) -> None:
        await ws.accept()
        for _ in range(4):
            await ws.send("tick")
            await trio.sleep(0.1)
        await ws.receive()

    server = await start_raw(nursery, app)
    with trio.fail_after(GUARD):
        stream = await server.open_stream()
        client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        await stream.send_all(client.send(wsproto.events.Request(host="x", target="/chatty")))
        seen: list[object] = []
        while not any(isinstance(e, wsproto.events.Pong) for e in seen):
            client.receive_data(await stream.receive_some(4096))
            seen.extend(client.events())
        ticks = [e for e in seen if isinstance(e, wsproto.events.TextMessage)]
        assert len(ticks) == 4  # no pong while the handler kept writing
        await stream.aclose()


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        (b"GET", [(b"upgrade", b"websocket"), (b"connection", b"Upgrade")], True),
        (b"GET", [(b"upgrade", b"WebSocket"), (b"connection", b"keep-alive, upgrade")], True),
        (b"POST", [(b"upgrade", b"websocket"), (b"connection", b"upgrade")], False),
        (b"GET", [(b"upgrade", b"h2c"), (b"connection", b"upgrade")], False),
        (b"GET", [(b"upgrade", b"websocket"), (b"connection", b"keep-alive")], False),
    ],
)
def test_is_websocket_upgrade(
    method: bytes, headers: list[tuple[bytes, bytes]], expected: bool
) -> None:
    from trio_sse._websocket import is_websocket_upgrade

    assert is_websocket_upgrade(method, headers) is expected


async def test_topic_websocket_with_a_plain_authorize(serve_app: ServeApp) -> None:
    app, broker = topics_app()
    app.add_websocket_route("/open", topic_websocket(broker, authorize=lambda r, names: True))
    server = await serve_app(app)
    with trio.fail_after(GUARD):
        async with connect(server, "/open") as ws:
            await ws.send_message('{"subscribe": ["news"]}')
            assert set(json.loads(await ws.get_message())) == {"id"}
