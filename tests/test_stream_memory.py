"""What an idle topic stream costs on the raw server, and that churn leaks nothing.

Real sockets on 127.0.0.1 (plain non-blocking stdlib sockets as clients, so
that the client side allocates no trio objects), tracemalloc on the server's
side. The bounds are from measurements (``docs/benchmarks.md``, *Memory per
stream*) with a margin; each fails when a mechanism it guards breaks: a second
task per stream (the companion), a cancel scope or a trio socket wait per
idle stream, h11's state kept during a stream, a deque per idle
subscription, an unbounded read buffer.
"""

from __future__ import annotations

import gc
import socket
import tracemalloc
from collections.abc import Iterator

import trio
from servers import serve_topic

from trio_sse import Config, Event

#: Server-side Python heap per idle topic stream, measured 4.6 KB with
#: CPython 3.11 (6.8 KB with a cancel scope and a trio socket wait per idle
#: stream, 13.1 KB with the companion task, 20.8 KB before issue 14).
MAX_BYTES_PER_STREAM = 5_100
STREAMS = 200


def count_scopes() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is trio.CancelScope)


def count_tasks() -> int:
    def walk(task: trio.lowlevel.Task) -> Iterator[trio.lowlevel.Task]:
        yield task
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                yield from walk(child)

    return sum(1 for _ in walk(trio.lowlevel.current_root_task()))


async def open_streams(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /sub HTTP/1.1\r\nHost: t\r\n\r\n")
        s.setblocking(False)
        socks.append(s)
    # Every client has its response head: the stream is established.
    for s in socks:
        while True:
            try:
                if s.recv(65536):
                    break
            except BlockingIOError:
                await trio.sleep(0.005)
    return socks


async def test_an_idle_topic_stream_costs_one_task_and_a_bounded_heap(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(30):
        port, topic, _ = await serve_topic(nursery, Config(max_connections=1000))
        for s in await open_streams(port, 20):  # warm caches and lazy imports
            s.close()
        while topic._subscribers:
            await trio.sleep(0.01)
        topic.publish_nowait(Event("warm"))
        gc.collect()
        tasks = count_tasks()
        scopes = count_scopes()
        tracemalloc.start(1)
        try:
            before = tracemalloc.take_snapshot()
            socks = await open_streams(port, STREAMS)
            while len(topic._subscribers) < STREAMS:
                await trio.sleep(0.01)
            topic.publish_nowait(Event("hello"))  # every stream writes once
            await trio.sleep(0.05)
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        assert count_tasks() - tasks == STREAMS  # one task per stream
        # No cancel scope while idle (the stream sleeps in the idle watch,
        # _idle.py); only the request head's, exited but kept by trio's
        # deadline heap until header_timeout passes.
        assert count_scopes() - scopes <= STREAMS + 5
        # Only what the server allocated: not this test's client sockets.
        mine = tracemalloc.Filter(False, __file__)
        diff = after.filter_traces([mine]).compare_to(before.filter_traces([mine]), "filename")
        per_stream = sum(stat.size_diff for stat in diff) / STREAMS
        assert per_stream <= MAX_BYTES_PER_STREAM, per_stream
        for s in socks:
            s.close()


async def test_churn_returns_to_the_baseline(nursery: trio.Nursery) -> None:
    # Short deadlines: trio drops a cancel scope's deadline from its heap
    # lazily, when it expires; these expire during the test.
    config = Config(
        max_connections=1000, heartbeat_interval=0.5, header_timeout=0.5, close_linger=0.2
    )
    with trio.fail_after(60):
        port, topic, app = await serve_topic(nursery, config)

        async def round_() -> None:
            socks = await open_streams(port, 100)
            topic.publish_nowait(Event("x"))
            for s in socks:
                s.close()
            while topic._subscribers or count_tasks() > tasks:
                await trio.sleep(0.01)

        tasks = count_tasks()
        tracemalloc.start(1)
        try:
            for _ in range(3):  # warm: free lists, caches
                await round_()
            await trio.sleep(0.6)  # every deadline of those streams has expired
            gc.collect()
            objects = len(gc.get_objects())
            start = tracemalloc.get_traced_memory()[0]
            for _ in range(10):
                await round_()
            await trio.sleep(0.6)
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - start
        finally:
            tracemalloc.stop()
        assert count_tasks() == tasks
        assert topic.stats().subscribers == 0
        assert not app.refusals or sum(app.refusals.values()) == 0
        # An ended connection is freed by reference counting alone: no cycle
        # waits for the collector (which gc.freeze() would make a leak).
        gc.collect()
        gc.disable()
        try:
            await round_()
            await trio.sleep(0.6)
            unreachable = gc.collect()
        finally:
            gc.enable()
        assert unreachable < 100, unreachable  # 7 per connection with a cycle
        # 1,000 streams came and went: what stays is noise. One object of
        # 32 bytes kept per stream would be 32 KB.
        assert grown < 24 * 1024, grown
        assert len(gc.get_objects()) - objects < 300
