"""Run one App on either server, for tests that must hold on both.

The ``serve_app`` fixture is parametrized over ``["raw", "hypercorn"]``: a
test that takes it runs twice, once against :func:`trio_sse.serve` and once
against ``hypercorn.trio.serve`` with the App as an ASGI application. Both
listen on ``127.0.0.1`` on a free port and run in the test's ``nursery``;
:meth:`RunningServer.stop` shuts either down gracefully (the test nursery
cancels whatever is left at the end)::

    async def test_hello(serve_app):
        app = App()

        @app.get("/")
        async def index(request):
            return "hi"

        server = await serve_app(app)
        async with server.client() as client:
            assert (await client.get("/")).text == "hi"

``tests/conftest.py`` imports the fixtures, so any test module can use them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import h11
import httpx
import hypercorn.config
import hypercorn.trio
import pytest
import trio

import trio_sse

SERVER_KINDS = ["raw", "hypercorn"]


@dataclass
class RunningServer:
    """A server started by ``serve_app``."""

    kind: str
    host: str
    port: int
    _stop: Callable[[], None] = field(repr=False)
    _done: trio.Event = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        """An httpx client for this server (HTTP/1.1 unless told otherwise)."""
        kwargs.setdefault("timeout", 5.0)
        return httpx.AsyncClient(base_url=self.url, **kwargs)

    async def open_stream(self) -> trio.SocketStream:
        """A raw TCP connection to the server."""
        return await trio.open_tcp_stream(self.host, self.port)

    async def request(
        self,
        method: str,
        target: str,
        headers: dict[str, str] | None = None,
        chunks: list[bytes] | None = None,
    ) -> H11Response:
        """Send one request on a new connection; read the body with ``data()``.

        For streams left open: unlike httpx, nothing to finalize. Close it
        with ``aclose()``.
        """
        response = H11Response(await self.open_stream())
        await response.send_request(method, target, headers or {}, chunks)
        return response

    async def stop(self) -> None:
        """Shut the server down gracefully and wait until it has stopped."""
        self._stop()
        await self._done.wait()


class H11Response:
    """A minimal HTTP/1.1 client connection (h11) for reading streams."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)
        self.status = 0
        self.headers: dict[str, str] = {}

    async def send_request(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        chunks: list[bytes] | None = None,
    ) -> None:
        head = [("host", "test"), *headers.items()]
        if chunks is not None:
            head.append(("transfer-encoding", "chunked"))
        data = self.conn.send(h11.Request(method=method, target=target, headers=head)) or b""
        for chunk in chunks or []:
            data += self.conn.send(h11.Data(data=chunk)) or b""
        data += self.conn.send(h11.EndOfMessage()) or b""
        await self.stream.send_all(data)
        event = await self._next_event()
        assert isinstance(event, h11.Response), event
        self.status = event.status_code
        self.headers = {k.decode(): v.decode() for k, v in event.headers}

    async def _next_event(self) -> Any:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.conn.receive_data(await self.stream.receive_some(65536))

    async def data(self) -> bytes:
        """The next piece of the body; ``b""`` at its end."""
        while True:
            event = await self._next_event()
            if isinstance(event, h11.Data):
                if event.data:
                    return bytes(event.data)
                continue
            assert isinstance(event, h11.EndOfMessage | h11.ConnectionClosed), event
            return b""

    async def aclose(self) -> None:
        await self.stream.aclose()


def hypercorn_config(**overrides: Any) -> hypercorn.config.Config:
    """A hypercorn Config for tests: loopback, any port, quiet, quick shutdown."""
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.graceful_timeout = 1.0
    config.errorlog = logging.getLogger("hypercorn.error")
    config.accesslog = None
    for name, value in overrides.items():
        setattr(config, name, value)
    return config


async def start_raw(nursery: trio.Nursery, app: trio_sse.App) -> RunningServer:
    done = trio.Event()
    cancel = trio.CancelScope()

    async def run(*, task_status: trio.TaskStatus[list[trio.SocketListener]]) -> None:
        try:
            with cancel:
                await trio_sse.serve(app, "127.0.0.1", 0, task_status=task_status)
        finally:
            done.set()

    listeners: list[trio.SocketListener] = await nursery.start(run)
    port = listeners[0].socket.getsockname()[1]
    return RunningServer("raw", "127.0.0.1", port, cancel.cancel, done)


async def start_hypercorn(
    nursery: trio.Nursery, app: Any, config: hypercorn.config.Config | None = None
) -> RunningServer:
    """Serve an ASGI ``app`` (a trio_sse.App, or e.g. a Starlette app around one)."""
    done = trio.Event()
    shutdown = trio.Event()
    cfg = config if config is not None else hypercorn_config()

    async def run(*, task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            await hypercorn.trio.serve(
                app, cfg, shutdown_trigger=shutdown.wait, task_status=task_status
            )
        finally:
            done.set()

    binds: list[str] = await nursery.start(run)
    host, _, port = binds[0].removeprefix("http://").rpartition(":")
    return RunningServer("hypercorn", host, int(port), shutdown.set, done)


@pytest.fixture(params=SERVER_KINDS)
def server_kind(request: pytest.FixtureRequest) -> str:
    """``"raw"`` or ``"hypercorn"``."""
    return str(request.param)


@pytest.fixture
def serve_app(
    server_kind: str, nursery: trio.Nursery
) -> Callable[[trio_sse.App], Awaitable[RunningServer]]:
    """``await serve_app(app)`` starts ``app`` on the parametrized server."""
    if server_kind == "raw":
        return partial(start_raw, nursery)
    return partial(start_hypercorn, nursery)
