"""Real server processes sharing topics through a real redis-server.

Two ``trio-sse serve examples.scaled:app`` processes on their own ports
(what two hosts behind a load balancer without sticky sessions are): a
browser-like client moves from one to the other with ``Last-Event-ID``.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager, asynccontextmanager
from pathlib import Path

import trio
from clients import Client, open_event_stream
from clients import http_request as request
from redis_servers import RedisServer
from servers import ServerProcess, serving_process

ROOT = Path(__file__).parent.parent
ADMIN = [("authorization", "Bearer admin-token")]


def serving(redis_url: str, *extra: str) -> AbstractContextManager[ServerProcess]:
    """``trio-sse serve examples.scaled:app`` on a free port; killed at the end."""
    command = [sys.executable, "-m", "trio_sse", "serve", "examples.scaled:app"]
    env = {"TRIO_SSE_REDIS_URL": redis_url}
    return serving_process([*command, "--port", "0", *extra], cwd=ROOT, env=env)


@asynccontextmanager
async def open_stream(port: int, target: str, last_event_id: str = "") -> AsyncIterator[Client]:
    """GET an event stream; without a resume id, wait until it is subscribed.

    A fresh topic stream starts with an id-only event once its subscription
    is registered: what is published after it cannot be missed.
    """
    async with await open_event_stream(port, target, last_event_id=last_event_id) as stream:
        while not stream.decoder.last_event_id:
            assert await stream.pump(), "the stream ended"
        yield stream


async def publish(port: int, topic: str, data: str) -> str:
    result = await request(
        port, f"/publish/{topic}", method="POST", headers=ADMIN, body=data.encode()
    )
    assert result.status_code == 200, result.content
    event_id = result.json()["id"]
    assert isinstance(event_id, str)
    return event_id


async def wait_healthy(port: int) -> None:
    while (await request(port, "/health")).status_code != 200:
        await trio.sleep(0.05)


def test_a_client_moves_between_processes_without_losing_an_event(
    redis_server: RedisServer,
) -> None:
    with serving(redis_server.url) as a, serving(redis_server.url) as b:
        port_a, port_b = a.port, b.port

        async def scenario() -> None:
            with trio.fail_after(20):
                await wait_healthy(port_a)
                await wait_healthy(port_b)
                async with open_stream(port_b, "/events/news") as watcher:
                    async with open_stream(port_a, "/events/news") as client:
                        ids = [await publish(port_a, "news", f"e{i}") for i in range(5)]
                        seen = await client.events(2)
                    assert [e.data for e in seen] == ["e0", "e1"]
                    assert [e.last_event_id for e in seen] == ids[:2]
                    # Disconnected; more is published, on the other process too.
                    ids += [await publish(port_b, "news", f"e{i}") for i in range(5, 8)]
                    last = seen[-1].last_event_id
                    async with open_stream(port_b, "/events/news", last) as again:
                        missed = await again.events(6)
                        ids.append(await publish(port_a, "news", "e8"))
                        (live,) = await again.events(1)
                    assert [e.data for e in missed] == [f"e{i}" for i in range(2, 8)]
                    assert [e.last_event_id for e in missed] == ids[2:8]
                    assert (live.data, live.last_event_id) == ("e8", ids[8])
                    everything = await watcher.events(9)
                assert [e.data for e in everything] == [f"e{i}" for i in range(9)]
                assert [e.last_event_id for e in everything] == ids

        trio.run(scenario)


def test_health_and_publishing_follow_redis(redis_server: RedisServer) -> None:
    with serving(redis_server.url) as server:
        port = server.port

        async def scenario() -> None:
            with trio.fail_after(20):
                await wait_healthy(port)
                async with open_stream(port, "/events/news") as client:
                    await trio.to_thread.run_sync(redis_server.kill)
                    while (health := await request(port, "/health")).status_code != 503:
                        await trio.sleep(0.05)
                    assert health.headers["retry-after"] == "1"
                    assert health.json()["backplane"]["connected"] is False
                    refused = await request(
                        port, "/publish/news", method="POST", headers=ADMIN, body=b"x"
                    )
                    assert refused.status_code == 503
                    assert refused.headers["retry-after"] == "1"
                    assert b"nothing was published" in refused.content
                    await trio.to_thread.run_sync(redis_server.start)
                    await wait_healthy(port)
                    await publish(port, "news", "back")
                    # The stream stayed open through the outage (the same
                    # response: this reader never reconnects).
                    (event,) = await client.events(1)
                    assert event.data == "back"

        trio.run(scenario)
