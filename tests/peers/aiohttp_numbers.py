"""An aiohttp + aiohttp-sse peer for the client interop tests (run as a subprocess).

``GET /numbers`` sends, after the client's ``Last-Event-ID`` (0 if none), two
named events with ids and two-line data (the second line says which
``Last-Event-ID`` the server received), the first with ``retry: 10``; then it
ends the response, or with ``?hold=1`` keeps it open. Prints the port on
stdout once listening. Usage: ``python aiohttp_numbers.py PORT`` (0: any).
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web
from aiohttp_sse import sse_response


async def numbers(request: web.Request) -> web.StreamResponse:
    last = request.headers.get("Last-Event-ID")
    start = int(last or 0)
    async with sse_response(request) as response:
        for n in range(start + 1, start + 3):
            await response.send(
                f"n{n}\nafter {last or '-'}",
                id=str(n),
                event="number",
                retry=10 if n == start + 1 else None,
            )
        if request.query.get("hold"):
            await asyncio.Event().wait()
    return response


async def main(port: int) -> None:
    app = web.Application()
    app.router.add_get("/numbers", numbers)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    server = site._server
    assert server is not None
    print(server.sockets[0].getsockname()[1], flush=True)  # type: ignore[attr-defined]
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
