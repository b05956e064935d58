"""The demo's endpoints without a browser: authorization, bounds, real figures.

(Browser-free companions of tests/test_browser.py, over real loopback sockets.)
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
from clients import Client
from servers import start_raw

from trio_sse import App, Config
from trio_sse.demo import DemoOptions, Sampler, cpu_seconds, make_app, rss_bytes


@asynccontextmanager
async def served(app: App) -> AsyncIterator[httpx.AsyncClient]:
    async with trio.open_nursery() as nursery:
        server = await start_raw(nursery, app)
        async with server.client() as client:
            yield client
        nursery.cancel_scope.cancel()


async def test_publishing_needs_the_token_shown_on_the_page() -> None:
    app = make_app(DemoOptions(token="s3cret", tick_interval=0.05))
    with trio.fail_after(10):
        async with served(app) as client:
            page = (await client.get("/")).text
            assert 'id="token">s3cret<' in page
            assert "__DEMO_TOKEN__" not in page
            body = {"data": "hi", "event": "notification"}
            for headers in ({}, {"authorization": "Bearer wrong"}):
                for path in ("/notify", "/burst", "/drop"):
                    r = await client.post(path, json=body, headers=headers)
                    assert r.status_code == 403, (path, headers)
                    assert "\n" not in r.text.strip()
            ok = {"authorization": "Bearer s3cret"}
            for bad in ({"data": "x", "id": "99"}, {"data": "x", "event": "clock"}):
                r = await client.post("/notify", json=bad, headers=ok)
                assert r.status_code == 400
                assert "notification" in r.text
            r = await client.post("/notify", data={"data": "x", "retry": "1"}, headers=ok)
            assert r.status_code == 400
            r = await client.post("/notify", content=b"plain", headers=ok)
            assert r.status_code == 200
            r = await client.post("/notify", json=body, headers=ok)
            assert r.status_code == 200
            assert r.json()["topic"] == "notifications"
            assert (await client.post("/drop", headers=ok)).json() == {"dropped": 0}
            assert (await client.get("/metrics")).status_code == 200


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"count": 0}, "count must be an integer from 1 to 5"),
        ({"count": 6}, "count must be an integer from 1 to 5"),
        ({"count": "3"}, "count must be an integer from 1 to 5"),
        ({"count": 1, "size": 11}, "size must be an integer from 0 to 10"),
        ({"count": 1, "size": -1}, "size must be an integer from 0 to 10"),
        ([1], "send a JSON object"),
    ],
)
async def test_burst_bounds_are_configurable_and_answer_400(body: object, reason: str) -> None:
    app = make_app(DemoOptions(token="t", max_burst_count=5, max_burst_size=10))
    with trio.fail_after(10):
        async with served(app) as client:
            r = await client.post("/burst", json=body, headers={"authorization": "Bearer t"})
            assert r.status_code == 400
            assert reason in r.text
            r = await client.post(
                "/burst", json={"count": 5, "size": 10}, headers={"authorization": "Bearer t"}
            )
            assert r.status_code == 200
            assert app.state.broker.stats()["bulk"].published == 5


async def test_notification_bodies_are_bounded() -> None:
    app = make_app(DemoOptions(token="t"), config=Config(max_body_size=1000))
    with trio.fail_after(10):
        async with served(app) as client:
            r = await client.post(
                "/notify", json={"data": "x" * 2000}, headers={"authorization": "Bearer t"}
            )
            assert r.status_code == 413


async def test_figures_are_the_process_own() -> None:
    app = make_app(DemoOptions(tick_interval=0.05))
    broker = app.state.broker
    with trio.fail_after(10):
        async with served(app) as client:
            port = int(str(client.base_url).rpartition(":")[2].strip("/"))
            h11_client = await Client.connect("127.0.0.1", port)
            await h11_client.open("GET", "/events")
            assert h11_client.status == 200
            figures: dict[str, Any] = {"delivered_per_s": 0}
            while figures["delivered_per_s"] == 0:
                [event] = await h11_client.events(1)
                if event.type == "metrics":
                    figures = json.loads(event.data)
            await h11_client.aclose()
    assert figures["open_streams"] == 1
    assert set(figures["topics"]) == {"clock", "metrics", "notifications", "bulk"}
    assert figures["topics"]["clock"]["subscribers"] == 1
    assert figures["evicted"] == broker.stats()["clock"].evicted == 0
    assert 5 < figures["rss_mb"] < 10_000


def test_process_figures_move_with_the_process() -> None:
    with open("/proc/self/statm", "rb") as f:
        pages = int(f.read().split()[1])
    assert abs(rss_bytes() - pages * os.sysconf("SC_PAGE_SIZE")) < 64 * 2**20
    before = cpu_seconds()
    sampler = Sampler(make_app().state.broker)
    total = 0
    for i in range(300_000):  # about 20-50 ms of CPU
        total += i * i
    assert cpu_seconds() > before
    assert sampler.sample(open_streams=0)["cpu_percent"] > 10
