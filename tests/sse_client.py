"""A small h11-based HTTP/SSE client for tests over real loopback sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import h11
import trio

from trio_sse import Decoder, MessageEvent


@dataclass
class Result:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    events: list[MessageEvent] = field(default_factory=list)


class SSEClient:
    """One open request whose body is decoded as an event stream."""

    def __init__(self, stream: trio.SocketStream, conn: h11.Connection) -> None:
        self.stream = stream
        self.conn = conn
        self.decoder = Decoder()
        self.response: Result | None = None
        self.ended = False
        self.raw = b""
        self._queue: list[MessageEvent] = []

    async def _pump(self) -> bool:
        """Process one h11 event; False once the body ended."""
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await self.stream.receive_some(65536)
                except trio.BrokenResourceError:
                    data = b""
                self.conn.receive_data(data)
                continue
            if isinstance(event, h11.Response):
                self.response = Result(
                    event.status_code,
                    {k.decode(): v.decode() for k, v in event.headers},
                )
                return True
            if isinstance(event, h11.Data):
                self.raw += event.data
                self._queue += self.decoder.feed(bytes(event.data))
                return True
            self.ended = True
            return False

    async def start(self) -> Result:
        while self.response is None:
            if not await self._pump():
                raise AssertionError("connection closed before a response")
        return self.response

    async def events(self, n: int) -> list[MessageEvent]:
        """Wait for the next ``n`` events."""
        while len(self._queue) < n:
            if not await self._pump():
                raise AssertionError(f"stream ended after {self._queue!r}, wanted {n}")
        out, self._queue = self._queue[:n], self._queue[n:]
        return out

    async def rest(self) -> list[MessageEvent]:
        """Read until the stream ends; return the events not yet taken."""
        while await self._pump():
            pass
        out, self._queue = self._queue, []
        return out


@asynccontextmanager
async def open_request(
    port: int,
    target: str,
    *,
    method: str = "GET",
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
) -> AsyncIterator[SSEClient]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    conn = h11.Connection(h11.CLIENT)
    hdrs = [("host", "test"), *headers]
    if body or method == "POST":
        hdrs.append(("content-length", str(len(body))))
    data = conn.send(h11.Request(method=method, target=target, headers=hdrs))
    if body:
        data += conn.send(h11.Data(data=body))
    data += conn.send(h11.EndOfMessage())
    await stream.send_all(data)
    client = SSEClient(stream, conn)
    try:
        yield client
    finally:
        await stream.aclose()


async def request(
    port: int,
    target: str,
    *,
    method: str = "GET",
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
) -> Result:
    """Send one request and read the whole response."""
    async with open_request(port, target, method=method, headers=headers, body=body) as c:
        result = await c.start()
        await c.rest()
        result.body = c.raw
        result.events = Decoder().feed(c.raw)
        return result
