"""The Python of one broadcast delivery to a parked stream, without the system call.

Run with ``python benchmarks/bench_delivery.py [--subscribers N] [--events K]
[--cold BYTES]``. N raw-server-style parked topic streams (``_parked.py``:
the exchange's direct sink, its write clock, the sliced fan-out of
``Topic.publish``) on a stand-in transport whose ``write_now`` takes every
byte at once; so the figure is the nanoseconds of Python per delivery that
the benchmark of the real server (``bench_load.py``) adds to the ``write``
system call. ``--cold BYTES`` overwrites a buffer of that size on each write
(subtracted from the result), as the kernel's send path evicts the caches
between two deliveries: the objects a delivery touches then cost their cache
misses, as on the real server. ``--devnull`` takes the raw server's own path
instead (``_direct.py`` Rule 4: the sink calls ``os.write`` itself, with no
``write_now`` call): every stream writes to ``/dev/null``, and the cost of
that system call, timed alone, is subtracted. Best of five rounds of CPU time.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import socket
import time

import trio
import trio.testing

from trio_sse import App, Broker, Config, Event
from trio_sse._exchange import Exchange
from trio_sse._idle import IdleStreams
from trio_sse._limits import ClientLimits
from trio_sse._parked import run_parked
from trio_sse._topic_writer import TopicWriter


class Transport:
    """Takes every write at once; optionally evicts the caches first."""

    client = None
    heartbeat = b": ping\n\n"
    direct = True
    stopping = False

    def __init__(self, trash: bytearray | None, zeros: bytes) -> None:
        self.trash = trash
        self.zeros = zeros

    def encoder(self) -> object:
        return Event.encode_chunk

    def write_now(self, data: bytes) -> bytes | None:
        if self.trash is not None:
            self.trash[:] = self.zeros
        return None

    async def write_rest(self, data: bytes, last: bool) -> None:
        await trio.lowlevel.checkpoint()

    async def wait_disconnect(self) -> None:
        await trio.sleep_forever()

    def close_after(self) -> None:
        pass


def devnull_write_ns(fd: int, data: bytes, n: int = 200_000) -> float:
    """The ns of one ``os.write`` of ``data`` to ``fd`` (best of five)."""
    rounds = []
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(n):
            os.write(fd, data)
        rounds.append((time.process_time() - t0) / n * 1e9)
    return min(rounds)


async def measure(
    subscribers: int, events: int, cold: int, devnull: int = -1
) -> tuple[float, float]:
    """Return (ns of Python per delivery, ns subtracted per delivery)."""
    app = App(config=Config())
    limits = ClientLimits(app.config)
    broker = Broker()
    topic = broker.topic("t")
    trash = bytearray(cold) if cold else None
    zeros = bytes(cold)
    pad = "x" * 64
    # The idle watch needs a descriptor per stream to watch for the peer: a
    # socket pair each, which the stand-in transport never writes to.
    pairs = [socket.socketpair() for _ in range(subscribers)]
    idle = IdleStreams()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(idle.run)
        for ours, _ in pairs:
            transport = Transport(trash, zeros)
            exchange = Exchange(
                app,
                app.config,
                transport,  # type: ignore[arg-type]
                limits,
                idle,
                ours.fileno(),
                devnull,
            )
            exchange._parked = (TopicWriter(topic.subscribe(), 64, False), math.inf, "/t", None)
            nursery.start_soon(run_parked, exchange)
        await trio.testing.wait_all_tasks_blocked()
        evict = 0.0
        if devnull >= 0:
            sample = Event(data=f"{events} {pad}").encode_chunk()
            evict = devnull_write_ns(devnull, sample)
        elif trash is not None:
            t0 = time.process_time()
            for _ in range(subscribers):
                trash[:] = zeros
            evict = (time.process_time() - t0) / subscribers * 1e9
        rounds = []
        for _ in range(5):
            gc.collect()
            t0 = time.process_time()
            for seq in range(events):
                await topic.publish(Event(data=f"{seq} {pad}"))
            rounds.append((time.process_time() - t0) / (subscribers * events) * 1e9)
        nursery.cancel_scope.cancel()
    for pair in pairs:
        for s in pair:
            s.close()
    return min(rounds) - evict, evict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--cold", type=int, default=0, metavar="BYTES")
    parser.add_argument(
        "--devnull", action="store_true", help="the raw server's path: os.write to /dev/null"
    )
    args = parser.parse_args()
    if args.devnull and args.cold:
        parser.error("--devnull and --cold measure one at a time")
    devnull = os.open(os.devnull, os.O_WRONLY) if args.devnull else -1
    ns, evict = trio.run(measure, args.subscribers, args.events, args.cold, devnull)
    how = ""
    if args.cold:
        how = f", caches evicted ({evict:.0f} ns each, subtracted)"
    elif args.devnull:
        how = f", os.write to /dev/null ({evict:.0f} ns each, subtracted)"
    print(f"{ns:.0f} ns of Python per delivery, {args.subscribers} parked streams{how}")


if __name__ == "__main__":
    main()
