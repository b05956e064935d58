"""The client against other servers, over real sockets on 127.0.0.1.

Every peer serves the same ``GET /numbers`` (see ``tests/peers/``): after the
client's ``Last-Event-ID``, two events named ``number`` with ids ``n`` and
two-line data ``n<n>`` / ``after <the Last-Event-ID the server received>``,
the first with ``retry: 10``; then the response ends (``?hold=1``: stays open).
Peers: trio-sse (raw server and under hypercorn), sse-starlette under
hypercorn's trio worker (in process), aiohttp-sse (a subprocess) and
Node/Express (a subprocess; Express is installed into ``benchmarks/node`` by
``npm install`` on first use, as the benchmark does).

Each peer is checked for named events, multi-line data, ids and ``retry``, for
a reconnection with ``Last-Event-ID`` after the server ended the response, and
after the server was stopped (connection dropped) and started again on the
same port.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
import trio
from servers import hypercorn_config, start_hypercorn
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.routing import Route

from trio_sse import App, Event, EventStream, Request, open_event_source

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE.parent / "benchmarks" / "node"
PEERS = ["trio-sse-raw", "trio-sse-hypercorn", "sse-starlette", "aiohttp-sse", "express"]


def trio_sse_app() -> App:
    app = App()

    @app.stream("/numbers")
    async def numbers(request: Request, stream: EventStream) -> None:
        last = request.last_event_id
        start = int(last or 0)
        for n in range(start + 1, start + 3):
            await stream.send(
                Event(
                    f"n{n}\nafter {last or '-'}",
                    event="number",
                    id=str(n),
                    retry=10 if n == start + 1 else None,
                )
            )
        if request.query_param("hold"):
            await trio.sleep_forever()

    return app


def starlette_app() -> Starlette:
    async def numbers(request: StarletteRequest) -> EventSourceResponse:
        last = request.headers.get("last-event-id")
        start = int(last or 0)

        async def events() -> AsyncIterator[ServerSentEvent]:
            for n in range(start + 1, start + 3):
                yield ServerSentEvent(
                    f"n{n}\nafter {last or '-'}",
                    event="number",
                    id=str(n),
                    retry=10 if n == start + 1 else None,
                )
            if request.query_params.get("hold"):
                await anyio.sleep_forever()

        return EventSourceResponse(events())

    return Starlette(routes=[Route("/numbers", numbers)])


@dataclass
class Peer:
    """A running peer: its base URL, and a way to restart it on the same port."""

    url: str
    restart: Callable[[], Awaitable[None]]


async def start_in_process(nursery: trio.Nursery, kind: str, port: int) -> Callable[[], None]:
    """Start an in-process peer on ``port``; return what stops it."""
    if kind == "trio-sse-raw":
        import trio_sse

        cancel = trio.CancelScope()

        async def run(*, task_status: trio.TaskStatus[None]) -> None:
            with cancel:
                await trio_sse.serve(trio_sse_app(), "127.0.0.1", port, task_status=task_status)

        await nursery.start(run)
        return cancel.cancel
    asgi = trio_sse_app() if kind == "trio-sse-hypercorn" else starlette_app()
    server = await start_hypercorn(nursery, asgi, hypercorn_config(bind=[f"127.0.0.1:{port}"]))
    return server._stop


async def start_subprocess(kind: str, port: int) -> tuple[trio.Process, int]:
    if kind == "aiohttp-sse":
        command = [sys.executable, str(HERE / "peers" / "aiohttp_numbers.py"), str(port)]
    else:
        command = ["node", str(HERE / "peers" / "express_numbers.js"), str(port)]
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE)
    assert process.stdout is not None
    line = b""
    with trio.fail_after(20):
        while not line.endswith(b"\n"):
            chunk = await process.stdout.receive_some(100)
            assert chunk, f"{kind} peer exited with {await process.wait()}"
            line += chunk
    return process, int(line)


def install_express() -> None:
    """``npm install`` the benchmark's Express, once, if it is missing."""
    if not (NODE_DIR / "node_modules" / "express").is_dir():
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(NODE_DIR)],
            check=True,
            timeout=300,
            stdout=subprocess.DEVNULL,
        )


@pytest.fixture(params=PEERS)
async def peer(request: pytest.FixtureRequest, nursery: trio.Nursery) -> AsyncIterator[Peer]:
    kind: str = request.param
    if kind in ("trio-sse-raw", "trio-sse-hypercorn", "sse-starlette"):
        with trio.socket.socket() as sock:  # a free port, to restart on
            await sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        stop = await start_in_process(nursery, kind, port)

        async def restart_in_process() -> None:
            nonlocal stop
            stop()
            await trio.sleep(0.05)  # the client sees the drop, then refused connections
            stop = await start_in_process(nursery, kind, port)

        yield Peer(f"http://127.0.0.1:{port}", restart_in_process)
        return
    if kind == "express":
        await trio.to_thread.run_sync(install_express)
    process, port = await start_subprocess(kind, 0)

    async def restart_process() -> None:
        nonlocal process
        process.kill()
        await process.wait()
        await trio.sleep(0.05)
        process, _ = await start_subprocess(kind, port)

    try:
        yield Peer(f"http://127.0.0.1:{port}", restart_process)
    finally:
        process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


def expected(n: int, after: str) -> tuple[str, str, str]:
    return ("number", f"n{n}\nafter {after}", str(n))


async def test_events_retry_and_resume_after_the_response_ends(peer: Peer) -> None:
    reconnects: list[tuple[Exception | None, float]] = []
    with trio.fail_after(10):
        async with open_event_source(
            f"{peer.url}/numbers", on_reconnect=lambda e, d: reconnects.append((e, d))
        ) as source:
            events = [await anext(source) for _ in range(5)]
            assert source.retry == 0.010
    assert [(e.type, e.data, e.last_event_id) for e in events] == [
        expected(1, "-"),
        expected(2, "-"),
        expected(3, "2"),
        expected(4, "2"),
        expected(5, "4"),
    ]
    # Each response ended cleanly; reconnected after the server's retry.
    assert reconnects == [(None, 0.010), (None, 0.010)]


async def test_resume_after_a_server_restart(peer: Peer) -> None:
    errors: list[Exception | None] = []
    with trio.fail_after(20):
        async with open_event_source(
            f"{peer.url}/numbers?hold=1",
            max_backoff=0.1,
            on_reconnect=lambda e, d: errors.append(e),
        ) as source:
            first = [await anext(source) for _ in range(2)]
            await peer.restart()
            after = [await anext(source) for _ in range(2)]
            assert source.connections == 2
    assert [(e.type, e.data, e.last_event_id) for e in first + after] == [
        expected(1, "-"),
        expected(2, "-"),
        expected(3, "2"),
        expected(4, "2"),
    ]
    assert errors  # the drop (and any refused attempt) was reported


async def test_last_event_id_setting_is_sent_first(peer: Peer) -> None:
    with trio.fail_after(10):
        async with open_event_source(f"{peer.url}/numbers", last_event_id="7") as source:
            event = await anext(source)
    assert (event.type, event.data, event.last_event_id) == expected(8, "7")
