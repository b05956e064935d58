"""The exchange (``trio_sse/_exchange.py``) against a fake transport, on the autojump clock.

Both servers answer every request through one :class:`Exchange`; these tests
pin its behaviour once, without sockets or HTTP framing: dispatch and error
mapping, every deadline at its exact instant (heartbeat, write stall, stream
lifetime, token expiry, body timeout), disconnect cancelling the handler,
the final ``retry:``, body limits and the direct-write path. The end-to-end
behaviour on real servers is ``test_app_both_servers.py``.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest
import trio
import trio.lowlevel
import trio.testing

from trio_sse import (
    App,
    Broker,
    Config,
    Event,
    EventStream,
    HTTPException,
    Request,
    Response,
    topic_stream,
)
from trio_sse._exchange import Exchange
from trio_sse._http import StreamResponse
from trio_sse._idle import IdleStreams
from trio_sse._limits import ClientLimits
from trio_sse._request import Headers
from trio_sse._transport import BodyTooLarge

HEARTBEAT = b":\n\n"
END = b"<end>"


class Gone:
    """The peer leaving: sets an event (``wait_disconnect``, the companion's wait)
    and closes the peer's end of a socket pair (a parked stream watches the
    other end's descriptor)."""

    def __init__(self, peer: socket.socket | None) -> None:
        self.event = trio.Event()
        self.peer = peer

    def set(self) -> None:
        self.event.set()
        if self.peer is not None:
            self.peer.close()

    async def wait(self) -> None:
        await self.event.wait()


@pytest.fixture
async def idle(nursery: trio.Nursery) -> IdleStreams:
    """The server's watch over idle parked streams, running for the test."""
    service = IdleStreams()
    nursery.start_soon(service.run)
    return service


class FakeTransport:
    """Records what the exchange sends; the test controls the peer.

    ``room``: how many bytes ``write_now`` takes at once (``None``: no direct
    path, everything goes to ``write_rest``). ``stall``: ``write_rest`` never
    returns (a peer that stopped reading).
    """

    def __init__(self, *, room: int | None = None) -> None:
        self.client: tuple[str, int] | None = ("192.0.2.1", 4000)
        self.heartbeat = HEARTBEAT
        self.direct = room is not None
        self.room = room
        self.stopping = False
        self.stall = False
        # A direct transport has a descriptor, watched while a stream is parked.
        self.sockets = socket.socketpair() if self.direct else None
        self.fd = None if self.sockets is None else self.sockets[1].fileno()
        self.gone = Gone(None if self.sockets is None else self.sockets[0])
        self.body: bytes | None = None
        self.body_arrived = trio.Event()
        self.closing = False
        self.exchange: Exchange | None = None
        self.responses: list[tuple[int, dict[str, str], bytes]] = []
        self.heads: list[int] = []
        self.writes: list[tuple[float, bytes]] = []  # (trio time, bytes), in order
        self.ended = False

    def encoder(self) -> Callable[[Event], bytes]:
        return Event.encode

    async def send_response(self, response: Response, head_only: bool) -> None:
        self.responses.append((response.status, dict(response.headers), response.body))
        assert self.exchange is not None
        await self.exchange.write(b"" if head_only else response.body, last=True)

    async def start_stream(self, response: StreamResponse, head_only: bool) -> None:
        self.heads.append(response.status)
        assert self.exchange is not None
        await self.exchange.write(b"", last=head_only)

    def stream_tail(self, final: bytes) -> bytes:
        return final + END

    def write_now(self, data: bytes) -> bytes | None:
        if self.room is None:
            return data
        taken, rest = data[: self.room], data[self.room :]
        if taken:
            self.writes.append((trio.current_time(), taken))
        return rest or None

    async def write_rest(self, data: bytes, last: bool) -> None:
        if self.stall:
            await trio.sleep_forever()
        await trio.lowlevel.checkpoint()
        if data:
            self.writes.append((trio.current_time(), data))
        self.ended = self.ended or last

    async def wait_disconnect(self) -> None:
        await self.gone.wait()

    async def receive_body(self, limit: int) -> bytes:
        await self.body_arrived.wait()
        assert self.body is not None
        if len(self.body) > limit:
            raise BodyTooLarge()
        return self.body

    def close_after(self) -> None:
        self.closing = True

    def data(self) -> bytes:
        return b"".join(data for _, data in self.writes)

    def __del__(self) -> None:
        for sock in self.sockets or ():
            sock.close()


def make(
    app: App, idle: IdleStreams | None = None, **transport: int | None
) -> tuple[Exchange, FakeTransport]:
    """An exchange on a fake transport; topic streams park in ``idle`` if it is direct."""
    fake = FakeTransport(**transport)
    idle = idle if fake.fd is not None else None
    exchange = Exchange(app, app.config, fake, ClientLimits(app.config), idle, fake.fd or 0)
    fake.exchange = exchange
    return exchange, fake


def request(
    app: App, exchange: Exchange, method: str = "GET", target: bytes = b"/", **headers: str
) -> Request:
    return Request(
        method,
        target,
        Headers((k.encode(), v.encode()) for k, v in headers.items()),
        app=app,
        client=("192.0.2.1", 4000),
        body_reader=exchange.read_body,
    )


async def run(app: App, method: str = "GET", target: bytes = b"/") -> FakeTransport:
    exchange, fake = make(app)
    await exchange.dispatch(request(app, exchange, method, target))
    return fake


# -- dispatch and errors --------------------------------------------------------


async def test_404_405_and_head() -> None:
    app = App()

    @app.get("/only-get")
    async def only_get(request: Request) -> str:
        return "body"

    assert (await run(app, "GET", b"/nowhere")).responses == [(404, {}, b"not found\n")]
    fake = await run(app, "POST", b"/only-get")
    assert fake.responses == [(405, {"allow": "GET, HEAD"}, b"method not allowed\n")]
    fake = await run(app, "HEAD", b"/only-get")
    assert fake.responses[0][0] == 200
    assert (fake.data(), fake.ended) == (b"", True)


@pytest.mark.parametrize(
    ("raised", "status", "body"),
    [
        (HTTPException(403, "no", {"x-why": "policy"}), 403, b"no\n"),
        (RuntimeError("kaboom"), 500, b"internal server error\n"),
    ],
)
async def test_handler_exceptions_are_mapped(
    raised: Exception, status: int, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    app = App()

    @app.get("/")
    async def fails(request: Request) -> str:
        raise raised

    fake = await run(app)
    assert [(s, b) for s, _, b in fake.responses] == [(status, body)]
    assert not fake.closing  # the response is complete: the connection stays usable
    logged = [r for r in caplog.records if r.name == "trio_sse.exchange"]
    assert len(logged) == (status == 500)


@pytest.mark.parametrize(
    "response",
    [
        Response("x", status=199),
        Response("x", status=1000),
        Response("x", headers={"x-bad": "a\r\nb"}),
        Response("x", headers={"bad name": "v"}),
    ],
)
async def test_invalid_responses_become_500(
    response: Response, caplog: pytest.LogCaptureFixture
) -> None:
    app = App()

    @app.get("/")
    async def bad(request: Request) -> Response:
        return response

    fake = await run(app)
    assert [(s, b) for s, _, b in fake.responses] == [(500, b"internal server error\n")]
    assert "returned an invalid response" in caplog.text


async def test_too_many_streams_from_one_client_is_429() -> None:
    app = App(config=Config(max_streams_per_client=1))

    @app.stream("/s")
    async def s(request: Request, stream: EventStream) -> None:
        await trio.sleep_forever()

    limits = ClientLimits(app.config)
    fakes = [FakeTransport(), FakeTransport()]
    async with trio.open_nursery() as nursery:
        for fake in fakes:
            exchange = fake.exchange = Exchange(app, app.config, fake, limits)
            nursery.start_soon(exchange.dispatch, request(app, exchange, target=b"/s"))
            await trio.testing.wait_all_tasks_blocked()
        assert fakes[0].heads == [200]
        assert fakes[1].responses[0][0] == 429
        assert fakes[1].responses[0][1] == {"retry-after": "1"}
        fakes[0].gone.set()
    assert limits.refusals["max_streams_per_client"] == 1


# -- stream deadlines -------------------------------------------------------------


def stream_app(config: Config) -> App:
    app = App(config=config)

    @app.stream("/s")
    async def s(request: Request, stream: EventStream) -> None:
        await stream.send(Event("first"))
        await trio.sleep_forever()

    return app


async def test_heartbeats_at_their_exact_instants(autojump_clock: trio.testing.MockClock) -> None:
    app = App(config=Config(heartbeat_interval=15))

    @app.stream("/s")
    async def s(request: Request, stream: EventStream) -> None:
        await trio.sleep(17)  # silent: a heartbeat at 15
        await stream.send(Event("at 17"))  # the timer still says 30: not moved yet
        await trio.sleep(23)  # ... so at 30 it finds 2 s to go: the heartbeat at 32
        await stream.send(Event("at 40"))  # 7 s before the next: the timer moves to 55
        await trio.sleep(46)

    start = trio.current_time()
    exchange, fake = make(app)
    await exchange.dispatch(request(app, exchange, target=b"/s"))
    times = [(round(t - start, 6), data) for t, data in fake.writes]
    assert times == [
        (15, HEARTBEAT),
        (17, Event("at 17").encode()),
        (32, HEARTBEAT),
        (40, Event("at 40").encode()),
        (55, HEARTBEAT),
        (70, HEARTBEAT),
        (85, HEARTBEAT),
        (86, END),
    ]


async def test_a_busy_stream_gets_no_heartbeat(autojump_clock: trio.testing.MockClock) -> None:
    app = App(config=Config(heartbeat_interval=15))

    @app.stream("/s")
    async def s(request: Request, stream: EventStream) -> None:
        for i in range(10):
            await stream.send(Event(str(i)))
            await trio.sleep(10)

    exchange, fake = make(app)
    await exchange.dispatch(request(app, exchange, target=b"/s"))
    assert HEARTBEAT not in [data for _, data in fake.writes]


async def test_stream_lifetime_ends_with_the_final_retry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = Config(
        max_stream_lifetime=60,
        stream_end_retry=2500,
        stream_end_retry_jitter=0,
        heartbeat_interval=None,
    )
    app = stream_app(config)
    start = trio.current_time()
    exchange, fake = make(app)
    await exchange.dispatch(request(app, exchange, target=b"/s"))
    assert trio.current_time() - start == pytest.approx(60)
    assert fake.data().endswith(Event("first").encode() + b"retry: 2500\n\n" + END)
    assert fake.writes[-1][0] - start == pytest.approx(60)


async def test_token_expiry_ends_the_stream_like_the_lifetime(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = App(
        config=Config(max_stream_lifetime=600, stream_end_retry_jitter=0, heartbeat_interval=None)
    )

    async def handler(stream: EventStream) -> None:
        await trio.sleep_forever()

    @app.get("/s")
    async def s(request: Request) -> StreamResponse:
        return StreamResponse(handler, expires_at=time.time() + 30)

    start = trio.current_time()
    fake = await run(app, "GET", b"/s")
    assert trio.current_time() - start == pytest.approx(30, abs=0.5)
    assert fake.data() == b"retry: 1000\n\n" + END


async def test_shutdown_ends_a_new_stream_at_once(autojump_clock: trio.testing.MockClock) -> None:
    app = stream_app(Config(stream_end_retry_jitter=0))
    exchange, fake = make(app)
    fake.stopping = True
    await exchange.dispatch(request(app, exchange, target=b"/s"))
    assert fake.data() == b"retry: 1000\n\n" + END


async def test_disconnect_cancels_the_handler_without_retry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = App()
    cancelled_at: list[float] = []

    @app.stream("/s")
    async def s(request: Request, stream: EventStream) -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled_at.append(trio.current_time())
            raise

    start = trio.current_time()
    exchange, fake = make(app)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(exchange.dispatch, request(app, exchange, target=b"/s"))
        await trio.sleep(5)
        fake.gone.set()
    assert [t - start for t in cancelled_at] == [pytest.approx(5)]
    assert fake.data() == b""  # no retry: the client left (and the tail's write was cancelled)


async def test_a_stalled_write_cancels_the_stream_at_write_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = App(config=Config(write_timeout=7, heartbeat_interval=None))
    cancelled_at: list[float] = []

    @app.stream("/s")
    async def s(request: Request, stream: EventStream) -> None:
        try:
            await stream.send(Event("never arrives"))
        except trio.Cancelled:
            cancelled_at.append(trio.current_time())
            raise

    exchange, fake = make(app)
    req = request(app, exchange, target=b"/s")
    start = trio.current_time()
    # The head goes out; then the peer stops reading.
    original = fake.start_stream

    async def head_then_stall(response: StreamResponse, head_only: bool) -> None:
        await original(response, head_only)
        fake.stall = True

    fake.start_stream = head_then_stall  # type: ignore[method-assign]
    with trio.fail_after(100):
        await exchange.dispatch(req)
    assert [t - start for t in cancelled_at] == [pytest.approx(7)]
    assert fake.closing
    # The peer is treated as gone: no tail (not even an attempt, which would stall again).
    assert fake.data() == b""
    assert trio.current_time() - start == pytest.approx(7)


async def test_stream_handler_exception_ends_the_stream_without_retry(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    app = App()

    @app.stream("/s")
    async def s(request: Request, stream: EventStream) -> None:
        await stream.send(Event("before"))
        raise ValueError("broke")

    fake = await run(app, "GET", b"/s")
    assert fake.data() == Event("before").encode() + END
    [record] = [r for r in caplog.records if r.name == "trio_sse.exchange"]
    assert "stream handler for /s raised" in record.getMessage()


# -- request bodies -----------------------------------------------------------------


async def test_body_limits_and_timeout(autojump_clock: trio.testing.MockClock) -> None:
    app = App(config=Config(max_body_size=10, body_timeout=12))

    @app.post("/")
    async def echo(request: Request) -> bytes:
        return await request.body()

    # Declared too large: refused before reading.
    exchange, fake = make(app)
    exchange.declared_length = 11
    await exchange.dispatch(request(app, exchange, "POST"))
    assert fake.responses[0][:1] == (413,)
    assert fake.closing
    # Received too large.
    exchange, fake = make(app)
    fake.body = b"x" * 11
    fake.body_arrived.set()
    await exchange.dispatch(request(app, exchange, "POST"))
    assert fake.responses[0][0] == 413
    assert fake.closing
    # Never arrives: 408 at exactly body_timeout.
    exchange, fake = make(app)
    start = trio.current_time()
    await exchange.dispatch(request(app, exchange, "POST"))
    assert fake.responses[0][0] == 408
    assert fake.closing
    assert trio.current_time() - start == pytest.approx(12)
    # Within the limits.
    exchange, fake = make(app)
    fake.body = b"x" * 10
    fake.body_arrived.set()
    await exchange.dispatch(request(app, exchange, "POST"))
    assert fake.responses == [(200, {}, b"x" * 10)]
    assert not fake.closing


# -- the direct path ---------------------------------------------------------------


async def test_direct_writes_and_the_flush_of_what_did_not_fit(
    autojump_clock: trio.testing.MockClock, idle: IdleStreams
) -> None:
    """A topic stream on a direct transport runs parked (``_parked.py``), in order."""
    app = App(config=Config(heartbeat_interval=None))
    broker = Broker()
    topic = broker.topic("t")
    app.add_route("/s", topic_stream(broker, ["t"]))
    exchange, fake = make(app, idle, room=4)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(exchange.dispatch, request(app, exchange, target=b"/s"))
        await trio.testing.wait_all_tasks_blocked()
        assert len(topic._subscribers) == 1
        one = topic.publish_nowait(Event("one"))  # 4 bytes written now, the rest kept
        two = topic.publish_nowait(Event("two"))  # bytes pending: queued, to keep order
        assert fake.data() == one.encode()[:4]
        await trio.testing.wait_all_tasks_blocked()
        assert fake.data() == one.encode() + two.encode()
        three = topic.publish_nowait(Event("three"))  # parked again: written at once
        assert fake.data() == one.encode() + two.encode() + three.encode()[:4]
        await trio.testing.wait_all_tasks_blocked()
        fake.gone.set()  # the peer leaves: no tail, the subscription ends
    assert fake.data() == one.encode() + two.encode() + three.encode()
    assert not topic._subscribers
    assert fake.closing
    # No direct path: the general writer, through the subscription's channel.
    exchange, fake = make(app)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(exchange.dispatch, request(app, exchange, target=b"/s"))
        await trio.testing.wait_all_tasks_blocked()
        four = topic.publish_nowait(Event("four"))
        await trio.testing.wait_all_tasks_blocked()
        start = Event(id=three.id).encode()  # a fresh subscriber's position
        assert fake.data() == start + four.encode()
        topic.close()
    assert fake.data() == start + four.encode() + END


async def test_writes_by_many_tasks_keep_their_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = App(config=Config(heartbeat_interval=None))

    @app.stream("/s")
    async def s(request: Request, stream: EventStream) -> None:
        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(stream.send_many, [Event(f"{i}a"), Event(f"{i}b")])
                await trio.lowlevel.checkpoint()

    fake = await run(app, "GET", b"/s")
    frames = fake.data().split(b"\n\n")
    pairs = [frames[i : i + 2] for i in range(0, 10, 2)]
    assert all(a[:-1] == b[:-1] for a, b in pairs), frames


async def test_no_tail_after_a_write_cut_midway_by_the_lifetime(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The lifetime ends a stream in the middle of a slow write: its framing is lost."""
    app = App(config=Config(write_timeout=30, max_stream_lifetime=10, heartbeat_interval=None))

    @app.stream("/s")
    async def s(request: Request, stream: EventStream) -> None:
        fake.stall = True
        try:
            await stream.send(Event("cut midway"))
        finally:
            fake.room = 1000  # the socket has room again: only the exchange stops the tail

    exchange, fake = make(app)
    start = trio.current_time()
    with trio.fail_after(100):
        await exchange.dispatch(request(app, exchange, target=b"/s"))
    assert trio.current_time() - start == pytest.approx(10)
    assert fake.data() == b""
