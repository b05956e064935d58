"""aiohttp + aiohttp-sse: one asyncio.Queue per client, like the library's examples.

A ticker task started on application start-up puts each event into every
subscriber's queue; each handler awaits its queue and sends. ``sep="\\n"``
makes the wire bytes match the other peers.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from aiohttp import web
from aiohttp_sse import sse_response

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


async def sub(request: web.Request) -> web.StreamResponse:
    queue: asyncio.Queue[str] = asyncio.Queue()
    clients.add(queue)
    try:
        async with sse_response(request, sep="\n") as response:
            while True:
                await response.send(await queue.get())
    finally:
        clients.discard(queue)
    return response


async def start_ticker(app: web.Application) -> None:
    app["ticker"] = asyncio.create_task(ticker())


def main() -> None:
    app = web.Application()
    app.router.add_get("/sub", sub)
    app.on_startup.append(start_ticker)
    web.run_app(app, host=ARGS.host, port=ARGS.port, access_log=None, print=None, backlog=4096)


if __name__ == "__main__":
    main()
