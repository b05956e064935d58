"""The one place the tests start servers: in process, on either server, or as a process.

* :func:`serving` runs the raw :class:`~trio_sse._server.Server` in the
  test's trio loop, on a :class:`~clients.MemoryListener` (the autojump clock
  works) or with ``tcp=True`` on a loopback port; :func:`running`,
  :func:`running_tcp` and :func:`connected` are its shorter views.
* The ``serve_app`` fixture is parametrized over ``["raw", "hypercorn"]``: a
  test that takes it runs twice, once against :func:`trio_sse.serve`
  (:func:`start_raw`) and once against ``hypercorn.trio.serve`` with the App
  as an ASGI application (:func:`start_hypercorn`). Both listen on
  ``127.0.0.1`` on a free port and run in the test's ``nursery``;
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

* :func:`serving_process` runs a server command (``trio-sse serve ...``, a
  script calling :func:`trio_sse.run`) as a child process and waits for its
  ``serving on`` line.

Every server is spoken to with the one client of ``tests/clients.py`` (or
httpx, :meth:`RunningServer.client`). ``tests/conftest.py`` imports the
fixtures, so any test module can use them.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

import httpx
import hypercorn.config
import hypercorn.trio
import pytest
import trio
from clients import Client, MemoryListener

import trio_sse
from trio_sse._server import Server

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

    async def connect(self) -> Client:
        """A :class:`~clients.Client` on a new TCP connection to the server."""
        return await Client.connect(self.host, self.port)

    async def request(
        self,
        method: str,
        target: str,
        headers: dict[str, str] | None = None,
        chunks: list[bytes] | None = None,
    ) -> Client:
        """Send one request on a new connection and read the response head.

        The body is read with the :class:`~clients.Client`'s stream methods
        (``events``, ``pump``, ``rest``). Close it with ``aclose()``.
        """
        client = await self.connect()
        return await client.open(method, target, list((headers or {}).items()), chunks=chunks)

    async def stop(self) -> None:
        """Shut the server down gracefully and wait until it has stopped."""
        self._stop()
        await self._done.wait()


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


@dataclass
class Running:
    """The raw :class:`Server` started by :func:`serving`, in the test's trio loop."""

    server: Server
    listener: MemoryListener  # in memory; takes no connection when ``tcp=True``
    port: int  # the loopback TCP port with ``tcp=True``, else 0
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    stopped: trio.Event = field(default_factory=trio.Event)
    stopped_at: float | None = None

    async def client(self) -> Client:
        """A :class:`~clients.Client` on a new connection (TCP with ``tcp=True``)."""
        if self.port:
            return await Client.connect("127.0.0.1", self.port)
        return await self.listener.client()

    async def shutdown(self) -> float:
        """Cancel the server as cancelling ``serve`` would; return how long it took to return."""
        start = trio.current_time()
        self.scope.cancel()
        await self.stopped.wait()
        assert self.stopped_at is not None
        return self.stopped_at - start


@asynccontextmanager
async def serving(
    app: trio_sse.App,
    config: trio_sse.Config | None = None,
    *more: trio.abc.Listener[Any],
    tcp: bool = False,
) -> AsyncIterator[Running]:
    """Run the raw :class:`Server` for ``app``: the one in-process server of the tests.

    It listens on a :class:`~clients.MemoryListener` (and ``more``), or with
    ``tcp=True`` on a real ``127.0.0.1`` port instead. Leaving the block shuts
    it down gracefully (as cancelling :func:`trio_sse.serve` would) and waits
    for it.
    """
    listener = MemoryListener()
    listeners: list[trio.abc.Listener[Any]] = [listener, *more]
    port = 0
    if tcp:
        listeners = [*await trio.open_tcp_listeners(0, host="127.0.0.1"), *more]
        port = listeners[0].socket.getsockname()[1]  # type: ignore[attr-defined]
    server = Server(app, config if config is not None else app.config)
    running = Running(server, listener, port)

    async def run(*, task_status: trio.TaskStatus[None]) -> None:
        with running.scope:
            await server.run(listeners, task_status=task_status)
        running.stopped_at = trio.current_time()
        running.stopped.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(run)
        yield running
        running.scope.cancel()


@asynccontextmanager
async def running(
    app: trio_sse.App,
    config: trio_sse.Config | None = None,
    listeners: Sequence[trio.abc.Listener[Any]] | None = None,
) -> AsyncIterator[tuple[Server, MemoryListener]]:
    """:func:`serving` in memory: ``(server, listener)``."""
    async with serving(app, config, *(listeners or ())) as r:
        yield r.server, r.listener


@asynccontextmanager
async def running_tcp(
    app: trio_sse.App, config: trio_sse.Config | None = None
) -> AsyncIterator[tuple[Server, int, trio.CancelScope]]:
    """:func:`serving` on loopback TCP: ``(server, port, scope)``; cancel ``scope`` to shut down."""
    async with serving(app, config, tcp=True) as r:
        yield r.server, r.port, r.scope


@asynccontextmanager
async def connected(
    app: trio_sse.App,
    config: trio_sse.Config | None = None,
    listeners: Sequence[trio.abc.Listener[Any]] | None = None,
) -> AsyncIterator[tuple[Server, Client]]:
    """:func:`running`, with a :class:`~clients.Client` already connected: ``(server, client)``."""
    async with running(app, config, listeners) as (server, listener):
        yield server, await listener.client()


async def start_raw(
    nursery: trio.Nursery, app: trio_sse.App, config: trio_sse.Config | None = None, port: int = 0
) -> RunningServer:
    """Serve ``app`` with :func:`trio_sse.serve` on ``127.0.0.1:port`` in ``nursery``."""
    done = trio.Event()
    cancel = trio.CancelScope()

    async def run(*, task_status: trio.TaskStatus[list[trio.SocketListener]]) -> None:
        try:
            with cancel:
                await trio_sse.serve(app, "127.0.0.1", port, config=config, task_status=task_status)
        finally:
            done.set()

    listeners: list[trio.SocketListener] = await nursery.start(run)
    bound = listeners[0].socket.getsockname()[1]
    return RunningServer("raw", "127.0.0.1", bound, cancel.cancel, done)


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
    host, _, port = binds[0].partition("://")[2].rpartition(":")
    return RunningServer("hypercorn", host, int(port), shutdown.set, done)


def read_log(log: IO[bytes]) -> bytes:
    """Everything in the file a child process writes its output to.

    Reads with ``os.pread``: the child shares the file's offset, so a
    ``seek(0)`` here would make its next write land over what it wrote before.
    """
    data = b""
    while chunk := os.pread(log.fileno(), 1 << 16, len(data)):
        data += chunk
    return data


@dataclass
class ServerProcess:
    """A server in a child process, started by :func:`serving_process`."""

    proc: subprocess.Popen[bytes]
    port: int
    _log: IO[bytes] = field(repr=False)

    def log(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        return read_log(self._log).decode(errors="replace")

    def stop(self, signum: int = signal.SIGINT) -> str:
        """Signal the process (Ctrl-C by default), wait for it; return its log.

        Asserts a clean exit: status 0 and no traceback.
        """
        self.proc.send_signal(signum)
        returncode = self.proc.wait(timeout=20)
        log = self.log()
        assert returncode == 0, log
        assert "Traceback" not in log, log
        return log


@contextmanager
def serving_process(
    command: Sequence[str], *, cwd: Path | str | None = None, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    """Run a server ``command``; yield once it logged ``serving on http://127.0.0.1:PORT/``.

    Its output goes to a file (a pipe nobody reads could fill up and stall
    it). The process is killed at the end if it still runs.
    """
    with (
        tempfile.TemporaryFile() as log,
        subprocess.Popen(
            command,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        ) as proc,
    ):
        try:
            deadline = time.monotonic() + 20
            while True:
                found = re.search(rb"serving on http://127\.0\.0\.1:(\d+)/", read_log(log))
                if found:
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"{command} did not serve:\n{read_log(log).decode()}")
                time.sleep(0.02)
            yield ServerProcess(proc, int(found.group(1)), log)
        finally:
            proc.kill()
            proc.wait(timeout=10)


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


async def serve_topic(
    nursery: trio.Nursery, config: trio_sse.Config
) -> tuple[int, trio_sse.Topic, trio_sse.App]:
    """The raw server on a free port with one topic ``t`` (no history) at ``/sub``."""
    app = trio_sse.App(config=config)
    broker = trio_sse.Broker(trio_sse.TopicOptions(history_size=0))
    topic = broker.topic("t")
    app.add_route("/sub", trio_sse.topic_stream(broker, ["t"]))
    listeners = await nursery.start(trio_sse.serve, app, "127.0.0.1", 0)
    return listeners[0].socket.getsockname()[1], topic, app
