"""Brokers for tests that assert exact ids, and reading subscriptions without waiting.

The default backplane prefixes every id with a per-run epoch
(``3f9a0c1e-1``); tests that compare ids with literals use bare numbers.
The epoch itself is tested in test_topics_epochs.py.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from trio_sse import Broker, Event, LocalBackplane, Subscription, Topic


def make_broker(*args: Any, **kwargs: Any) -> Broker:
    """``Broker(...)`` whose ids are ``1``, ``2``, ... unless a backplane is given."""
    kwargs.setdefault("backplane", LocalBackplane(id_prefix=""))
    return Broker(*args, **kwargs)


def drain(sub: Subscription) -> list[Event]:
    """Everything receivable right now, without waiting."""
    out: list[Event] = []
    while True:
        try:
            out.append(sub.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return out


def data(events: list[Event]) -> list[str | None]:
    """The data of each event."""
    return [e.data for e in events]


class Ticks:
    """An unrelated task's checkpoints, and the deliveries made between two of them."""

    def __init__(self) -> None:
        self.since_tick = 0
        self.longest = 0

    def delivered(self) -> None:
        self.since_tick += 1
        self.longest = max(self.longest, self.since_tick)

    async def run(self) -> None:
        while True:
            self.since_tick = 0
            await trio.lowlevel.checkpoint()


async def direct_writer(sub: Subscription, ticks: Ticks, got: list[str]) -> None:
    def sink(event: Event) -> bool:
        ticks.delivered()
        got.append(event.data or "")
        return True

    sub._set_direct_sink(sink)
    while batch := await sub.receive_batch():
        got.extend(e.data or "" for e in batch)


async def start_direct_writers(
    nursery: trio.Nursery, topic: Topic, ticks: Ticks, received: list[list[str]]
) -> None:
    """One subscriber of ``topic`` per list in ``received``, each a :func:`direct_writer`.

    Returns once every writer waits for events (in ``DIRECT`` mode).
    """
    for got in received:
        sub = topic.subscribe()
        await sub.__aenter__()
        nursery.start_soon(direct_writer, sub, ticks, got)
    await trio.testing.wait_all_tasks_blocked()
