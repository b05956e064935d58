"""One connection of the raw server: the task that owns the socket.

Theory of operation
-------------------

A :class:`_Connection` is the task that owns one accepted socket: it reads
request heads (under ``header_timeout`` / ``keep_alive_timeout``), feeds h11,
hands each request to its :class:`~trio_sse._exchange.Exchange`, and is that
exchange's :class:`~trio_sse._transport.Transport`: it moves bytes. What h11
says about heads and the bytes of responses come from ``_http11.py``
(sans-IO); routing, errors, body limits, the write deadline, heartbeats and
the stream lifecycle are the exchange's.

The hot path: a write first tries the socket directly
(:meth:`_Connection.write_now`, ``os.write`` on the non-blocking descriptor):
an idle connection with room in its socket buffer then costs one system call
and no trip through trio's I/O manager. What does not fit goes through
``send_all`` (:meth:`_Connection.write_rest`), under the exchange's
write-stall deadline. The descriptor is used only where a socket is one
(not on Windows).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import h11
import trio

from ._app import WebSocketRoute
from ._event import Event
from ._exchange import Exchange
from ._http import HTTPException, PlainTextResponse, Response, StreamResponse
from ._http11 import (
    declared_length,
    head_error,
    next_cycle,
    request_head_bytes,
    response_bytes,
    stream_head,
    stream_tail,
)
from ._parked import abandon_parked, end_parked, serve_parked
from ._request import Headers, Request
from ._sockets import linger, map_io_errors
from ._transport import BodyTooLarge, PeerGone
from ._websocket import is_websocket_upgrade
from ._websocket_raw import serve_raw_websocket, websocket_available

if TYPE_CHECKING:
    from ._serving import Owner


__all__ = ["_Connection"]

logger = logging.getLogger("trio_sse.server")

#: Whether a socket's descriptor takes ``os.write`` (the direct-write path).
_DIRECT_WRITES = sys.platform != "win32"


class _Connection:
    """One accepted connection: h11 state and bytes; the :class:`Transport` of its exchange.

    The exchange (``_exchange.py``) does what is above the framing: dispatch,
    errors, the write deadline, the stream lifecycle. This class reads request
    heads and bodies through h11, frames responses, and writes bytes: first
    directly (``os.write`` on the non-blocking descriptor), the rest through
    ``send_all``.
    """

    # Slots: 10,000 open streams mean 10,000 of these.
    __slots__ = (
        "_chunked",
        "_head",
        "_interruptible",
        "_must_close",
        "accepted_at",
        "client",
        "config",
        "direct",
        "exchange",
        "fd",
        "h11",
        "heartbeat",
        "server",
        "stream",
    )

    def __init__(
        self, server: Owner, stream: trio.abc.Stream, peer: tuple[str, int] | None = None
    ) -> None:
        self.server = server
        self.config = server.config
        self.stream = stream
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self.config.max_header_size)
        self.accepted_at = trio.current_time()
        self.fd: int | None = None
        self.client = peer
        if _DIRECT_WRITES and isinstance(stream, trio.SocketStream):
            self.fd = stream.socket.fileno()
        self.direct = self.fd is not None
        # Cancelled by shutdown: an idle wait for a request, or a WebSocket.
        self._interruptible: trio.CancelScope | None = None
        self._must_close = False
        self._chunked = True
        self.heartbeat = server.heartbeat_chunk
        # The request being answered is a HEAD: errors too get no body.
        self._head = False
        fd = -1 if self.fd is None else self.fd
        idle = None if fd < 0 else server.idle
        self.exchange = Exchange(server.app, self.config, self, server.limits, idle, fd, fd)

    # -- lifecycle ----------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """Whether the server is shutting down."""
        return self.server.stopping

    def interrupt(self) -> None:
        """Called at shutdown: cancel an idle wait or a stream handler."""
        if self._interruptible is not None:
            self._interruptible.cancel()
        self.exchange.stop()

    async def run(self) -> None:
        graceful = True
        try:
            graceful = await self._serve()
            # A topic stream runs here, after _serve's frames and the request
            # are gone (dispatch(park_later=True)): an idle stream holds less.
            await end_parked(self.exchange, await serve_parked(self.exchange))
        except PeerGone:
            graceful = False
        except Exception:
            graceful = False
            logger.exception("internal error serving connection from %s", self.client)
        finally:
            abandon_parked(self.exchange)
            self.server.connections.discard(self)
            self.server.limits.release_connection(self.client and self.client[0])
            try:
                if graceful:
                    with trio.move_on_after(self.config.close_linger):
                        await linger(self.stream, self.config.read_size)
            finally:
                try:
                    await trio.aclose_forcefully(self.stream)
                finally:
                    # The exchange refers back to this connection: breaking
                    # the cycle frees both (and the socket) at once, without
                    # waiting for the cyclic GC (and frozen by gc.freeze(),
                    # they would never be freed).
                    del self.exchange

    async def _serve(self) -> bool:
        """Serve requests until the connection should close; True: close gracefully."""
        first = True
        while True:
            self._head = False
            try:
                request = await self._read_head(first)
            except h11.RemoteProtocolError as exc:
                await self._send_error(exc.error_status_hint, str(exc))
                return True
            if request is None:
                return True
            first = False
            keep_going = await self._handle(request)
            if not keep_going or self._must_close or self.server.stopping:
                return True
            if not next_cycle(self.h11):
                return True

    # -- reading ------------------------------------------------------------

    async def _receive(self) -> bytes:
        # A reset reads as the end of the stream: h11 then decides whether
        # what came before was a whole request.
        try:
            with map_io_errors:
                return bytes(await self.stream.receive_some(self.config.read_size))
        except PeerGone:
            return b""

    async def wait_disconnect(self) -> None:
        """Read (and drop) bytes until the peer closes: a stream reads nothing."""
        fd = self.fd
        if fd is None:
            while await self._receive():
                pass
            return
        # On the descriptor, inline (no frame more per idle stream): two
        # frames here instead of receive_some's six, and no 64 KiB buffer.
        while True:
            await trio.lowlevel.wait_readable(fd)
            try:
                if not os.read(fd, 1024):
                    return
            except BlockingIOError:
                pass
            except OSError:
                return

    async def _next_event(self) -> Any:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.h11.receive_data(await self._receive())

    async def _read_head(self, first: bool) -> h11.Request | None:
        """Read one request head; ``None`` when the connection should just close.

        Deadlines: on a new connection the whole head must arrive within
        ``header_timeout`` of the accept; on a kept-alive one the first byte
        within ``keep_alive_timeout``, the rest within ``header_timeout`` of it.
        """
        cfg = self.config
        conn = self.h11
        started = bool(conn.trailing_data[0])
        if first:
            deadline = self.accepted_at + cfg.header_timeout
        elif started:
            deadline = trio.current_time() + cfg.header_timeout
        else:
            deadline = trio.current_time() + cfg.keep_alive_timeout
        event: Any = None
        with trio.CancelScope(deadline=deadline) as scope:
            if not started:
                self._interruptible = scope
                if self.server.stopping:
                    scope.cancel()
            while True:
                event = conn.next_event()
                if event is not h11.NEED_DATA:
                    break
                data = await self._receive()
                if data and not started:
                    started = True
                    self._interruptible = None
                    if not first:
                        scope.deadline = trio.current_time() + cfg.header_timeout
                conn.receive_data(data)
        self._interruptible = None
        if scope.cancelled_caught:
            if started and not self.server.stopping:
                await self._send_error(408, "request head not received in time")
            return None
        if isinstance(event, h11.ConnectionClosed):
            return None
        assert isinstance(event, h11.Request), event
        return event

    async def receive_body(self, limit: int) -> bytes:
        """The request body through h11 (the exchange applies the deadline)."""
        conn = self.h11
        if conn.their_state is not h11.SEND_BODY:
            return b""
        if conn.they_are_waiting_for_100_continue:
            continue_ = conn.send(h11.InformationalResponse(status_code=100, headers=[]))
            assert continue_ is not None
            await self.exchange.write(continue_)
        parts: list[bytes] = []
        size = 0
        while True:
            try:
                event = await self._next_event()
            except h11.RemoteProtocolError as exc:
                self._must_close = True
                raise HTTPException(400, f"malformed request body: {exc}") from None
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > limit:
                    raise BodyTooLarge()
                parts.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(parts)
            else:  # ConnectionClosed
                raise PeerGone()

    # -- writing ------------------------------------------------------------

    def write_now(self, data: bytes) -> bytes | None:
        """One non-blocking ``os.write``; the rest, or ``None`` when all was written."""
        fd = self.fd
        if fd is None:
            return data
        # map_io_errors' mapping, spelled out: this runs once per event per
        # subscriber, and a with-block costs ~180 ns; try costs nothing.
        try:
            n = os.write(fd, data)
        except BlockingIOError:
            return data
        except OSError as exc:
            raise PeerGone(str(exc) or type(exc).__name__) from exc
        return None if n == len(data) else data[n:]

    async def write_rest(self, data: bytes, last: bool) -> None:
        """``send_all`` (the exchange applies ``write_timeout``)."""
        with map_io_errors:
            await self.stream.send_all(data)

    def close_after(self) -> None:
        """Close the connection once this response is sent."""
        self._must_close = True

    def encoder(self) -> Callable[[Event], bytes]:
        """Chunk-framed event bytes on HTTP/1.1, bare ones on HTTP/1.0."""
        return Event.encode_chunk if self._chunked else Event.encode

    def stream_tail(self, final: bytes) -> bytes:
        """``final`` as a chunk, then the terminating chunk (HTTP/1.1)."""
        return stream_tail(self._chunked, final)

    async def send_response(self, response: Response, head_only: bool) -> None:
        """Frame a whole response with h11 and write it."""
        close = self._must_close or self.server.stopping
        await self.exchange.write(response_bytes(self.h11, response, head_only, close))

    async def start_stream(self, response: StreamResponse, head_only: bool) -> None:
        """The stream head: chunked on HTTP/1.1; the connection closes afterwards."""
        if not head_only:
            # The request body (if any) is not read during a stream: close afterwards.
            self._must_close = True
        await self.exchange.write(stream_head(self.h11, response, self._chunked, head_only))
        if not head_only:
            # The connection closes after the stream: h11's state (about
            # 1.3 KB) is not needed any more; an idle stream does not keep it.
            del self.h11

    async def _send_error(
        self, status: int, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        """Answer an error and mark the connection for closing, if a response can still be sent."""
        self._must_close = True
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        with contextlib.suppress(PeerGone, h11.LocalProtocolError):
            await self.send_response(PlainTextResponse(detail + "\n", status, headers), self._head)

    # -- handling -----------------------------------------------------------

    async def _handle(self, event: h11.Request) -> bool:
        """Check the head, hand upgrades over, dispatch; False: the connection must close."""
        cfg = self.config
        self._head = event.method == b"HEAD"
        refused = head_error(event, cfg)
        if refused is not None:
            # Possibly smuggling: answer, then close (never read what follows).
            await self._send_error(*refused)
            return False
        self.exchange.declared_length = declared_length(event)
        self._chunked = event.http_version == b"1.1"
        self.heartbeat = self.server.heartbeat_chunk if self._chunked else self.server.heartbeat_raw
        app = self.server.app
        request = Request(
            event.method.decode("ascii"),
            bytes(event.target),
            Headers(event.headers),
            app=app,
            http_version=event.http_version.decode("ascii"),
            client=self.client,
            body_reader=self.exchange.read_body,
            config=cfg,
        )
        if app._websocket_routes and is_websocket_upgrade(event.method, list(event.headers)):
            ws_route, ws_params = app._resolve_websocket(request.path)
            if ws_route is not None:
                request.path_params = ws_params
                return await self._websocket(event, request, ws_route)
        del event  # not kept alive by this frame during a stream
        await self.exchange.dispatch(request, park_later=True)
        return True

    async def _websocket(self, event: h11.Request, request: Request, route: WebSocketRoute) -> bool:
        """Hand an upgrade to trio-websocket (``_websocket.py``); the connection then closes."""
        self._must_close = True
        if not websocket_available():  # pragma: no cover - a test dependency
            logger.error(
                "WebSocket route %s needs trio-websocket: pip install trio-sse[websocket]",
                route.path,
            )
            await self._send_error(501, "WebSocket support is not installed")
            return False
        head = request_head_bytes(event) + self.h11.trailing_data[0]

        def interruptible(scope: trio.CancelScope | None) -> None:
            self._interruptible = scope
            if scope is not None and self.server.stopping:
                scope.cancel()

        await serve_raw_websocket(self.stream, head, request, route, self.config, interruptible)
        return False
