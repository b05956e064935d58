"""The Redis backplane's health is visible: stats, metrics, health endpoint, hypercorn workers."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import trio
from backplanes import start_node, wait_connected
from clients import http_request as request
from redis_servers import RedisServer, free_port
from servers import read_log
from test_redis_processes import open_stream

from trio_sse import Broker, Event, broker_metrics_text

ROOT = Path(__file__).parent.parent


def sample(text: bytes, name: str) -> float:
    found = re.search(rb"^" + name.encode() + rb" (\S+)$", text, re.MULTILINE)
    assert found, name
    return float(found.group(1))


async def test_metrics_show_the_backplane_going_down_and_up(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    with trio.fail_after(15):
        backplane, broker = await start_node(nursery, redis_server.url)
        async with broker.subscribe("t") as sub:
            await broker.publish("t", Event("x"))
            await sub.receive()
        text = broker_metrics_text(broker)
        assert sample(text, "trio_sse_backplane_connected") == 1.0
        assert sample(text, "trio_sse_backplane_published_total") == 1.0
        assert sample(text, "trio_sse_backplane_received_total") == 1.0
        assert sample(text, "trio_sse_backplane_reconnects_total") == 0.0
        assert sample(text, "trio_sse_backplane_last_read_age_seconds") < 5
        assert b'trio_sse_topic_published_total{topic="t"} 1.0' in text
        redis_server.kill()
        await wait_connected(backplane, False)
        text = broker_metrics_text(broker)
        assert sample(text, "trio_sse_backplane_connected") == 0.0
        assert sample(text, "trio_sse_backplane_reconnects_total") == 1.0
        await trio.to_thread.run_sync(redis_server.start)
        await wait_connected(backplane)
        assert sample(broker_metrics_text(broker), "trio_sse_backplane_connected") == 1.0


def test_the_in_process_backplane_has_no_backplane_metrics() -> None:
    broker = Broker()
    broker.publish_nowait("t", Event("x"))
    text = broker_metrics_text(broker)
    assert b"backplane" not in text
    assert b'trio_sse_topic_published_total{topic="t"} 1.0' in text


def test_hypercorn_workers_share_topics_through_redis(redis_server: RedisServer) -> None:
    """``hypercorn --workers 2``: each worker's lifespan runs the backplane."""
    port = free_port()
    env = {**os.environ, "TRIO_SSE_REDIS_URL": redis_server.url}
    command = [sys.executable, "-m", "hypercorn", "--worker-class", "trio", "--workers", "2"]
    with (
        tempfile.TemporaryFile() as log,
        subprocess.Popen(
            [*command, "--bind", f"127.0.0.1:{port}", "examples.scaled:app"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        ) as proc,
    ):
        try:

            async def scenario() -> None:
                with trio.fail_after(30):
                    while True:
                        try:
                            if (await request(port, "/health")).status_code == 200:
                                break
                        except (OSError, httpx.TransportError):
                            pass
                        await trio.sleep(0.1)
                    # Several subscribers: the workers accept them as they come.
                    async with contextlib.AsyncExitStack() as stack:
                        clients = [
                            await stack.enter_async_context(open_stream(port, "/events/news"))
                            for _ in range(6)
                        ]
                        for i in range(3):
                            published = await request(
                                port,
                                "/publish/news",
                                method="POST",
                                headers=[("authorization", "Bearer admin-token")],
                                body=f"e{i}".encode(),
                            )
                            assert published.status_code == 200
                        for client in clients:
                            assert [e.data for e in await client.events(3)] == ["e0", "e1", "e2"]

            trio.run(scenario)
        except BaseException:
            print(read_log(log).decode(errors="replace"))
            raise
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
