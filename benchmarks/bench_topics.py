"""Topic fan-out cost per subscriber, 1000 subscribers; CPU time, best of 7.

Run with ``python3 noxfile.py -s bench-topics``. "parked" writers wait in
``receive_batch`` (one trio task wake-up per subscriber per event); "direct"
writers have a sink (the private ``Subscription._set_direct_sink``) standing in for the
raw server's non-blocking socket write, so these figures exclude the system
call itself. In-process only: no sockets.
"""

import time
from contextlib import AsyncExitStack

import trio
import trio.testing

from trio_sse import Broker, TopicOptions
from trio_sse._event import Event

N = 1000
ROUNDS = 100
EV = Event("x" * 100)


async def buffered() -> float:
    """publish_nowait with nobody reading: each send_nowait appends to a deque."""
    broker = Broker(TopicOptions(buffer_size=ROUNDS + 1))
    topic = broker.topic("t")
    async with AsyncExitStack() as stack:
        for _ in range(N):
            await stack.enter_async_context(topic.subscribe())
        t0 = time.process_time()
        for _ in range(ROUNDS):
            topic.publish_nowait(EV)
        return (time.process_time() - t0) / ROUNDS / N


async def parked(sink: bool) -> tuple[float, float]:
    """Writers parked in receive_batch; publish, then let every writer run."""
    broker = Broker(TopicOptions(buffer_size=64))
    topic = broker.topic("t")
    written = 0
    out: list[bytes] = []

    def direct(event: Event) -> bool:  # stand-in for a non-blocking socket write
        nonlocal written
        out.append(event.encode_chunk())
        out.clear()
        written += 1
        return True

    async def writer(sub) -> None:
        nonlocal written
        if sink:
            sub._set_direct_sink(direct)
        while batch := await sub.receive_batch(64):
            out.append(b"".join([e.encode_chunk() for e in batch]))  # the write
            out.clear()
            written += len(batch)

    publish_cpu = 0.0
    async with AsyncExitStack() as stack, trio.open_nursery() as nursery:
        for _ in range(N):
            nursery.start_soon(writer, await stack.enter_async_context(topic.subscribe()))
        await trio.testing.wait_all_tasks_blocked()
        t_all = time.process_time()
        for _ in range(ROUNDS):
            t0 = time.process_time()
            topic.publish_nowait(EV)
            publish_cpu += time.process_time() - t0
            await trio.testing.wait_all_tasks_blocked()
        total = time.process_time() - t_all
        assert written == ROUNDS * N, written
        broker.close()
    return publish_cpu / ROUNDS / N, total / ROUNDS / N


async def main() -> None:
    results: dict[str, list[float]] = {}
    for _ in range(7):
        results.setdefault("buffered", []).append(await buffered())
        p, t = await parked(sink=False)
        results.setdefault("parked publish", []).append(p)
        results.setdefault("parked end-to-end", []).append(t)
        p, t = await parked(sink=True)
        results.setdefault("direct publish", []).append(p)
        results.setdefault("direct end-to-end", []).append(t)
    for name, values in results.items():
        best, median = min(values) * 1e6, sorted(values)[3] * 1e6
        print(f"{name:20s} best {best:7.3f} us  median {median:7.3f} us per subscriber")


trio.run(main)
