"""Test helpers for driving the raw server with an h11 client.

:class:`MemoryListener` is a :class:`trio.abc.Listener` whose
:meth:`~MemoryListener.connect` hands the server half of a
:func:`trio.testing.memory_stream_pair` (or, with ``lockstep=True``, a
:func:`trio.testing.lockstep_stream_pair`, whose writes block until the peer
reads: a client that stops reading) to the server's ``accept()``.

:class:`Client` is an HTTP/1.1 client on any :class:`trio.abc.Stream`: h11
parses what the server sends, every received byte is also kept in
:attr:`Client.raw` for assertions on framing, and stream bodies are decoded
with :class:`trio_sse.Decoder`.

:func:`running` starts a :class:`trio_sse._server.Server` on some listeners and yields
it (so a test can watch ``server.connections``); leaving the block shuts it
down gracefully and waits for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import h11
import trio
import trio.testing

from trio_sse import App, Config, Decoder, MessageEvent
from trio_sse._server import Server

__all__ = ["Client", "MemoryListener", "Reply", "StreamBody", "running"]


class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    """An in-memory listener: ``connect()`` on the client side, ``accept()`` on the server's.

    Args:
        lockstep: use :func:`trio.testing.lockstep_stream_pair` (no buffering:
            a write waits until the other side reads) instead of
            :func:`trio.testing.memory_stream_pair` (unbounded buffering).

    """

    def __init__(self, *, lockstep: bool = False) -> None:
        self.lockstep = lockstep
        # 0: connect() waits for accept(), like a full backlog would.
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](0)
        self.closed = False

    async def connect(self) -> trio.abc.Stream:
        """Open a connection; return the client's half."""
        pair = (
            trio.testing.lockstep_stream_pair if self.lockstep else trio.testing.memory_stream_pair
        )
        client, server = pair()
        await self._send.send(server)
        return client

    async def accept(self) -> trio.abc.Stream:
        return await self._receive.receive()

    async def aclose(self) -> None:
        self.closed = True
        await self._receive.aclose()


@dataclass
class Reply:
    """A complete (non-streaming) response."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    http_version: str = "1.1"
    informational: list[int] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        """The last value of header ``name`` (case-insensitive), or ``None``."""
        name = name.lower()
        values = [v for k, v in self.headers if k == name]
        return values[-1] if values else None

    def names(self) -> list[str]:
        return [k for k, _ in self.headers]


@dataclass
class StreamBody:
    """What a stream delivered: events (Decoder), body bytes, and how it ended."""

    events: list[MessageEvent]
    body: bytes
    ended: str  # "EndOfMessage" or "ConnectionClosed"
    retry: int | None


class Client:
    """An h11 client on one connection.

    Attributes:
        raw: every byte received so far, exactly as sent by the server.
        conn: the h11 client state.
        decoder: decodes stream bodies (see :meth:`events`).

    """

    def __init__(self, stream: trio.abc.Stream, *, read_size: int = 65536) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)
        self.raw = bytearray()
        self.decoder = Decoder()
        self.body = bytearray()
        self.read_size = read_size
        self._events: list[MessageEvent] = []
        self._informational: list[int] = []
        self.ended: str | None = None

    # -- sending --------------------------------------------------------------

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send(self, *events: Any) -> None:
        data = b"".join(self.conn.send(e) or b"" for e in events)
        await self.stream.send_all(data)

    def request_bytes(
        self,
        method: str = "GET",
        target: str = "/",
        headers: Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
        *,
        http_version: str = "1.1",
    ) -> bytes:
        head: list[tuple[str, str]] = [("host", "test"), *headers]
        names = {k.lower() for k, _ in head}
        if body is not None and "content-length" not in names and "transfer-encoding" not in names:
            head.append(("content-length", str(len(body))))
        data = self.conn.send(
            h11.Request(method=method, target=target, headers=head, http_version=http_version)
        )
        assert data is not None
        if body:
            data += self.conn.send(h11.Data(data=body)) or b""
        data += self.conn.send(h11.EndOfMessage()) or b""
        return data

    async def send_request(
        self,
        method: str = "GET",
        target: str = "/",
        headers: Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
        *,
        http_version: str = "1.1",
    ) -> None:
        await self.send_raw(
            self.request_bytes(method, target, headers, body, http_version=http_version)
        )

    async def request(
        self,
        method: str = "GET",
        target: str = "/",
        headers: Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
        *,
        http_version: str = "1.1",
    ) -> Reply:
        """Send a request and read the whole response; ready for the next one."""
        await self.send_request(method, target, headers, body, http_version=http_version)
        return await self.reply()

    # -- receiving ------------------------------------------------------------

    async def receive_some(self) -> bytes:
        try:
            data = bytes(await self.stream.receive_some(self.read_size))
        except trio.BrokenResourceError:
            data = b""
        self.raw += data
        return data

    async def next_event(self) -> Any:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.conn.receive_data(await self.receive_some())

    async def head(self) -> h11.Response:
        """Read up to the final response head (skipping and recording 1xx)."""
        while True:
            event = await self.next_event()
            if isinstance(event, h11.InformationalResponse):
                self._informational.append(event.status_code)
                continue
            assert isinstance(event, h11.Response), event
            return event

    async def reply(self) -> Reply:
        """Read one whole response; start the next cycle when the connection allows it."""
        self._informational = []
        head = await self.head()
        body = bytearray()
        while True:
            event = await self.next_event()
            if isinstance(event, h11.Data):
                body += event.data
            else:
                assert isinstance(event, h11.EndOfMessage | h11.ConnectionClosed), event
                break
        reply = Reply(
            head.status_code,
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in head.headers],
            bytes(body),
            head.http_version.decode("ascii"),
            self._informational,
        )
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        return reply

    async def _pump_body(self) -> bool:
        """Process one body event; False once the body ended."""
        event = await self.next_event()
        if isinstance(event, h11.Data):
            self.body += event.data
            self._events += self.decoder.feed(bytes(event.data))
            return True
        assert isinstance(event, h11.EndOfMessage | h11.ConnectionClosed), event
        self.ended = type(event).__name__
        return False

    async def events(self, n: int) -> list[MessageEvent]:
        """Wait for the next ``n`` events of a stream body."""
        while len(self._events) < n:
            if not await self._pump_body():
                raise AssertionError(f"stream ended after {self._events!r}, wanted {n} events")
        out, self._events = self._events[:n], self._events[n:]
        return out

    async def rest(self) -> StreamBody:
        """Read the stream body to its end; return the events not yet taken."""
        while await self._pump_body():
            pass
        out, self._events = self._events, []
        assert self.ended is not None
        return StreamBody(out, bytes(self.body), self.ended, self.decoder.retry)

    async def wait_closed(self) -> bytes:
        """Read raw bytes until the server closes; return what arrived meanwhile."""
        start = len(self.raw)
        while await self.receive_some():
            pass
        return bytes(self.raw[start:])

    async def aclose(self) -> None:
        await self.stream.aclose()


@asynccontextmanager
async def running(
    app: App,
    config: Config | None = None,
    listeners: Sequence[trio.abc.Listener[Any]] | None = None,
) -> AsyncIterator[tuple[Server, MemoryListener]]:
    """Run a :class:`Server` for ``app`` on a fresh :class:`MemoryListener`.

    Yields ``(server, listener)``. On exit the server is shut down gracefully
    (as cancelling :func:`trio_sse.serve` would) and awaited.
    """
    listener = MemoryListener()
    server = Server(app, config if config is not None else app.config)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run, [listener, *(listeners or [])])
        yield server, listener
        nursery.cancel_scope.cancel()


def stream_ends_with_retry(raw: bytes, retry: int) -> bool:
    """Whether a chunked body ends with the ``retry:`` event and the last chunk."""
    event = b"retry: %d\n\n" % retry
    return raw.endswith(b"%x\r\n%b\r\n0\r\n\r\n" % (len(event), event))
