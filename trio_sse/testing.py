"""Test your streams in process, in milliseconds: a client for an App without sockets.

Theory of operation: :func:`open_test_client` serves the :class:`~trio_sse.App`
with the real server (:func:`trio_sse.serve_listeners`: the same request
parsing, heartbeats, write deadline, stream lifetime, lifespan and background
tasks) on an in-memory listener. Each request opens a new in-memory
connection (:func:`trio.testing.memory_stream_pair`) and speaks HTTP/1.1 over
it with h11. Nothing waits on a real clock or a socket, so everything works
under ``trio.testing.MockClock(autojump_threshold=0)`` (pytest-trio's
``autojump_clock`` fixture): ``await trio.sleep(3600)`` in a test is instant,
and a 15-second heartbeat arrives at once.

Two ways in:

* :meth:`TestClient.stream` opens one stream and gives a :class:`TestStream`
  with helpers: the next N events, the next heartbeat, the end of the stream,
  a disconnect, and the id to resume from;
* :attr:`TestClient.http` is an :class:`httpx.AsyncClient` on the same
  in-memory connections (needs ``trio-sse[client]``), for ordinary requests
  and for :func:`trio_sse.open_event_source`, which then reconnects and
  resumes against the App exactly as it would over the network.

A client that stops reading: ``client.stream(path, unbuffered=True)`` uses a
:func:`trio.testing.lockstep_stream_pair`, which buffers nothing; while the
test does not read, the server's writes block, and ``Config.write_timeout``
ends the stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, final

import h11
import trio
import trio.testing

from ._app import App
from ._codec import Decoder, MessageEvent
from ._config import Config
from ._errors import unwrap_groups
from ._memory_wire import _Connection, _MemoryListener
from ._server import serve_listeners

if TYPE_CHECKING:
    import httpx

__all__ = ["TestClient", "TestStream", "open_test_client"]


@final
class TestStream:
    """One open event stream of a :class:`TestClient`.

    Attributes:
        status: the response status.
        headers: the response headers (names lowercase).
        raw: every byte of the body received so far.
        heartbeats: how many comment lines (heartbeats) arrived so far.
        ended: whether the body has ended (or the connection closed).
        complete: whether it ended with HTTP/1.1's end of body, not a broken
            connection.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, connection: _Connection, response: h11.Response, last_event_id: str) -> None:
        self._connection = connection
        self.status: int = response.status_code
        self.headers = {k.decode().lower(): v.decode() for k, v in response.headers}
        self.raw = bytearray()
        self.heartbeats = 0
        self.ended = False
        self._decoder = Decoder(last_event_id)
        self._events: list[MessageEvent] = []
        self._line = b""

    @property
    def complete(self) -> bool:  # noqa: D102 - documented in the class
        return self._connection.complete

    @property
    def last_event_id(self) -> str:
        """The id to resume from: that of the events received so far."""
        return self._decoder.last_event_id

    @property
    def retry(self) -> int | None:
        """The last ``retry`` (milliseconds) the stream sent, or ``None``."""
        return self._decoder.retry

    async def _pump(self) -> bool:
        # Read one piece of the body; False once it ended.
        if self.ended:
            return False
        data = await self._connection.receive()
        if not data:
            self.ended = True
            return False
        self.raw += data
        lines = (self._line + data).replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        self._line = lines.pop()
        self.heartbeats += sum(1 for line in lines if line.startswith(b":"))
        self._events += self._decoder.feed(data)
        return True

    async def events(self, n: int) -> list[MessageEvent]:
        """Wait for the next ``n`` events.

        Raises:
            AssertionError: the stream ended first.
        """
        while len(self._events) < n:
            if not await self._pump():
                raise AssertionError(
                    f"the stream ended after {len(self._events)} of {n} events: {self._events!r}"
                )
        out, self._events = self._events[:n], self._events[n:]
        return out

    async def event(self) -> MessageEvent:
        """Wait for the next event."""
        return (await self.events(1))[0]

    async def heartbeat(self) -> None:
        """Wait for the next heartbeat (comment line); events arriving meanwhile are kept.

        Raises:
            AssertionError: the stream ended first.
        """
        seen = self.heartbeats
        while self.heartbeats == seen:
            if not await self._pump():
                raise AssertionError("the stream ended before a heartbeat arrived")

    async def rest(self) -> list[MessageEvent]:
        """Read to the end of the stream; return the events not taken yet."""
        while await self._pump():
            pass
        out, self._events = self._events, []
        return out

    async def disconnect(self) -> None:
        """Close the connection, as a client going away does."""
        self.ended = True
        await self._connection.aclose()


@final
class TestClient:
    """Requests to an App served in process; made by :func:`open_test_client`.

    Attributes:
        app: the App under test.
    """

    __test__ = False

    def __init__(self, app: App, listener: _MemoryListener) -> None:
        self.app = app
        self._listener = listener
        self._http: httpx.AsyncClient | None = None

    @asynccontextmanager
    async def stream(
        self,
        path: str,
        *,
        last_event_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        method: str = "GET",
        body: bytes = b"",
        unbuffered: bool = False,
    ) -> AsyncIterator[TestStream]:
        """Open a stream (any response, in fact: check :attr:`TestStream.status`).

        Args:
            path: the request target, e.g. ``"/prices?symbol=TRIO"``.
            last_event_id: sent as ``Last-Event-ID`` (resume after this id).
            headers: extra request headers.
            method: the request method.
            body: the request body.
            unbuffered: no buffer between server and test (a
                :func:`trio.testing.lockstep_stream_pair`): the server's
                writes wait until the test reads, so a test that stops
                reading is a client that stops reading.

        The connection is closed when the block is left.
        """
        raw = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        raw.insert(0, (b"accept", b"text/event-stream"))
        if last_event_id is not None:
            raw.append((b"last-event-id", last_event_id.encode()))
        connection = _Connection(await self._listener.connect(unbuffered=unbuffered))
        try:
            response = await connection.request(method, path, raw, body)
            yield TestStream(connection, response, last_event_id or "")
        finally:
            await connection.aclose()

    @property
    def http(self) -> httpx.AsyncClient:
        """An :class:`httpx.AsyncClient` for ``http://testserver`` on in-memory connections.

        Pass it to :func:`trio_sse.open_event_source` as ``client=`` (with a
        path as the URL) to test reconnection and resume. Needs
        ``trio-sse[client]``.
        """
        if self._http is None:
            from ._testing_transport import MemoryTransport

            self._http = MemoryTransport.client(self._listener)
        return self._http

    async def aclose(self) -> None:
        """Close :attr:`http` if it was made."""
        if self._http is not None:
            await self._http.aclose()


@asynccontextmanager
async def open_test_client(app: App, *, config: Config | None = None) -> AsyncIterator[TestClient]:
    """Serve ``app`` in process; yield a :class:`TestClient` for it.

    Args:
        app: the App to test (its lifespan is entered, its background tasks
            run, for the duration of the block).
        config: the :class:`~trio_sse.Config` to serve with (default
            ``app.config``), e.g. a short ``heartbeat_interval``.

    Leaving the block shuts the server down as cancelling :func:`trio_sse.serve`
    would (streams still open get their final ``retry`` event). An exception
    raised in the block, or by the App's lifespan or background tasks, comes
    out as itself, not inside an ``ExceptionGroup``; one raised by a handler
    is logged and answered as in production (a 500, or the end of a stream).
    """
    listener = _MemoryListener()
    # Nested nurseries (server, lifespan, background tasks) wrap an error
    # once per level: give the one error, if there is one, as itself.
    with unwrap_groups():
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_listeners, app, [listener], config=config))
            client = TestClient(app, listener)
            try:
                yield client
            finally:
                await client.aclose()
                nursery.cancel_scope.cancel()
