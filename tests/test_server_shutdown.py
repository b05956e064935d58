"""Graceful shutdown and the lifespan of the raw server, on the autojump clock.

Cancelling :func:`trio_sse.serve` (here: the scope around
:meth:`trio_sse._server.Server.run`) must stop accepting, end every stream with the
final ``retry:`` event and the terminating chunk, close idle keep-alive
connections, let in-flight requests finish, and return within
``shutdown_grace_period`` whatever the clients do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import h11
import pytest
import trio
import trio.testing
from clients import Client, MemoryListener
from servers import serving

from trio_sse import App, Config, Event, EventStream, Request, StreamResponse
from trio_sse._server import Server

FINAL_RETRY = b"retry: 1000\n\n"
FINAL_TAIL = b"%x\r\n%b\r\n0\r\n\r\n" % (len(FINAL_RETRY), FINAL_RETRY)


def make_app() -> tuple[App, dict[str, int]]:
    app = App()
    counts = {"started": 0, "cancelled": 0}

    @app.get("/")
    async def index(request: Request) -> str:
        return "hello"

    @app.get("/slow/{seconds}")
    async def slow(request: Request) -> str:
        await trio.sleep(float(request.path_params["seconds"]))
        return "slow done"

    @app.stream("/stream")
    async def stream(request: Request, stream: EventStream) -> None:
        counts["started"] += 1
        try:
            await stream.send(Event("hi", id="1"))
            await trio.sleep_forever()
        finally:
            counts["cancelled"] += 1

    return app, counts


async def open_stream(listener: MemoryListener) -> Client:
    client = await listener.client()
    await client.send_request("GET", "/stream")
    assert (await client.head()).status_code == 200
    assert [e.data for e in await client.events(1)] == ["hi"]
    return client


async def test_1000_streams_all_end_properly_within_the_grace_period(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app, counts = make_app()
    cfg = Config(stream_end_retry_jitter=0, shutdown_grace_period=5)
    n = 1000
    with trio.fail_after(60):
        async with serving(app, cfg) as running, trio.open_nursery() as readers:
            clients = [await open_stream(running.listener) for _ in range(n)]
            assert counts["started"] == n
            assert len(running.server.connections) == n
            ended: list[Client] = []

            async def read_to_end(client: Client) -> None:
                body = await client.rest()
                assert body.ended == "EndOfMessage"
                assert body.retry == 1000
                assert body.events == []
                assert client.raw.endswith(FINAL_TAIL)
                await client.aclose()
                ended.append(client)

            for client in clients:
                readers.start_soon(read_to_end, client)
            took = await running.shutdown()
            assert took < cfg.shutdown_grace_period
            assert len(ended) == n
            assert counts["cancelled"] == n
            assert running.server.connections == set()
            assert running.listener.closed


async def test_streams_end_even_if_clients_never_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Clients read the final chunk but keep their end open: the server's
    # lingering close is bounded by close_linger.
    app, _ = make_app()
    cfg = Config(stream_end_retry_jitter=0, shutdown_grace_period=5, close_linger=1)
    with trio.fail_after(60):
        async with serving(app, cfg) as running:
            clients = [await open_stream(running.listener) for _ in range(20)]
            took = await running.shutdown()
            assert took == 1
            for client in clients:
                body = await client.rest()
                assert body.retry == 1000
                assert client.raw.endswith(FINAL_TAIL)


async def test_client_that_does_not_read_is_cut_at_the_grace_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app, _ = make_app()
    cfg = Config(
        stream_end_retry_jitter=0,
        shutdown_grace_period=5,
        write_timeout=60,
        heartbeat_interval=None,
    )
    stuck = MemoryListener(lockstep=True)
    with trio.fail_after(120):
        async with serving(app, cfg, stuck) as running:
            good = await open_stream(running.listener)
            bad = await open_stream(stuck)  # reads the head and one event, then stops
            await trio.testing.wait_all_tasks_blocked()  # the event's write is complete
            took = await running.shutdown()
            assert took == 5
            assert running.server.connections == set()
            body = await good.rest()
            assert body.retry == 1000
            assert good.raw.endswith(FINAL_TAIL)
            # The stuck client was cut (whatever the lockstep stream still
            # holds of the abandoned write, then the end).
            await bad.wait_closed()


async def test_idle_keep_alive_connections_close_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app, _ = make_app()
    cfg = Config(shutdown_grace_period=5, keep_alive_timeout=60)
    with trio.fail_after(60):
        async with serving(app, cfg) as running:
            clients = [await running.listener.client() for _ in range(10)]
            for client in clients[:5]:
                assert (await client.request()).status == 200  # now idle, kept alive
            # clients[5:] never sent anything: also idle.
            took = await running.shutdown()
            assert took < cfg.shutdown_grace_period
            for client in clients:
                assert await client.wait_closed() == b""


async def test_in_flight_request_finishes_within_the_grace_period(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app, _ = make_app()
    cfg = Config(shutdown_grace_period=5)
    with trio.fail_after(60):
        async with serving(app, cfg) as running:
            client = await running.listener.client()
            await client.send_request("GET", "/slow/3")
            await trio.sleep(1)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(running.shutdown)
                reply = await client.reply()
                await client.aclose()
            assert (reply.status, reply.body) == (200, b"slow done")
            assert reply.header("connection") == "close"
            # The handler's remaining 2 s, not the whole grace period.
            assert running.stopped_at == 3


async def test_request_slower_than_the_grace_period_is_cut(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app, _ = make_app()
    cfg = Config(shutdown_grace_period=5)
    with trio.fail_after(60):
        async with serving(app, cfg) as running:
            client = await running.listener.client()
            await client.send_request("GET", "/slow/100")
            await trio.sleep(1)
            took = await running.shutdown()
            assert took == 5
            assert await client.wait_closed() == b""


async def test_partial_head_at_shutdown_is_cut_at_the_grace_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app, _ = make_app()
    cfg = Config(shutdown_grace_period=5, header_timeout=60)
    with trio.fail_after(120):
        async with serving(app, cfg) as running:
            client = await running.listener.client()
            await client.send_raw(b"GET / HTTP/1.1\r\n")
            await trio.sleep(1)
            took = await running.shutdown()
            assert took == 5
            await client.wait_closed()


async def test_stream_opened_during_shutdown_ends_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A request already being handled when shutdown begins, which then
    # turns into a stream, gets the final event right after its head.
    app = App()
    gate = trio.Event()

    @app.get("/late")
    async def late(request: Request) -> object:
        await gate.wait()

        async def run(stream: EventStream) -> None:
            await stream.send("never")
            await trio.sleep_forever()

        return StreamResponse(run)

    with trio.fail_after(60):
        async with serving(app, Config(stream_end_retry_jitter=0)) as running:
            client = await running.listener.client()
            await client.send_request("GET", "/late")
            await trio.testing.wait_all_tasks_blocked()
            running.scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
            await client.head()
            body = await client.rest()
            assert body.events == []
            assert body.retry == 1000
            assert client.raw.endswith(FINAL_TAIL)


async def test_shutdown_with_no_connections_is_immediate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app, _ = make_app()
    with trio.fail_after(60):
        async with serving(app, Config()) as running:
            assert await running.shutdown() == 0
            assert running.listener.closed


async def test_no_new_connections_after_shutdown_began(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app, _ = make_app()
    with trio.fail_after(60):
        async with serving(app, Config()) as running:
            await running.shutdown()
            try:
                await running.listener.connect()
            except trio.BrokenResourceError:
                pass
            else:  # pragma: no cover
                raise AssertionError("connected after shutdown")


# -- lifespan and background tasks ----------------------------------------------------


async def test_lifespan_wraps_serving_and_background_tasks_are_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[str] = []

    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[None]:
        log.append("enter")
        app.state.greeting = "hello from lifespan"
        yield
        log.append("exit")

    app = App(lifespan=lifespan)
    ticks: list[float] = []

    @app.background
    async def ticker() -> None:
        try:
            while True:
                ticks.append(trio.current_time())
                await trio.sleep(1)
        except trio.Cancelled:
            log.append("ticker cancelled")
            raise

    @app.get("/")
    async def index(request: Request) -> str:
        log.append("request")
        return str(request.app.state.greeting)

    with trio.fail_after(60):
        start = trio.current_time()
        async with serving(app, Config()) as running:
            assert log == ["enter"]
            client = await running.listener.client()
            assert (await client.request()).body == b"hello from lifespan"
            await trio.sleep(3.5)
            await client.aclose()
            await running.shutdown()
            assert log == ["enter", "request", "ticker cancelled", "exit"]
            assert ticks == [start + n for n in range(4)]


async def test_background_tasks_outlive_in_flight_requests(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # In-flight requests may finish during the grace period; one that needs a
    # background worker must still have it.
    app = App()
    send, receive = trio.open_memory_channel[tuple[int, trio.Event, list[int]]](0)

    @app.background
    async def worker() -> None:
        async with receive:
            async for n, done, out in receive:
                await trio.sleep(1)
                out.append(n * 2)
                done.set()

    @app.get("/double/{n}")
    async def double(request: Request) -> str:
        done, out = trio.Event(), list[int]()
        await send.send((int(request.path_params["n"]), done, out))
        await done.wait()
        return str(out[0])

    with trio.fail_after(60):
        async with serving(app, Config(shutdown_grace_period=5)) as running:
            client = await running.listener.client()
            assert (await client.request("GET", "/double/2")).body == b"4"
            await client.send_request("GET", "/double/21")
            await trio.sleep(0.5)
            shutdown_at = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(running.shutdown)
                reply = await client.reply()
                await client.aclose()
            assert (reply.status, reply.body) == (200, b"42")
            assert running.stopped_at == shutdown_at + 0.5


async def test_chunked_request_body_in_flight_at_shutdown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = App()

    @app.post("/upload")
    async def upload(request: Request) -> str:
        return str(len(await request.body()))

    with trio.fail_after(60):
        async with serving(app, Config(shutdown_grace_period=5)) as running:
            client = await running.listener.client()
            await client.send(
                h11.Request(
                    method="POST",
                    target="/upload",
                    headers=[("host", "t"), ("transfer-encoding", "chunked")],
                ),
                h11.Data(data=b"x" * 10),
            )
            await trio.sleep(1)
            running.scope.cancel()
            await trio.sleep(1)
            await client.send(h11.Data(data=b"y" * 5), h11.EndOfMessage())
            reply = await client.reply()
            assert (reply.status, reply.body) == (200, b"15")
            assert reply.header("connection") == "close"


async def test_lifespan_clean_up_can_await(autojump_clock: trio.testing.MockClock) -> None:
    # The docs' lifespan closes a resource with an await in its clean-up.
    log: list[str] = []

    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await trio.sleep(1)  # e.g. await pool.aclose()
            log.append("closed")

    with trio.fail_after(60):
        async with serving(App(lifespan=lifespan), Config()) as running:
            assert await running.shutdown() == 1
    assert log == ["closed"]


async def test_hanging_start_up_can_be_cancelled(autojump_clock: trio.testing.MockClock) -> None:
    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[None]:
        await trio.sleep_forever()
        yield  # type: ignore[unreachable]  # pragma: no cover

    server = Server(App(lifespan=lifespan), Config())
    with trio.fail_after(60):
        with trio.move_on_after(3) as scope:
            await server.run([MemoryListener()])
        assert scope.cancelled_caught


async def test_failing_background_task_stops_the_server(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app, _ = make_app()

    @app.background
    async def doomed() -> None:
        await trio.sleep(10)
        raise RuntimeError("background failure")

    listener = MemoryListener()
    server = Server(app, Config(stream_end_retry_jitter=0, shutdown_grace_period=5))
    with trio.fail_after(60):
        client: Client | None = None
        with pytest.RaisesGroup(
            pytest.RaisesExc(RuntimeError, match="^background failure$"), flatten_subgroups=True
        ):
            async with trio.open_nursery() as nursery:
                await nursery.start(server.run, [listener])
                client = await open_stream(listener)
                nursery.start_soon(client.rest)
        # The stream was still ended properly on the way out.
        assert client is not None
        assert client.raw.endswith(FINAL_TAIL)
        assert trio.current_time() <= 10 + 5
