"""Helpers for tests of the Redis backplane against a real redis-server.

Each "process" of a test is one RedisBackplane + Broker pair running in the
test's nursery: separate connections, reader loops and topics, exactly what
separate processes would have (tests/test_redis_processes.py runs real ones).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import trio

from trio_sse import Broker, Event, RedisBackplane, Subscription, TopicOptions

_prefixes = itertools.count()


def unique_prefix() -> str:
    """A key prefix no other test uses (servers may be shared within a module)."""
    return f"t{next(_prefixes)}-{trio.current_time():.0f}:"


async def start_node(
    nursery: trio.Nursery,
    url: str,
    topics: Sequence[str] = ("t",),
    *,
    options: TopicOptions | None = None,
    connected: bool = True,
    **kwargs: Any,
) -> tuple[RedisBackplane, Broker]:
    """Run a backplane + broker with *topics* declared; wait until connected."""
    kwargs.setdefault("key_prefix", "trio-sse:")
    backplane = RedisBackplane(url, **kwargs)
    broker = Broker(options, backplane=backplane, create_topics=False)
    for name in topics:
        broker.declare(name)
    await nursery.start(backplane.run)
    if connected:
        await wait_connected(backplane)
        for name in topics:
            await backplane.wait_ready(broker.topic(name), None)
    return backplane, broker


async def wait_connected(backplane: RedisBackplane, connected: bool = True) -> None:
    """Poll until the backplane's connection state is *connected* (bounded by the caller)."""
    while backplane.connected != connected:
        await trio.sleep(0.01)


async def receive_n(sub: Subscription, n: int) -> list[Event]:
    """The next *n* events of *sub*."""
    return [await sub.receive() for _ in range(n)]


async def publish_retrying(broker: Broker, topic: str, event: Event) -> Event:
    """Publish, retrying while the backplane is unavailable (bounded by the caller)."""
    from trio_sse import BackplaneUnavailableError

    while True:
        try:
            return await broker.publish(topic, event)
        except BackplaneUnavailableError:
            await trio.sleep(0.02)


def stream_ids(events: Sequence[Event]) -> list[str]:
    """The stream-id part of each event id (``epoch-ms-seq`` -> ``ms-seq``)."""
    out = []
    for event in events:
        assert event.id is not None
        out.append(event.id.split("-", 1)[1])
    return out
