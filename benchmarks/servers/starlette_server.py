"""sse-starlette on uvicorn (uvloop, httptools): one asyncio.Queue per client.

The usual recipe: a ticker task started by the lifespan puts each event into
every subscriber's queue; each response's generator awaits its queue and
yields the event. ``sep="\\n"`` makes the wire bytes match the other peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

import uvicorn
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).parent))
from _common import parse_args, payload

ARGS = parse_args(__doc__.splitlines()[0])
clients: set[asyncio.Queue[str]] = set()


async def ticker() -> None:
    loop = asyncio.get_running_loop()
    pad = "x" * ARGS.padding
    period = 1.0 / ARGS.rate
    seq = 0
    deadline = loop.time()
    while True:
        deadline += period
        await asyncio.sleep(max(0.0, deadline - loop.time()))
        seq += 1
        data = payload(seq, pad)
        for queue in clients:
            queue.put_nowait(data)


async def sub(request):  # type: ignore[no-untyped-def]
    queue: asyncio.Queue[str] = asyncio.Queue()
    clients.add(queue)

    async def events():  # type: ignore[no-untyped-def]
        try:
            while True:
                yield {"data": await queue.get()}
        finally:
            clients.discard(queue)

    return EventSourceResponse(events(), sep="\n")


@contextlib.asynccontextmanager
async def lifespan(app):  # type: ignore[no-untyped-def]
    task = asyncio.create_task(ticker())
    yield
    task.cancel()


app = Starlette(routes=[Route("/sub", sub)], lifespan=lifespan)

if __name__ == "__main__":
    uvicorn.run(
        app,
        host=ARGS.host,
        port=ARGS.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        backlog=4096,
    )
