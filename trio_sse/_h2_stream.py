"""One HTTP/2 stream of the raw server: the :class:`~trio_sse._transport.Transport` of its exchange.

Theory of operation
-------------------

An :class:`H2Stream` is to one HTTP/2 stream what ``_Connection`` is to an
HTTP/1.1 connection: it turns the request into a :class:`Request`, runs the
:class:`~trio_sse._exchange.Exchange` (routing, errors, deadlines, heartbeats,
stream lifetime, final ``retry:``), and moves the exchange's bytes. It owns
no socket: bytes are framed into the connection's ``h2`` state
(``_h2_protocol.py``) and the connection's one writer task sends them
(``_h2_connection.py``).

Rule 1, the direct path: :meth:`H2Stream.write_now` frames what the peer's
flow-control windows and the connection's buffer bound allow, wakes the
connection's writer (one wake-up per connection, however many streams wrote),
and returns the rest. So a broadcast into idle streams frames each event in
the publisher's task, as the HTTP/1.1 server writes each socket directly.

Rule 2, a peer that grants no window is a slow peer: :meth:`H2Stream.write_rest`
waits for ``WINDOW_UPDATE`` (or for room in the buffer) under the exchange's
``write_timeout``. Meanwhile the topic queues this stream's events and its
overflow policy applies; a write that stalls resets the stream. The other
streams of the connection are not held up: each waits for its own window.

Rule 3, how a stream ends: when the exchange is done, a response whose bytes
were all framed ends with ``END_STREAM``; one cut midway (a stalled or
cancelled write, a handler that failed before its head) is reset with
``RST_STREAM(CANCEL)``; one the peer reset gets nothing more. Body bytes
received but never read are acknowledged, so the connection's receive
window is given back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol, final

import trio

from ._edge import request_head_error
from ._event import Event
from ._exchange import Exchange
from ._http import PlainTextResponse, Response, StreamResponse
from ._request import Headers, Request
from ._transport import BodyTooLarge, PeerGone

if TYPE_CHECKING:
    from ._h2_protocol import H2Protocol
    from ._serving import Owner

__all__ = ["H2Stream"]

logger = logging.getLogger("trio_sse.server")


class _Carrier(Protocol):
    """What a stream needs of its connection (``_h2_connection.H2ServerConnection``)."""

    server: Owner
    client: tuple[str, int] | None
    proto: H2Protocol
    blocked_room: set[H2Stream]
    blocked_window: set[H2Stream]

    def kick(self) -> None: ...

    def stream_finished(self, stream: H2Stream) -> None: ...


@final
class H2Stream:
    """One request and its response on an HTTP/2 connection."""

    # Slots: a connection carries up to h2_max_concurrent_streams of these.
    __slots__ = (
        "_body",
        "_body_done",
        "_body_size",
        "_body_wake",
        "_broken",
        "_cut",
        "_gone",
        "_headers",
        "_responded",
        "_too_large",
        "_unacked",
        "_wake",
        "client",
        "conn",
        "exchange",
        "heartbeat",
        "proto",
        "stream_id",
    )

    direct: Final = True

    def __init__(self, conn: _Carrier, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.conn = conn
        self.proto = conn.proto
        self.stream_id = stream_id
        self.client = conn.client
        self.heartbeat = conn.server.heartbeat_raw
        server = conn.server
        self.exchange = Exchange(server.app, server.config, self, server.limits)
        self._headers = headers
        self._gone = trio.Event()
        self._wake: trio.Event | None = None
        self._body: list[bytes] = []
        self._body_size = 0
        self._body_done = False
        self._body_wake: trio.Event | None = None
        self._too_large = False
        self._unacked = 0
        self._responded = False
        self._broken = False
        self._cut = False

    @property
    def stopping(self) -> bool:
        """Whether the server is shutting down or the connection sent ``GOAWAY``."""
        return self.conn.server.stopping or self.proto.goaway_sent

    # -- driven by the connection task -----------------------------------------

    async def run(self) -> None:
        """Answer the request; then end or reset the stream (Rule 3)."""
        try:
            request, refused = self._request()
            if refused is not None:
                response = PlainTextResponse(refused + "\n", 400)
                await self.exchange.respond(response, request.method == "HEAD")
            else:
                await self.exchange.dispatch(request)
        except PeerGone:
            self._broken = True
        except Exception:
            self._broken = True
            logger.exception("internal error serving HTTP/2 stream from %s", self.client)
        finally:
            self._finish()

    def _request(self) -> tuple[Request, str | None]:
        pseudo: dict[bytes, bytes] = {}
        fields: list[tuple[bytes, bytes]] = []
        cookies: list[bytes] = []
        for name, value in self._headers:
            if name.startswith(b":"):
                pseudo[name] = value
            elif name == b"cookie":
                cookies.append(value)
            else:
                fields.append((name, value))
        if cookies:
            # RFC 9113 8.2.3: HTTP/2 may split cookies into several fields;
            # the application sees the one header HTTP/1.1 would carry.
            fields.append((b"cookie", b"; ".join(cookies)))
        authority = pseudo.get(b":authority")
        if authority is not None and not any(n == b"host" for n, _ in fields):
            fields.insert(0, (b"host", authority))
        server = self.conn.server
        request = Request(
            pseudo.get(b":method", b"GET").decode("ascii", "replace"),
            pseudo.get(b":path", b"/"),
            Headers(fields),
            app=server.app,
            http_version="2",
            client=self.client,
            body_reader=self.exchange.read_body,
            config=server.config,
        )
        for name, value in fields:
            if name == b"content-length" and value.isdigit():
                self.exchange.declared_length = int(value)
        return request, request_head_error(fields, http2=True)

    def _ack(self) -> None:
        if self._unacked:
            self.proto.acknowledge(self.stream_id, self._unacked)
            self._unacked = 0
            self.conn.kick()

    def _finish(self) -> None:
        self.conn.stream_finished(self)
        self._ack()
        self.proto.finish(self.stream_id, self._responded and not (self._cut or self._broken))
        self.conn.kick()

    def feed(self, data: bytes, flow_length: int) -> None:
        """Body bytes arrived (acknowledged only once read: the window bounds them)."""
        self._unacked += flow_length
        if self._responded:
            # The response has begun: the body will never be read. Give the
            # window back now, or the connection's window would stay held.
            self._ack()
            return
        if not self._too_large:
            self._body_size += len(data)
            if self._body_size > self.conn.server.config.max_body_size:
                self._too_large = True
                self._body.clear()
            else:
                self._body.append(data)
        self._wake_body()

    def end_body(self) -> None:
        """The request body is complete."""
        self._body_done = True
        self._wake_body()

    def _wake_body(self) -> None:
        if self._body_wake is not None:
            self._body_wake.set()

    def peer_gone(self) -> None:
        """The peer reset the stream or the connection ended: cancel the handler."""
        self._broken = True
        self._gone.set()
        self.wake()
        self._wake_body()

    def wake(self) -> None:
        """The window or the connection's buffer may have room again."""
        if self._wake is not None:
            self._wake.set()

    # -- Transport --------------------------------------------------------------

    def encoder(self) -> Callable[[Event], bytes]:
        """Bare event bytes: DATA frames carry them."""
        return Event.encode

    def stream_tail(self, final: bytes) -> bytes:
        """The final event, if any; ``END_STREAM`` follows when the exchange is done."""
        return final

    def close_after(self) -> None:
        """Streams end on their own; the connection goes on."""

    def _send_head(self, status: int, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        if self._broken:
            raise PeerGone()
        self.proto.send_headers(self.stream_id, status, headers, end)
        self._responded = True
        self._body.clear()
        self._ack()
        self.conn.kick()

    async def send_response(self, response: Response, head_only: bool) -> None:
        """HEADERS, then the body through the exchange's write path."""
        headers = response.header_list()
        if response.status != 204:  # RFC 9110 8.6: never in a 204
            headers.append((b"content-length", b"%d" % len(response.body)))
        body = b"" if head_only else response.body
        self._send_head(response.status, headers, False)
        await self.exchange.write(body, last=True)

    async def start_stream(self, response: StreamResponse, head_only: bool) -> None:
        """The stream's HEADERS (the stream ends at once for ``HEAD``)."""
        self._send_head(response.status, response.header_list(), False)
        await trio.lowlevel.checkpoint()

    def write_now(self, data: bytes) -> bytes | None:
        """Frame what the windows and the buffer allow (Rule 1); the rest, or ``None``."""
        if self._broken:
            raise PeerGone()
        if not data:
            return None
        n = self.proto.send_data(self.stream_id, memoryview(data))
        if n:
            self.conn.kick()
        return None if n == len(data) else data[n:]

    async def write_rest(self, data: bytes, last: bool) -> None:
        """Frame all of ``data``, waiting for window or room as needed (Rule 2)."""
        self._cut = True
        view = memoryview(data)
        sent = 0
        while True:
            if self._broken:
                raise PeerGone()
            sent += self.proto.send_data(self.stream_id, view[sent:])
            self.conn.kick()
            if sent >= len(data):
                break
            # Wait for what is missing: this stream's window (a WINDOW_UPDATE
            # wakes it alone) or room in the connection's buffer (the writer
            # wakes those when the socket takes bytes).
            waiting = (
                self.conn.blocked_window
                if self.proto.window(self.stream_id) <= 0
                else self.conn.blocked_room
            )
            self._wake = trio.Event()
            waiting.add(self)
            try:
                await self._wake.wait()
            finally:
                waiting.discard(self)
                self._wake = None
        self._cut = False
        await trio.lowlevel.checkpoint()

    async def wait_disconnect(self) -> None:
        """Wait for ``RST_STREAM`` or the end of the connection."""
        await self._gone.wait()

    async def receive_body(self, limit: int) -> bytes:
        """The request body; read bytes are acknowledged (window given back)."""
        while True:
            self._ack()
            if self._too_large or self._body_size > limit:
                raise BodyTooLarge()
            if self._body_done:
                return b"".join(self._body)
            if self._broken:
                raise PeerGone()
            self._body_wake = trio.Event()
            try:
                await self._body_wake.wait()
            finally:
                self._body_wake = None
