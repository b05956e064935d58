"""Issue 11, finding 9: hypercorn's crash input, alone and behind nginx.

hypercorn 0.18's trio worker dies on ``GET /hello HTTP/1.0\\r\\n\\r\\nX`` (a
request followed by a byte on a connection that is not kept alive; upstream
hypercorn issues #203/#225). The first test shows the hazard on hypercorn
alone: if it starts failing, hypercorn fixed it, and docs/hypercorn.md must
say so. The second shows the safe deployment of docs/hypercorn.md: nginx
parses HTTP itself, the stray byte never reaches hypercorn, and hypercorn
keeps serving.
"""

from __future__ import annotations

import trio
from clients import Client
from proxies import Processes, http_get, hypercorn_alone, nginx_hypercorn

__all__ = ["hypercorn_alone", "nginx_hypercorn"]

CRASH = b"GET /hello HTTP/1.0\r\n\r\nX"


async def send_crash_input(port: int, times: int) -> None:
    for _ in range(times):
        try:
            async with await Client.connect("127.0.0.1", port) as client:
                await client.send_raw(CRASH)
                await client.wait_closed()
        except OSError:
            return  # the server is gone


async def test_the_crash_input_kills_hypercorn_alone(hypercorn_alone: Processes) -> None:
    with trio.fail_after(30):
        assert (await http_get(hypercorn_alone.hypercorn_port)).startswith(b"HTTP/1.1 200")
        # The crash is a race inside hypercorn: it takes a few to a few dozen tries
        # (more on a loaded machine); sending stops as soon as the server is gone.
        await send_crash_input(hypercorn_alone.hypercorn_port, 100)
        await trio.to_thread.run_sync(hypercorn_alone.hypercorn.wait, 10)
        assert await http_get(hypercorn_alone.hypercorn_port) == b""


async def test_behind_nginx_the_crash_input_does_not_reach_hypercorn(
    nginx_hypercorn: Processes,
) -> None:
    port = nginx_hypercorn.nginx_port
    with trio.fail_after(30):
        assert (await http_get(port)).endswith(b"\r\n\r\nhello")
        await send_crash_input(port, 20)
        reply = await http_get(port)
    assert reply.startswith(b"HTTP/1.1 200"), reply
    assert reply.endswith(b"\r\n\r\nhello")
    assert nginx_hypercorn.hypercorn.poll() is None, "hypercorn died"
