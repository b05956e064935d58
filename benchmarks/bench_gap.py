"""Event-loop stalls while one event goes to many subscriber *tasks* in one process.

Run with ``python3 noxfile.py -s bench-gap`` (or ``python benchmarks/bench_gap.py``).

Each subscriber is a task in ``async for event in subscription`` (the way
in-process consumers, the ASGI path and HTTP/2 streams take events; the raw
server's parked streams take them without a task, see ``bench_memory.py``).
An unrelated task checkpoints in a loop; the longest time it waited between
two checkpoints while ``--events`` events reached every subscriber is the
*gap*. Each run is a fresh process, so that the garbage collector starts
from the same state, and reports the collections that ran during the
fan-out: a task that waits again allocates new objects (coroutines, trio's
wait record) that live until the next event, so each event moves six or
seven objects per subscriber into the collector's oldest generation, and full
collections, which visit every tracked object, follow.

``--gc`` picks the interpreter's collector settings, applied by the
benchmark (trio-sse itself never changes them): ``default``; ``freeze``
(``gc.freeze()`` once the subscribers wait, the recipe of
``docs/deploying.md``); ``tuned`` (that, plus ``gc.set_threshold(200, 10,
1_000_000_000)``: smaller young collections and no automatic full ones).

The peer ``trio-channels`` is plain trio: one memory channel per subscriber,
``send_nowait`` to each in one pass, no slices.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio
import trio.testing

RESULTS = Path(__file__).parent / "results"
TUNED = (200, 10, 1_000_000_000)


class GcWatch:
    """The collections that ran while armed: count and longest, per generation."""

    def __init__(self) -> None:
        self.armed = False
        self.count = [0, 0, 0]
        self.longest = [0.0, 0.0, 0.0]
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self.armed:
            generation = info["generation"]
            self.count[generation] += 1
            spent = time.perf_counter() - self._started
            self.longest[generation] = max(self.longest[generation], spent)


async def run_one(
    peer: str, subscribers: int, events: int, gc_mode: str, fanout_slice: int
) -> dict[str, Any]:
    """One measurement, in this process."""
    if gc_mode == "tuned":
        gc.set_threshold(*TUNED)
    watch = GcWatch()
    received = 0
    all_received = trio.Event()
    expected = subscribers * events

    def got_one() -> None:
        nonlocal received
        received += 1
        if received == expected:
            all_received.set()

    async with trio.open_nursery() as nursery:
        started = time.perf_counter()
        publish = await start_subscribers(nursery, peer, subscribers, got_one, fanout_slice)
        subscribed = time.perf_counter() - started
        await trio.testing.wait_all_tasks_blocked()
        if gc_mode in ("freeze", "tuned"):
            gc.collect(1)
            gc.freeze()
        longest = 0.0

        async def ticker() -> None:
            nonlocal longest
            last = time.perf_counter()
            while True:
                await trio.lowlevel.checkpoint()
                now = time.perf_counter()
                longest = max(longest, now - last)
                last = now

        nursery.start_soon(ticker)
        await trio.sleep(0.2)
        longest = 0.0
        watch.armed = True
        started = time.perf_counter()
        for i in range(events):
            await publish(f"event {i}")
        await all_received.wait()
        delivered = time.perf_counter() - started
        watch.armed = False
        nursery.cancel_scope.cancel()
    return {
        "peer": peer,
        "gc": gc_mode,
        "fanout_slice": fanout_slice,
        "subscribers": subscribers,
        "events": events,
        "subscribe_s": round(subscribed, 3),
        "deliver_s": round(delivered, 3),
        "us_per_delivery": round(delivered / expected * 1e6, 2),
        "longest_gap_ms": round(longest * 1000, 1),
        "collections": watch.count,
        "longest_collection_ms": [round(t * 1000, 1) for t in watch.longest],
    }


async def start_subscribers(
    nursery: trio.Nursery, peer: str, n: int, got_one: Any, fanout_slice: int
) -> Any:
    """Start ``n`` subscriber tasks; return ``async publish(data)``."""
    if peer == "trio-sse":
        from trio_sse import Broker, Event, TopicOptions

        topic = Broker(TopicOptions(fanout_slice=fanout_slice)).topic("bench")

        async def subscriber(*, task_status: trio.TaskStatus[None]) -> None:
            async with topic.subscribe() as subscription:
                task_status.started()
                async for _ in subscription:
                    got_one()

        for _ in range(n):
            await nursery.start(subscriber)

        async def publish_sse(data: str) -> None:
            await topic.publish(Event(data))

        return publish_sse

    senders: list[trio.MemorySendChannel[str]] = []

    async def channel_subscriber(receive: trio.MemoryReceiveChannel[str]) -> None:
        async for _ in receive:
            got_one()

    for _ in range(n):
        send, receive = trio.open_memory_channel[str](64)
        senders.append(send)
        nursery.start_soon(channel_subscriber, receive)

    async def publish_channels(data: str) -> None:
        for send in senders:
            send.send_nowait(data)
        await trio.lowlevel.checkpoint()

    return publish_channels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3, help="fresh processes per combination")
    parser.add_argument("--peers", default="trio-sse,trio-channels")
    parser.add_argument("--gc", default="default,freeze,tuned", help="collector settings to try")
    parser.add_argument(
        "--fanout-slice", type=int, default=500, help="trio-sse's TopicOptions.fanout_slice"
    )
    parser.add_argument("--no-save", action="store_true", help="do not write a results file")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: PEER,GC in this process
    args = parser.parse_args()
    if args.one:
        peer, gc_mode = args.one.split(",")
        result = trio.run(run_one, peer, args.subscribers, args.events, gc_mode, args.fanout_slice)
        print(json.dumps(result))
        return
    rows: list[dict[str, Any]] = []
    for gc_mode in args.gc.split(","):
        for run in range(args.runs):
            for peer in args.peers.split(","):
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--one",
                        f"{peer},{gc_mode}",
                        "--subscribers",
                        str(args.subscribers),
                        "--events",
                        str(args.events),
                        "--fanout-slice",
                        str(args.fanout_slice),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=600,
                )
                row = json.loads(out.stdout.splitlines()[-1])
                row["run"] = run
                rows.append(row)
                print(
                    f"{peer:14} gc={gc_mode:8} run {run}: gap {row['longest_gap_ms']:7.1f} ms, "
                    f"{row['us_per_delivery']:6.2f} us/delivery, collections {row['collections']}, "
                    f"longest {row['longest_collection_ms']} ms",
                    flush=True,
                )
    print()
    print("| subscribers | peer | gc | longest gap, ms | µs per delivery | full collections |")
    print("|---:|---|---|---|---|---|")
    for gc_mode in args.gc.split(","):
        for peer in args.peers.split(","):
            mine = [r for r in rows if r["peer"] == peer and r["gc"] == gc_mode]
            gaps = [r["longest_gap_ms"] for r in mine]
            us = [r["us_per_delivery"] for r in mine]
            full = [r["collections"][2] for r in mine]
            print(
                f"| {args.subscribers:,} | {peer} | {gc_mode} | {min(gaps)} to {max(gaps)} | "
                f"{statistics.median(us)} ({min(us)} to {max(us)}) | {min(full)} to {max(full)} |"
            )
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / time.strftime("gap-%Y%m%d-%H%M%S.json", time.gmtime())
        meta = {"python": sys.version.split()[0], "cpus": os.cpu_count(), "argv": sys.argv[1:]}
        path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
        print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
