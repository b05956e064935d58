"""The test kit (``trio_sse.testing``): in-process streams under trio's MockClock.

Every test here runs on ``autojump_clock``: minutes of heartbeats, write
stalls and reconnection delays pass in milliseconds of real time.
"""

from __future__ import annotations

import httpx
import pytest
import trio
import trio.testing

from trio_sse import (
    App,
    Config,
    Event,
    EventSourceConnectionError,
    EventStream,
    Request,
    StreamResponse,
    open_event_source,
)
from trio_sse.testing import open_test_client


def counting_app(*, end_after: int | None = None) -> tuple[App, dict[str, object]]:
    """Numbered events after Last-Event-ID, one a second; records what the server saw."""
    app = App(config=Config(heartbeat_interval=15))
    state: dict[str, object] = {"seen": [], "cancelled_at": None}

    @app.stream("/count")
    async def count(request: Request, stream: EventStream) -> None:
        seen = state["seen"]
        assert isinstance(seen, list)
        seen.append(request.last_event_id)
        n = int(request.last_event_id or 0)
        try:
            for _ in range(end_after if end_after is not None else 10**9):
                n += 1
                await stream.send(Event(f"n{n}", id=str(n)))
                await trio.sleep(1)
        except trio.Cancelled:
            state["cancelled_at"] = trio.current_time()
            raise

    @app.stream("/quiet")
    async def quiet(request: Request, stream: EventStream) -> None:
        await stream.send(Event("hello"))
        await trio.sleep_forever()

    @app.get("/health")
    async def health(request: Request) -> dict[str, str]:
        return {"status": "ok"}

    return app, state


async def test_read_events_and_resume_after_disconnect(autojump_clock: trio.abc.Clock) -> None:
    app, state = counting_app()
    async with open_test_client(app) as client:
        async with client.stream("/count") as stream:
            assert stream.status == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            assert [e.data for e in await stream.events(3)] == ["n1", "n2", "n3"]
            last = stream.last_event_id
            await stream.disconnect()
        await trio.testing.wait_all_tasks_blocked()
        assert state["cancelled_at"] is not None  # the server saw the client go
        async with client.stream("/count", last_event_id=last) as stream:
            assert (await stream.event()).data == "n4"
    assert state["seen"] == [None, "3"]


async def test_heartbeat_arrives_in_virtual_time(autojump_clock: trio.abc.Clock) -> None:
    app, _ = counting_app()
    with trio.fail_after(100):  # virtual seconds
        await heartbeats(app)


async def heartbeats(app: App) -> None:
    async with open_test_client(app) as client, client.stream("/quiet") as stream:
        start = trio.current_time()
        assert (await stream.event()).data == "hello"
        await stream.heartbeat()
        assert trio.current_time() - start == pytest.approx(15)
        await stream.heartbeat()
        assert stream.heartbeats == 2
        assert trio.current_time() - start == pytest.approx(30)


async def test_config_override(autojump_clock: trio.abc.Clock) -> None:
    app, _ = counting_app()
    config = Config(
        heartbeat_interval=2,
        max_stream_lifetime=5,
        stream_end_retry=250,
        stream_end_retry_jitter=0,
    )
    async with open_test_client(app, config=config) as client, client.stream("/quiet") as stream:
        start = trio.current_time()
        assert [e.data for e in await stream.rest()] == ["hello"]
        assert stream.ended
        assert stream.complete
        assert stream.heartbeats == 2
        assert stream.retry == 250
        assert trio.current_time() - start == pytest.approx(5)


async def test_a_client_that_stops_reading(autojump_clock: trio.abc.Clock) -> None:
    app, state = counting_app()
    app.config = Config(heartbeat_interval=15, write_timeout=30)
    async with open_test_client(app) as client, client.stream("/count", unbuffered=True) as stream:
        start = trio.current_time()
        assert (await stream.event()).data == "n1"
        await trio.sleep(120)  # not reading: the server's write blocks
        assert state["cancelled_at"] is not None
        stalled_for = state["cancelled_at"] - start  # type: ignore[operator]
        assert 30 <= stalled_for <= 32  # write_timeout after the blocked write
        await stream.rest()
        assert stream.ended
        assert not stream.complete  # dropped, not ended


async def test_buffered_client_is_never_stalled(autojump_clock: trio.abc.Clock) -> None:
    app, state = counting_app()
    app.config = Config(heartbeat_interval=15, write_timeout=30)
    async with open_test_client(app) as client, client.stream("/count") as stream:
        await trio.sleep(120)
        assert state["cancelled_at"] is None
        assert len(await stream.events(100)) == 100


async def test_open_event_source_reconnects_in_process(autojump_clock: trio.abc.Clock) -> None:
    app, state = counting_app(end_after=2)
    reconnects: list[float] = []
    async with open_test_client(app) as client:
        start = trio.current_time()
        async with open_event_source(
            "/count", client=client.http, on_reconnect=lambda e, d: reconnects.append(d)
        ) as source:
            events = [await anext(source) for _ in range(5)]
        assert [e.last_event_id for e in events] == ["1", "2", "3", "4", "5"]
        assert state["seen"] == [None, "2", "4"]
        assert reconnects == [3.0, 3.0]  # the default reconnection time
        # 2 + 3 + 2 + 3 seconds of virtual time (events one a second, then retry)
        assert trio.current_time() - start == pytest.approx(10)


async def test_stall_deadline_in_virtual_time(autojump_clock: trio.abc.Clock) -> None:
    app, _ = counting_app()
    app.config = Config(heartbeat_interval=None)
    errors: list[Exception | None] = []
    async with open_test_client(app) as client:
        async with open_event_source(
            "/quiet",
            client=client.http,
            stall_timeout=45,
            on_reconnect=lambda e, d: errors.append(e),
        ) as source:
            await anext(source)
            start = trio.current_time()
            await anext(source)
            assert trio.current_time() - start == pytest.approx(45 + 3)
        assert len(errors) == 1
        assert isinstance(errors[0], trio.TooSlowError)


async def test_http_client_for_ordinary_requests(autojump_clock: trio.abc.Clock) -> None:
    app, _ = counting_app()
    async with open_test_client(app) as client:
        response = await client.http.get("/health")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
        async with client.stream("/nowhere") as stream:
            assert stream.status == 404


async def test_errors_come_out_without_a_group(autojump_clock: trio.abc.Clock) -> None:
    app, _ = counting_app()
    with pytest.raises(KeyError):
        async with open_test_client(app):
            raise KeyError("from the test")


async def test_events_raises_when_the_stream_ends_first(autojump_clock: trio.abc.Clock) -> None:
    app, _ = counting_app(end_after=2)
    async with open_test_client(app) as client, client.stream("/count") as stream:
        with pytest.raises(AssertionError, match="ended after 2 of 3 events"):
            await stream.events(3)


async def test_cancelled_wait_for_an_event_reconnects_at_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    app, state = counting_app()  # an event a second
    async with open_test_client(app) as client:
        async with open_event_source("/count", client=client.http) as source:
            assert (await anext(source)).data == "n1"
            with trio.move_on_after(0.5):
                await anext(source)  # nothing within 0.5 s: cancelled
            start = trio.current_time()
            assert (await anext(source)).data == "n2"  # nothing lost
            assert trio.current_time() - start == 0  # no reconnection delay
            assert source.connections == 2
        assert state["seen"] == [None, "1"]


async def test_cancelled_read_of_a_post_stream_is_not_resent(
    autojump_clock: trio.abc.Clock,
) -> None:
    app = App()
    posts: list[bytes] = []

    @app.post("/chat")
    async def chat(request: Request) -> StreamResponse:
        posts.append(await request.body())

        async def run(stream: EventStream) -> None:
            await stream.send(Event("token"))
            await trio.sleep_forever()

        return StreamResponse(run)

    async def read_cancel_read(http: httpx.AsyncClient) -> None:
        async with open_event_source("/chat", client=http, method="POST", json={"q": 1}) as source:
            assert (await anext(source)).data == "token"
            with trio.move_on_after(1):
                await anext(source)
            await anext(source)

    async with open_test_client(app) as client:
        with pytest.raises(EventSourceConnectionError, match="not idempotent"):
            await read_cancel_read(client.http)
    assert posts == [b'{"q":1}']


async def test_background_task_error_comes_out_unwrapped(autojump_clock: trio.abc.Clock) -> None:
    app = App()

    @app.background
    async def ticker() -> None:
        await trio.sleep(5)
        raise ValueError("ticker broke")

    with pytest.raises(ValueError, match="ticker broke"):
        async with open_test_client(app):
            await trio.sleep(10)


async def test_stall_deadline_while_waiting_for_headers(autojump_clock: trio.abc.Clock) -> None:
    app = App()
    calls: list[float] = []

    @app.get("/slow")
    async def slow(request: Request) -> StreamResponse:
        calls.append(trio.current_time())
        if len(calls) == 1:
            await trio.sleep_forever()  # no headers, ever

        async def run(stream: EventStream) -> None:
            await stream.send(Event("at last"))
            await trio.sleep_forever()

        return StreamResponse(run)

    errors: list[Exception | None] = []
    async with (
        open_test_client(app) as client,
        open_event_source(
            "/slow",
            client=client.http,
            stall_timeout=20,
            on_reconnect=lambda e, d: errors.append(e),
        ) as source,
    ):
        assert (await anext(source)).data == "at last"
    assert calls == [0, 23]  # the stall deadline, then the reconnection time
    assert len(errors) == 1
    assert isinstance(errors[0], trio.TooSlowError)
    assert "no response" in str(errors[0])


async def test_a_slow_subscriber_is_evicted_and_resumes(autojump_clock: trio.abc.Clock) -> None:
    from trio_sse import Broker, TopicOptions, topic_stream

    broker = Broker(TopicOptions(buffer_size=4, history_size=1000))
    topic = broker.declare("prices")
    app = App(config=Config(heartbeat_interval=None, write_timeout=30))
    app.add_route("/prices", topic_stream(broker, ["prices"]))
    async with open_test_client(app) as client:
        async with client.stream("/prices", unbuffered=True) as stream:
            await trio.testing.wait_all_tasks_blocked()
            for n in range(200):  # the client reads nothing meanwhile
                topic.publish_nowait(Event(f"p{n}"))
            await trio.sleep(60)
            got = await stream.rest()  # what was on its way, then the end
            assert stream.ended
            assert topic.stats().evicted == 1
            last = stream.last_event_id
        async with client.stream("/prices", last_event_id=last) as stream:
            resumed = await stream.events(200 - len(got))
        assert [e.data for e in got + resumed] == [f"p{n}" for n in range(200)]
