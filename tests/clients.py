"""The one HTTP client of the test suite: h11 on any stream, raw bytes kept.

:class:`Client` speaks HTTP/1.1 or HTTP/1.0 over any :class:`trio.abc.Stream`:
a real TCP connection (:meth:`Client.connect`) or the client half of an
in-memory stream from a :class:`MemoryListener`. h11 parses what the server
sends; every received byte is also kept in :attr:`Client.raw` (wire bytes,
for assertions on framing) and every body byte in :attr:`Client.body`
(de-chunked). Event streams are decoded incrementally with
:class:`trio_sse.Decoder` (the same decoder as :mod:`trio_sse.testing`):
:meth:`Client.events` waits for the next N, :meth:`Client.rest` reads to the
end. Whole responses: :meth:`Client.request` (a :class:`Reply`), or
:func:`http_request` (httpx) when only the answer matters.

:class:`MemoryListener` is the test kit's in-memory listener
(``trio_sse._memory_wire``), made lockstep (a client that stops reading) by
``lockstep=True``, and remembering that it was closed.

How servers are started for these clients: ``tests/servers.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import h11
import httpx
import trio
import trio.testing

from trio_sse import Decoder, MessageEvent
from trio_sse._memory_wire import _MemoryListener

__all__ = [
    "Client",
    "MemoryListener",
    "Reply",
    "StreamBody",
    "http_request",
    "open_event_stream",
]


class MemoryListener(_MemoryListener):
    """An in-memory listener: ``connect()`` on the client side, ``accept()`` on the server's.

    Args:
        lockstep: hand out :func:`trio.testing.lockstep_stream_pair` halves (no
            buffering: a write waits until the other side reads) instead of
            :func:`trio.testing.memory_stream_pair` ones (unbounded buffering).

    """

    def __init__(self, *, lockstep: bool = False) -> None:
        super().__init__()
        self.lockstep = lockstep
        self.closed = False

    async def connect(self, *, unbuffered: bool | None = None) -> trio.abc.Stream:
        """Open a connection; return the client's half."""
        return await super().connect(unbuffered=self.lockstep if unbuffered is None else unbuffered)

    async def client(self) -> Client:
        """A :class:`Client` on a new connection."""
        return Client(await self.connect())

    async def aclose(self) -> None:
        self.closed = True
        await super().aclose()


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

    Args:
        stream: the connection.
        read_size: the most bytes one read asks for.
        last_event_id: where the stream's :attr:`decoder` starts (the
            ``Last-Event-ID`` a resuming client sent).

    Attributes:
        raw: every byte received so far, exactly as sent by the server.
        body: every body byte of the current stream (de-chunked).
        conn: the h11 client state.
        decoder: decodes stream bodies (see :meth:`events`).
        received: every event decoded so far, taken by :meth:`events` or not.
        status: the status of the last response head read (0 before).
        headers: its headers, names lowercase.
        ended: how the stream body ended (``"EndOfMessage"`` or
            ``"ConnectionClosed"``), ``None`` while it goes on.

    """

    def __init__(
        self, stream: trio.abc.Stream, *, read_size: int = 65536, last_event_id: str = ""
    ) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)
        self.raw = bytearray()
        self.decoder = Decoder(last_event_id)
        self.body = bytearray()
        self.read_size = read_size
        self.status = 0
        self.headers: dict[str, str] = {}
        self.received: list[MessageEvent] = []  # every event decoded, taken or not
        self._events: list[MessageEvent] = []
        self._informational: list[int] = []
        self.ended: str | None = None

    @classmethod
    async def connect(
        cls, host: str, port: int, *, rcvbuf: int | None = None, **kwargs: Any
    ) -> Client:
        """A client on a new TCP connection to ``host:port``.

        ``rcvbuf``: a small ``SO_RCVBUF``, set before connecting so that the
        window advertised to the server is small (a slow reader fills it soon).
        """
        if rcvbuf is None:
            return cls(await trio.open_tcp_stream(host, port), **kwargs)
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, rcvbuf)
        await sock.connect((host, port))
        return cls(trio.SocketStream(sock), **kwargs)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

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
        chunks: Sequence[bytes] | None = None,
        http_version: str = "1.1",
    ) -> bytes:
        """The bytes of one request (h11 framing; ``chunks``: a chunked body)."""
        head: list[tuple[str, str]] = [("host", "test"), *headers]
        names = {k.lower() for k, _ in head}
        if chunks is not None:
            head.append(("transfer-encoding", "chunked"))
        elif body is not None and not names & {"content-length", "transfer-encoding"}:
            head.append(("content-length", str(len(body))))
        if http_version == "1.0":
            # h11 sends only HTTP/1.1: the wire gets the HTTP/1.0 request, and
            # h11 (to parse the reply) the equivalent 1.1 one that closes.
            wire = self._request(h11.Connection(h11.CLIENT), method, target, head, body, chunks)
            line, _, rest = wire.partition(b"\r\n")
            closing = [*head, ("connection", "close")]
            self._request(self.conn, method, target, closing, body, chunks)
            return line.replace(b" HTTP/1.1", b" HTTP/1.0") + b"\r\n" + rest
        return self._request(self.conn, method, target, head, body, chunks)

    @staticmethod
    def _request(
        conn: h11.Connection,
        method: str,
        target: str,
        head: list[tuple[str, str]],
        body: bytes | None,
        chunks: Sequence[bytes] | None,
    ) -> bytes:
        data = conn.send(h11.Request(method=method, target=target, headers=head))
        assert data is not None
        for part in [body] if chunks is None else chunks:
            if part:
                data += conn.send(h11.Data(data=part)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        return data

    async def send_request(self, *args: Any, **kwargs: Any) -> None:
        """Send one request (:meth:`request_bytes`'s arguments)."""
        await self.send_raw(self.request_bytes(*args, **kwargs))

    async def request(self, *args: Any, **kwargs: Any) -> Reply:
        """Send a request (:meth:`request_bytes`'s arguments), read the whole response.

        The connection is then ready for the next request, if it stays open.
        """
        await self.send_request(*args, **kwargs)
        return await self.reply()

    async def open(self, *args: Any, **kwargs: Any) -> Client:
        """Send a request (:meth:`request_bytes`'s arguments), read the response head.

        The body is then read as a stream (:meth:`events`, :meth:`pump`, :meth:`rest`).
        """
        await self.send_request(*args, **kwargs)
        await self.head()
        return self

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
            self.status = event.status_code
            self.headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers}
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

    async def pump(self) -> bool:
        """Read one piece of the stream body into :attr:`body`; False once it ended."""
        if self.ended is not None:
            return False
        event = await self.next_event()
        if isinstance(event, h11.Data):
            self.body += event.data
            events = self.decoder.feed(bytes(event.data))
            self.received += events
            self._events += events
            return True
        assert isinstance(event, h11.EndOfMessage | h11.ConnectionClosed), event
        self.ended = type(event).__name__
        return False

    async def events(self, n: int) -> list[MessageEvent]:
        """Wait for the next ``n`` events of a stream body.

        Raises:
            AssertionError: the stream ended first.
        """
        while len(self._events) < n:
            if not await self.pump():
                raise AssertionError(f"stream ended after {self._events!r}, wanted {n} events")
        out, self._events = self._events[:n], self._events[n:]
        return out

    async def event(self) -> MessageEvent:
        """Wait for the next event of a stream body."""
        return (await self.events(1))[0]

    async def until(self, marker: bytes) -> None:
        """Read the stream body until ``marker`` is in it (events are kept)."""
        while marker not in self.body:
            if not await self.pump():
                raise AssertionError(f"stream ended before {marker!r}: {bytes(self.body)!r}")

    async def rest(self) -> StreamBody:
        """Read the stream body to its end; return the events not yet taken."""
        while await self.pump():
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


async def open_event_stream(
    port: int,
    target: str,
    *,
    last_event_id: str = "",
    first_events: int = 0,
    host: str = "127.0.0.1",
) -> Client:
    """GET an event stream over HTTP/1.0 on a new TCP connection, as a browser resumes one.

    HTTP/1.0 has no chunked framing: the body is the stream, to the close.
    ``last_event_id`` is sent as ``Last-Event-ID`` and starts the decoder.
    Asserts a 200; returns once ``first_events`` events arrived (they stay
    available to :meth:`Client.events`).
    """
    client = await Client.connect(host, port, last_event_id=last_event_id)
    headers = [("last-event-id", last_event_id)] if last_event_id else []
    await client.open("GET", target, headers, http_version="1.0")
    assert client.status == 200, (client.status, bytes(client.raw))
    while len(client.received) < first_events:
        assert await client.pump(), f"the stream ended: {bytes(client.body)!r}"
    return client


async def http_request(
    port: int,
    target: str,
    *,
    method: str = "GET",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> httpx.Response:
    """One request to ``127.0.0.1:port`` with httpx, for tests that only need the answer."""
    async with httpx.AsyncClient(timeout=None) as client:
        return await client.request(
            method, f"http://127.0.0.1:{port}{target}", headers=headers, content=body
        )


def stream_ends_with_retry(raw: bytes, retry: int) -> bool:
    """Whether a chunked body ends with the ``retry:`` event and the last chunk."""
    event = b"retry: %d\n\n" % retry
    return raw.endswith(b"%x\r\n%b\r\n0\r\n\r\n" % (len(event), event))
