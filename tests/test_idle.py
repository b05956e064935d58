"""The idle watch over parked streams (``trio_sse/_idle.py``).

Unit tests on the autojump clock with real descriptors (socket pairs) and a
small stream double standing for the exchange; then the raw server: idle
streams get their heartbeats while their own tasks never run.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import trio
import trio.testing
from clients import open_event_stream
from servers import serve_topic

import trio_sse
import trio_sse._server
from trio_sse import Config
from trio_sse._idle import IdleStreams, Park


class Stream:
    """What the watch needs of a parked stream: its clock and a heartbeat writer."""

    def __init__(self, interval: float | None) -> None:
        self.interval = interval
        self.last_write = trio.current_time()
        self.beats: list[float] = []
        self.busy = False
        self.park: Park | None = None
        self.woke: list[tuple[float, bool]] = []

    def heartbeat_nowait(self) -> bool:
        if self.busy:
            return False
        self.last_write = trio.current_time()
        self.beats.append(self.last_write)
        return True

    def parked(self, park: Park | None) -> None:
        self.park = park

    async def sleep(self, idle: IdleStreams, fd: int, end: float = float("inf")) -> bool:
        park = idle.park(self, fd, end)
        await trio.lowlevel.wait_task_rescheduled(park.abort)
        self.woke.append((trio.current_time(), park.readable))
        return park.readable


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    with a, b:
        yield a, b


@pytest.fixture
async def idle(nursery: trio.Nursery) -> IdleStreams:
    service = IdleStreams()
    nursery.start_soon(service.run)
    return service


async def test_heartbeats_are_written_without_waking_and_the_end_wakes(
    autojump_clock: trio.testing.MockClock, idle: IdleStreams, pair: tuple[socket.socket, ...]
) -> None:
    t0 = trio.current_time()
    stream = Stream(interval=10)
    with trio.fail_after(60):  # virtual seconds: the end must come at 45
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream.sleep, idle, pair[0].fileno(), t0 + 45)
            await trio.sleep(15)
            stream.last_write = t0 + 15  # a write (a publisher's): the next beat moves to 25
            await trio.sleep(20)
            assert stream.woke == []  # asleep all along
            assert len(idle) == 1
    assert [t - t0 for t in stream.beats] == [10, 25, 35]
    assert stream.woke == [(t0 + 45, False)]  # the end
    assert len(idle) == 0
    assert stream.park is None


async def test_the_peer_sending_or_leaving_wakes_it_readable(
    autojump_clock: trio.testing.MockClock, idle: IdleStreams, pair: tuple[socket.socket, ...]
) -> None:
    stream = Stream(interval=None)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream.sleep, idle, pair[0].fileno())
        await trio.sleep(100)
        assert stream.woke == []
        pair[1].send(b"x")
    assert stream.woke[0][1] is True
    assert pair[0].recv(10) == b"x"
    # Parked again on the same descriptor (it was unregistered): the peer leaves.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream.sleep, idle, pair[0].fileno())
        await trio.testing.wait_all_tasks_blocked()
        pair[1].close()
    assert stream.woke[1][1] is True
    assert len(idle) == 0


async def test_a_wake_ends_the_park_once(
    autojump_clock: trio.testing.MockClock, idle: IdleStreams, pair: tuple[socket.socket, ...]
) -> None:
    stream = Stream(interval=5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream.sleep, idle, pair[0].fileno())
        await trio.sleep(2)
        park = stream.park
        assert park is not None
        park.wake()
        park.wake()  # a second waker finds it ended: nothing happens
    assert stream.woke == [(trio.current_time(), False)]
    await trio.sleep(20)  # its emptied timer comes and goes: no heartbeat
    assert stream.beats == []


async def test_a_busy_stream_is_woken_to_write_its_own_heartbeat(
    autojump_clock: trio.testing.MockClock, idle: IdleStreams, pair: tuple[socket.socket, ...]
) -> None:
    t0 = trio.current_time()
    stream = Stream(interval=5)
    stream.busy = True  # a write in progress: the watch may not write
    await stream.sleep(idle, pair[0].fileno())
    assert stream.woke == [(t0 + 5, False)]
    assert stream.beats == []


async def test_cancelling_a_parked_task_forgets_its_park(
    autojump_clock: trio.testing.MockClock, idle: IdleStreams, pair: tuple[socket.socket, ...]
) -> None:
    stream = Stream(interval=5)
    with trio.move_on_after(12):
        await stream.sleep(idle, pair[0].fileno())
    assert len(idle) == 0
    assert stream.park is None
    assert [b - stream.beats[0] for b in stream.beats] == [0, 5]
    await trio.sleep(20)
    assert len(stream.beats) == 2  # no beat for a forgotten stream
    # The descriptor is free to park again.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream.sleep, idle, pair[0].fileno())
        await trio.testing.wait_all_tasks_blocked()
        pair[1].send(b"x")
    assert stream.woke[-1][1] is True


async def test_many_streams_each_on_its_own_time(
    autojump_clock: trio.testing.MockClock, idle: IdleStreams
) -> None:
    t0 = trio.current_time()
    pairs = [socket.socketpair() for _ in range(20)]
    streams = [Stream(interval=3 + i % 7) for i in range(20)]
    try:
        with trio.fail_after(100):  # virtual seconds: the last end comes at 49
            async with trio.open_nursery() as nursery:
                for i, (stream, (a, _)) in enumerate(zip(streams, pairs, strict=True)):
                    nursery.start_soon(stream.sleep, idle, a.fileno(), t0 + 30 + i)
        for i, stream in enumerate(streams):
            interval = 3 + i % 7
            ends = 30 + i
            assert [b - t0 for b in stream.beats] == list(range(interval, ends, interval)), i
            if ends % interval == 0:  # the beat due at the end is the end's
                assert stream.beats[-1] - t0 < ends
            assert stream.woke == [(t0 + ends, False)]
    finally:
        for a, b in pairs:
            a.close()
            b.close()


async def test_when_the_watch_ends_sleepers_wake_and_no_one_parks_again(
    autojump_clock: trio.testing.MockClock, pair: tuple[socket.socket, ...]
) -> None:
    service = IdleStreams()
    stream = Stream(interval=None)
    async with trio.open_nursery() as outer:
        outer.start_soon(stream.sleep, service, pair[0].fileno())
        async with trio.open_nursery() as watching:
            watching.start_soon(service.run)
            await trio.testing.wait_all_tasks_blocked()
            watching.cancel_scope.cancel()
    assert stream.woke == [(trio.current_time(), False)]
    assert not service.running
    with pytest.raises(RuntimeError, match="has ended"):
        service.park(stream, pair[0].fileno(), float("inf"))


# -- on the raw server ---------------------------------------------------------


class Steps(trio.abc.Instrument):
    """Counts the steps of the tasks running ``_Connection.run``."""

    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith("_Connection.run"):
            self.steps += 1


async def test_idle_streams_get_heartbeats_while_their_tasks_sleep(
    nursery: trio.Nursery,
) -> None:
    config = Config(heartbeat_interval=0.2, max_connections=100)
    with trio.fail_after(20):
        port, topic, _ = await serve_topic(nursery, config)
        socks = []
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /sub HTTP/1.1\r\nHost: t\r\n\r\n")
            s.setblocking(False)
            socks.append(s)
        while len(topic._subscribers) < 20:
            await trio.sleep(0.01)
        await trio.sleep(0.3)  # every stream has written its head and parked
        steps = Steps()
        trio.lowlevel.add_instrument(steps)
        try:
            for s in socks:
                while True:  # drain what came so far
                    try:
                        s.recv(65536)
                    except BlockingIOError:
                        break
            await trio.sleep(1.0)  # about five heartbeats each
        finally:
            trio.lowlevel.remove_instrument(steps)
        chunk = trio_sse.Event(comment=config.heartbeat_comment).encode_chunk()
        beats = [s.recv(65536).count(chunk) for s in socks]
        assert min(beats) >= 3, beats
        assert steps.steps == 0
        for s in socks:
            s.close()


class CountingClock(trio.abc.Clock):
    """Real time, counting how often anything reads it."""

    def __init__(self) -> None:
        self.reads = 0

    def start_clock(self) -> None:
        pass

    def current_time(self) -> float:
        self.reads += 1
        return time.perf_counter()

    def deadline_to_sleep_time(self, deadline: float) -> float:
        return deadline - time.perf_counter()


@pytest.fixture
def counting_clock() -> CountingClock:
    """The test's trio clock (pytest-trio runs the test on a fixture's clock)."""
    return CountingClock()


async def test_a_broadcast_to_parked_streams_reads_the_clock_once(
    counting_clock: CountingClock, nursery: trio.Nursery
) -> None:
    # _direct.py, Rule 3: each stream notes the event's recording time, the
    # one clock read of the event; not one read (and one float) per stream.
    with trio.fail_after(20):
        port, topic, _ = await serve_topic(nursery, Config(max_connections=100))
        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
        try:
            for s in socks:
                s.sendall(b"GET /sub HTTP/1.1\r\nHost: t\r\n\r\n")
            while len(topic._subscribers) < 50:
                await trio.sleep(0.01)
            await trio.sleep(0.2)  # every stream has written its head and parked
            reads = counting_clock.reads
            event = topic.publish_nowait(trio_sse.Event("x"))
            assert counting_clock.reads - reads == 1
            for s in socks:
                s.settimeout(5)
                data = b""
                while event.encode_chunk() not in data:
                    data += s.recv(65536)
        finally:
            for s in socks:
                s.close()


async def test_a_stream_woken_over_and_over_leaves_a_bounded_heap(
    autojump_clock: trio.testing.MockClock, idle: IdleStreams, pair: tuple[socket.socket, ...]
) -> None:
    # A peer sending byte after byte: each byte wakes the stream, which parks
    # again with a new timer (15 s away); the old ones are emptied, and stay
    # below a quiet stream's earlier timer.
    quiet = Stream(interval=10)
    other = socket.socketpair()
    stream = Stream(interval=15)
    async with trio.open_nursery() as outer:
        outer.start_soon(quiet.sleep, idle, other[0].fileno())
        for _ in range(5_000):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream.sleep, idle, pair[0].fileno())
                await trio.testing.wait_all_tasks_blocked()
                pair[1].send(b"x")
            pair[0].recv(1)
        assert len(stream.woke) == 5_000
        assert len(idle._heap) <= 2 * len(idle) + 1_001
        other[1].close()
    other[0].close()


async def test_heartbeats_falling_due_together_are_served_in_slices() -> None:
    # Real clock: an observer that checkpoints all along never lets an
    # autojump clock move. 50 streams parked at once fall due together.
    service = IdleStreams(slice=10)
    pairs = [socket.socketpair() for _ in range(50)]
    gaps: list[int] = []
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(service.run)
                streams = [Stream(interval=0.2) for _ in pairs]
                for stream, (a, _) in zip(streams, pairs, strict=True):
                    nursery.start_soon(stream.sleep, service, a.fileno())
                await trio.testing.wait_all_tasks_blocked()
                seen = 0
                with trio.move_on_after(0.5):
                    while True:  # another task: how many beats between its steps
                        await trio.lowlevel.checkpoint()
                        total = sum(len(s.beats) for s in streams)
                        gaps.append(total - seen)
                        seen = total
                assert all(len(s.beats) >= 1 for s in streams)
                nursery.cancel_scope.cancel()
    finally:
        for a, b in pairs:
            a.close()
            b.close()
    # trio runs a batch of ready tasks in any order: up to two slices.
    assert max(gaps) <= 2 * 10, gaps


async def test_a_failing_heartbeat_wakes_its_stream_and_the_watch_goes_on(
    autojump_clock: trio.testing.MockClock,
    idle: IdleStreams,
    pair: tuple[socket.socket, ...],
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(Stream):
        def heartbeat_nowait(self) -> bool:
            raise RuntimeError("bug")

    t0 = trio.current_time()
    broken, sound = Broken(interval=5), Stream(interval=5)
    other = socket.socketpair()
    with other[0], other[1]:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sound.sleep, idle, other[0].fileno(), t0 + 12)
            await broken.sleep(idle, pair[0].fileno())
            assert broken.woke == [(t0 + 5, False)]  # woken to write it itself
        assert [b - t0 for b in sound.beats] == [5, 10]
    assert "heartbeat of an idle stream failed" in caplog.text


async def test_without_epoll_topic_streams_run_beside_a_companion(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Where select.epoll is missing (macOS, Windows) the server has no idle
    # watch: a topic stream then runs the general way, two tasks, same bytes.
    monkeypatch.setattr(trio_sse._server, "IDLE_AVAILABLE", False)
    config = Config(heartbeat_interval=0.2)
    with trio.fail_after(20):
        port, topic, _ = await serve_topic(nursery, config)
        client = await open_event_stream(port, "/sub")
        while not topic._subscribers:
            await trio.sleep(0.01)
        (sub,) = topic._subscribers
        assert sub._sink is None  # not parked: no direct writes
        published = await topic.publish(trio_sse.Event("hello"))
        (event,) = await client.events(1)
        assert (event.data, event.last_event_id) == ("hello", published.id)
        beat = trio_sse.Event(comment=config.heartbeat_comment).encode()
        while beat not in bytes(client.body):  # heartbeats, from the companion
            assert await client.pump()
        await client.stream.aclose()
        while topic._subscribers:
            await trio.sleep(0.01)
