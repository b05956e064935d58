"""Topic streams, the publish endpoint and metrics over real loopback sockets.

Streams are read with the project's own client (``open_event_source``),
other requests with httpx.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio
from brokers import make_broker
from clients import Client
from clients import http_request as request
from servers import serving, start_raw

from trio_sse import App, Config, Event, EventSource, MessageEvent, Request, open_event_source
from trio_sse._broker import Broker
from trio_sse._options import TopicOptions
from trio_sse._routes import metrics_endpoint, publish_endpoint, topic_stream


def make_app(broker: Broker, **stream_kw: object) -> App:
    app = App(config=Config(heartbeat_interval=None))
    app.add_route("/events/{topic}", topic_stream(broker, **stream_kw))  # type: ignore[arg-type]
    app.add_route("/events", topic_stream(broker, max_topics=3))

    def allow(request: Request, topic: str) -> bool:
        return request.headers.get("authorization") == "Bearer ok"

    app.add_route("/publish/{topic}", publish_endpoint(broker, authorize=allow), ["POST"])
    app.add_route("/metrics", metrics_endpoint(broker))
    return app


@pytest.fixture
async def broker() -> Broker:
    b = make_broker(create_topics=False)
    b.declare("ticker")
    b.declare("news")
    b.declare("scores")
    b.declare("more")
    return b


def open_stream(port: int, target: str, headers: list[tuple[str, str]] | None = None) -> Any:
    """``open_event_source`` on the test server, failing instead of reconnecting."""
    return open_event_source(
        f"http://127.0.0.1:{port}{target}", headers=dict(headers or []), max_reconnects=0
    )


async def take(source: EventSource, n: int) -> list[MessageEvent]:
    return [await anext(source) for _ in range(n)]


async def start(nursery: trio.Nursery, app: App, config: Config | None = None) -> int:
    return (await start_raw(nursery, app, config)).port


async def test_stream_one_topic_and_resume(nursery: trio.Nursery, broker: Broker) -> None:
    port = await start(nursery, make_app(broker))
    ticker = broker.topic("ticker")
    with trio.fail_after(5):
        async with open_stream(port, "/events/ticker") as source:
            assert source.response is not None
            assert source.response.status_code == 200
            assert source.response.headers["content-type"] == "text/event-stream; charset=utf-8"
            await trio.testing.wait_all_tasks_blocked()
            for i in range(3):
                ticker.publish_nowait(Event(f"tick {i}"))
            events = await take(source, 3)
            assert [e.data for e in events] == ["tick 0", "tick 1", "tick 2"]
            ids = [e.last_event_id for e in events]
            assert len(set(ids)) == 3
        ticker.publish_nowait(Event("tick 3"))
        ticker.publish_nowait(Event("tick 4"))
        # A reconnecting browser sends Last-Event-ID and misses nothing.
        async with open_stream(port, "/events/ticker", [("last-event-id", ids[0])]) as source:
            events = await take(source, 4)
            assert [e.data for e in events] == ["tick 1", "tick 2", "tick 3", "tick 4"]
        # Clients that cannot set headers use the lastEventId query parameter.
        async with open_stream(port, f"/events/ticker?lastEventId={ids[2]}") as source:
            assert [e.data for e in await take(source, 2)] == ["tick 3", "tick 4"]


async def test_fresh_subscriber_learns_its_position(nursery: trio.Nursery, broker: Broker) -> None:
    """An id-only event first: a client that drops before any event still resumes exactly."""
    port = await start(nursery, make_app(broker))
    first = broker.topic("ticker").publish_nowait(Event("old"))
    with trio.fail_after(5):
        async with open_stream(port, "/events/ticker") as source:
            while source.last_event_id != first.id:
                # (A cancelled read reconnects, with the id received so far.)
                with trio.move_on_after(0.05):
                    await anext(source)
        broker.topic("ticker").publish_nowait(Event("missed"))
        last = source.last_event_id
        async with open_stream(port, "/events/ticker", [("last-event-id", last)]) as source:
            assert [e.data for e in await take(source, 1)] == ["missed"]


async def test_unknown_expired_id_gets_reset(nursery: trio.Nursery, broker: Broker) -> None:
    port = await start(nursery, make_app(broker))
    broker.topic("ticker").publish_nowait(Event("a"))
    with trio.fail_after(5):
        async with open_stream(port, "/events/ticker", [("last-event-id", "nope")]) as source:
            (reset,) = await take(source, 1)
            assert reset.type == "reset"


async def test_bad_selections(nursery: trio.Nursery, broker: Broker) -> None:
    port = await start(nursery, make_app(broker))
    with trio.fail_after(5):
        r = await request(port, "/events/nosuch")
        assert r.status_code == 404
        assert b"no such topic: nosuch" in r.content
        r = await request(port, "/events")
        assert r.status_code == 400
        r = await request(port, "/events?topic=ticker,news,scores,more")
        assert r.status_code == 400
        assert b"at most 3 topics" in r.content


async def test_authorize_refuses(nursery: trio.Nursery, broker: Broker) -> None:
    async def only_news(request: Request, names: object) -> bool:
        return names == ["news"]

    port = await start(nursery, make_app(broker, authorize=only_news))
    with trio.fail_after(5):
        assert (await request(port, "/events/ticker")).status_code == 403
        async with open_stream(port, "/events/news") as source:
            assert source.response is not None
            assert source.response.status_code == 200


async def test_several_topics_one_cursor(nursery: trio.Nursery, broker: Broker) -> None:
    port = await start(nursery, make_app(broker))
    with trio.fail_after(5):
        async with open_stream(port, "/events?topic=ticker&topic=news") as source:
            await trio.testing.wait_all_tasks_blocked()
            broker.topic("ticker").publish_nowait(Event("t1"))
            broker.topic("news").publish_nowait(Event("n1"))
            events = await take(source, 2)
            assert [e.data for e in events] == ["t1", "n1"]
            cursor = events[0].last_event_id
        broker.topic("news").publish_nowait(Event("n2"))
        broker.topic("ticker").publish_nowait(Event("t2"))
        async with open_stream(
            port, "/events?topic=ticker,news", [("last-event-id", cursor)]
        ) as source:
            assert [e.data for e in await take(source, 3)] == ["n1", "n2", "t2"]


async def test_publish_endpoint(nursery: trio.Nursery, broker: Broker) -> None:
    port = await start(nursery, make_app(broker))
    auth = [("authorization", "Bearer ok")]
    with trio.fail_after(5):
        async with open_stream(port, "/events/news") as source:
            await trio.testing.wait_all_tasks_blocked()
            body = json.dumps({"data": "hello\nworld", "event": "headline"}).encode()
            r = await request(
                port,
                "/publish/news",
                method="POST",
                headers=[*auth, ("content-type", "application/json")],
                body=body,
            )
            assert r.status_code == 200, r.content
            assigned = r.json()
            assert assigned["topic"] == "news"
            r = await request(
                port,
                "/publish/news",
                method="POST",
                headers=[*auth, ("content-type", "application/x-www-form-urlencoded")],
                body=b"data=form+data&event=x",
            )
            assert r.status_code == 200
            r = await request(port, "/publish/news", method="POST", headers=auth, body=b"plain")
            assert r.status_code == 200
            events = await take(source, 3)
            assert [(e.type, e.data) for e in events] == [
                ("headline", "hello\nworld"),
                ("x", "form data"),
                ("message", "plain"),
            ]
            assert events[0].last_event_id == assigned["id"]
        bad = [
            ([], b"x", 403),
            ([*auth, ("content-type", "application/json")], b"[1]", 400),
            ([*auth, ("content-type", "application/json")], b"{bad", 400),
            ([*auth, ("content-type", "application/json")], b'{"data":"x","event":"a\\nb"}', 400),
            ([*auth, ("content-type", "application/json")], b'{"data":"x","colour":"red"}', 400),
        ]
        for headers, payload, status in bad:
            r = await request(port, "/publish/news", method="POST", headers=headers, body=payload)
            assert r.status_code == status, (payload, r.content)
        r = await request(port, "/publish/nosuch", method="POST", headers=auth, body=b"x")
        assert r.status_code == 404


async def test_metrics_endpoint(nursery: trio.Nursery, broker: Broker) -> None:
    port = await start(nursery, make_app(broker))
    broker.topic("ticker").publish_nowait(Event("x"))
    with trio.fail_after(5):
        r = await request(port, "/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'trio_sse_topic_published_total{topic="ticker"} 1.0' in r.content.decode()


async def test_stuck_client_among_100_is_evicted() -> None:
    """One client stops reading: it is evicted and cut; the 99 others get everything."""
    broker = make_broker(TopicOptions(buffer_size=8, history_size=16))
    topic = broker.declare("t")
    app = App()
    app.add_route("/t", topic_stream(broker, ["t"]))
    config = Config(write_timeout=1.0, heartbeat_interval=None)
    n_events, payload = 100, "x" * 8_000
    received: dict[int, list[int]] = {}

    async def reader(
        client: httpx.AsyncClient, port: int, i: int, task_status: trio.TaskStatus[None]
    ) -> None:
        url = f"http://127.0.0.1:{port}/t"
        async with open_event_source(url, client=client, max_reconnects=0) as source:
            task_status.started()
            seqs: list[int] = []
            while len(seqs) < n_events:
                seqs.append(int((await anext(source)).data.split()[0]))
            received[i] = seqs

    with trio.fail_after(30):
        async with serving(app, config, tcp=True) as running:
            server, port = running.server, running.port
            stuck = await Client.connect("127.0.0.1", port, rcvbuf=4096)
            await stuck.send_raw(b"GET /t HTTP/1.1\r\nhost: x\r\n\r\n")
            limits = httpx.Limits(max_connections=None)
            async with (
                httpx.AsyncClient(timeout=None, limits=limits) as client,
                trio.open_nursery() as readers,
            ):
                for i in range(99):
                    await readers.start(reader, client, port, i)
                while len(server.connections) < 100:
                    await trio.sleep(0.01)
                for i in range(n_events):
                    topic.publish_nowait(Event(f"{i} {payload}"))
                    await trio.sleep(0.002)
            # Every reader got every event, in order: direct writes, partial
            # writes finished by the flusher and queued batches never reorder.
            assert received == {i: list(range(n_events)) for i in range(99)}
            assert topic.stats().evicted == 1
            # The stuck connection is cut by the write-stall deadline.
            while len(server.connections) > 0:
                await trio.sleep(0.05)
            await stuck.aclose()
