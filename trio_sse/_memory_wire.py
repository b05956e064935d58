"""In-memory connections of the test kit: a listener and an h11 client connection.

Shared by :mod:`trio_sse.testing` (streams) and its httpx transport
(``_testing_transport.py``), below both, so that neither imports the other.
"""

from __future__ import annotations

from typing import Any, Final

import h11
import trio
import trio.testing

from ._sockets import map_io_errors
from ._transport import PeerGone

__all__ = ["_Connection", "_MemoryListener"]

_READ: Final = 65536


class _MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    # connect() hands the server half of a new stream pair to accept().

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](0)

    async def connect(self, *, unbuffered: bool = False) -> trio.abc.Stream:
        pair = trio.testing.lockstep_stream_pair if unbuffered else trio.testing.memory_stream_pair
        client, server = pair()
        await self._send.send(server)
        return client

    async def accept(self) -> trio.abc.Stream:
        return await self._receive.receive()

    async def aclose(self) -> None:
        await self._receive.aclose()


class _Connection:
    # One HTTP/1.1 exchange on an in-memory stream, with h11.

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)
        self.finished = False  # the body ended, one way or another
        self.complete = False  # the body ended with its terminator

    async def request(
        self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> h11.Response:
        if not any(name.lower() == b"host" for name, _ in headers):
            headers = [(b"host", b"testserver"), *headers]
        headers = [(n, v) for n, v in headers if n.lower() != b"transfer-encoding"]
        if body or method not in ("GET", "HEAD"):
            headers = [(n, v) for n, v in headers if n.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
        data = self.conn.send(h11.Request(method=method, target=target, headers=headers)) or b""
        if body:
            data += self.conn.send(h11.Data(data=body)) or b""
        data += self.conn.send(h11.EndOfMessage()) or b""
        await self.stream.send_all(data)
        while True:
            event = await self._next()
            if isinstance(event, h11.Response):
                return event
            if not isinstance(event, h11.InformationalResponse):
                raise h11.RemoteProtocolError(f"connection closed before a response ({event!r})")

    async def receive(self) -> bytes:
        """The next piece of the body; ``b""`` at its end (or when the connection broke)."""
        while not self.finished:
            try:
                event = await self._next()
            except h11.RemoteProtocolError:
                event = None  # e.g. closed in the middle of the body
            if isinstance(event, h11.Data):
                if event.data:
                    return bytes(event.data)
                continue
            self.finished = True
            self.complete = isinstance(event, h11.EndOfMessage)
        return b""

    async def _next(self) -> Any:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            try:
                with map_io_errors:
                    data = bytes(await self.stream.receive_some(_READ))
            except PeerGone:
                data = b""
            self.conn.receive_data(data)

    async def aclose(self) -> None:
        await self.stream.aclose()
