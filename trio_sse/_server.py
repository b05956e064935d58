"""The raw HTTP/1.1 server: h11 for framing, trio for I/O, one nursery per stream.

Theory of operation
-------------------

Rule 1, ownership: :func:`serve_listeners` owns one nursery; every connection
is a task in it, and every task serving a connection (the handler and its
companion, which watches for disconnects, flushes and sends heartbeats) lives
in a nursery owned by that connection's task. When a connection ends, nothing
that served it survives.

Rule 2, the exchange: above the framing, a request is answered by the
:class:`~trio_sse._exchange.Exchange` that the ASGI adapter uses too
(dispatch, errors, the write deadline, body limits, the stream lifecycle);
``_Connection`` is its :class:`~trio_sse._exchange.Transport`: h11 state,
request heads and bodies, and bytes on the socket.

Rule 3, one place per deadline: ``header_timeout`` and ``keep_alive_timeout``
are applied in :meth:`_Connection._read_head`, ``shutdown_grace_period`` in
:meth:`Server._begin_shutdown`; ``body_timeout``, ``write_timeout``,
``heartbeat_interval`` and ``max_stream_lifetime`` in the exchange.

Rule 4, graceful shutdown: the connections' nursery sits in a *shielded*
cancel scope, so cancelling :func:`serve` does not tear connections down
mid-write. Instead it stops accepting, cancels each stream handler (the
server then sends the final ``retry:`` event and the terminating chunk) and
each idle keep-alive wait, and sets that shielded scope's deadline to now
plus ``shutdown_grace_period``: whatever has not finished by then is cut.
The lifespan and the background tasks sit in a shielded scope too, so they
outlast the connections and the lifespan exits normally.

The hot path
------------

An event's bytes, with their chunk framing, come cached from
:meth:`Event.encode_chunk`, so a broadcast frames once for every connection.
h11 frames the response head and the terminating chunk; event chunks bypass
it (h11's chunked writer keeps no byte count, so that is safe). A write first
tries the socket directly (:meth:`_Connection.write_now`, ``os.write`` on the
non-blocking descriptor): the usual case, an idle connection with room in its
socket buffer, then costs one system call and no trip through trio's I/O
manager. Only a write that does not complete falls back to ``send_all``
(:meth:`_Connection.write_rest`) under the write-stall deadline.
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, final

import h11
import trio

from ._app import (
    App,
    Headers,
    HTTPException,
    PlainTextResponse,
    Request,
    Response,
    StreamResponse,
    WebSocketRoute,
    status_phrase,
)
from ._config import Config
from ._edge import request_head_error
from ._event import Event
from ._exchange import BodyTooLarge, Exchange, PeerGone
from ._limits import ClientLimits
from ._sockets import (
    check_descriptor_limit,
    peer_address,
    refusal_bytes,
    refuse_now,
    set_keepalive,
)
from ._websocket import is_websocket_upgrade, serve_raw_websocket, websocket_available

__all__ = ["Server", "serve", "serve_listeners"]

logger = logging.getLogger("trio_sse.server")

_CAPACITY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_LAST_CHUNK: Final = b"0\r\n\r\n"
_SERVER_HEADER: Final = (b"server", b"trio-sse")


_date_cache: tuple[int, bytes] = (0, b"")


def _date_header() -> tuple[bytes, bytes]:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, usegmt=True).encode("ascii"))
    return (b"date", _date_cache[1])


async def serve(
    app: App,
    host: str | None = "127.0.0.1",
    port: int = 8000,
    *,
    config: Config | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` over HTTP/1.1 on ``host:port`` until cancelled.

    Args:
        app: the application.
        host: the address to bind (``None``: every interface).
        port: the TCP port (``0``: any free port; read it from the listeners
            passed to ``task_status.started``).
        config: limits and deadlines (default: ``app.config``).
        task_status: for ``await nursery.start(serve, ...)``; started with the
            list of listeners once they accept connections.

    Resource handling:
        Cancelling the call shuts the server down gracefully: it stops
        accepting, ends every stream properly, lets in-flight requests finish
        for up to ``config.shutdown_grace_period``, closes everything, then
        leaves the lifespan.

    """
    cfg = config if config is not None else app.config
    if cfg.backlog is None:
        listeners = await trio.open_tcp_listeners(port, host=host)
    else:
        listeners = await trio.open_tcp_listeners(port, host=host, backlog=cfg.backlog)
    await serve_listeners(app, listeners, config=cfg, task_status=task_status)


async def serve_listeners(
    app: App,
    listeners: Sequence[trio.abc.Listener[Any]],
    *,
    config: Config | None = None,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on already-open listeners until cancelled.

    Like :func:`serve`, for listeners you opened yourself (or in-memory ones in
    tests). The listeners are closed when the server stops.
    """
    server = Server(app, config if config is not None else app.config)
    await server.run(listeners, task_status=task_status)


@final
class Server:
    """One running server: its connections, limits and shutdown state.

    Most code calls :func:`serve`; this class is public for tests and tools
    that want to watch the connection count.

    Attributes:
        connections: the connections being served.
        stopping: set once shutdown has begun.
        limits: per-client counts, and the refusals so far by reason
            (``limits.refusals``; see :class:`~trio_sse.ClientLimits`).

    """

    def __init__(self, app: App, config: Config) -> None:
        self.app = app
        self.config = config
        self.connections: set[_Connection] = set()
        self.stopping = False
        self._conns_scope = trio.CancelScope(shield=True)
        self._accept_scope = trio.CancelScope()
        self._running_scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None
        self._rejecting = 0
        self.limits = ClientLimits(config, app.refusals)
        self.heartbeat_chunk = Event(comment=config.heartbeat_comment).encode_chunk()
        self.heartbeat_raw = config.heartbeat_bytes()

    async def run(
        self,
        listeners: Sequence[trio.abc.Listener[Any]],
        *,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run the lifespan and serve ``listeners`` until cancelled.

        Cancellation only starts the shutdown: serving, the background tasks
        and the lifespan's exit go on in :meth:`_run_shielded` until the
        connections are done.
        """
        check_descriptor_limit(self.config)
        async with trio.open_nursery() as nursery:
            await nursery.start(self._run_shielded, listeners)
            task_status.started(list(listeners))
            try:
                await trio.sleep_forever()
            finally:
                self._begin_shutdown()

    async def _run_shielded(
        self,
        listeners: Sequence[trio.abc.Listener[Any]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        # Shielded once started (start-up stays cancellable): in-flight
        # requests keep the background tasks they may need until the
        # connections are done, and the lifespan exits normally, its
        # clean-up not interrupted by the cancellation that stopped us.
        with trio.CancelScope() as shield:
            async with self.app.run_lifespan(), trio.open_nursery() as nursery:
                await nursery.start(self._serve, listeners)
                task_status.started()
                shield.shield = True
                try:
                    with self._running_scope:
                        await trio.sleep_forever()
                finally:
                    self._begin_shutdown()

    async def _serve(
        self,
        listeners: Sequence[trio.abc.Listener[Any]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with self._conns_scope:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                with self._accept_scope:
                    async with trio.open_nursery() as accepting:
                        for listener in listeners:
                            accepting.start_soon(self._accept_loop, listener)
                        task_status.started()

    def _begin_shutdown(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self._running_scope.cancel()
        self._accept_scope.cancel()
        self._conns_scope.deadline = trio.current_time() + self.config.shutdown_grace_period
        for conn in list(self.connections):
            conn.interrupt()
        logger.info("shutting down: %d connections to close", len(self.connections))

    async def _accept_loop(self, listener: trio.abc.Listener[Any]) -> None:
        assert self._nursery is not None
        try:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    if exc.errno in _CAPACITY_ERRNOS:
                        logger.error("accept() failed (%s); retrying in 100 ms", exc)
                        await trio.sleep(0.1)
                        continue
                    raise
                peer = peer_address(stream)
                if len(self.connections) >= self.config.max_connections:
                    self.limits.refusals["max_connections"] += 1
                    self._reject(stream, 503)
                    continue
                if not self.limits.acquire_connection(peer and peer[0]):
                    self._reject(stream, 429)
                    continue
                set_keepalive(stream, self.config)
                conn = _Connection(self, stream, peer)
                self.connections.add(conn)
                self._nursery.start_soon(conn.run)
        finally:
            await trio.aclose_forcefully(listener)

    def _reject(self, stream: trio.abc.Stream, status: int) -> None:
        """Answer ``status`` (503 or 429) without reading the request, and close.

        Up to ``max_refusing`` refusals linger until the client has read the
        answer (so it is not destroyed by a reset). Beyond that, under a
        connect flood, the answer is written at once without waiting: the
        request bytes already received are read first, so closing does not
        reset the connection unless more arrive later.
        """
        assert self._nursery is not None
        data = refusal_bytes(status, self.config.retry_after)
        if self._rejecting >= self.config.max_refusing:
            self.limits.refusals["refusal_not_awaited"] += 1
            refuse_now(stream, data)
            self._nursery.start_soon(trio.aclose_forcefully, stream)
            return
        self._rejecting += 1
        self._nursery.start_soon(self._send_refusal, stream, data)

    async def _send_refusal(self, stream: trio.abc.Stream, data: bytes) -> None:
        try:
            with trio.move_on_after(self.config.close_linger):
                await stream.send_all(data)
                await _linger(stream, self.config.read_size)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            self._rejecting -= 1
            await trio.aclose_forcefully(stream)


async def _linger(stream: trio.abc.Stream, read_size: int) -> None:
    """Half-close, then read until the peer closes (caller bounds the time)."""
    if isinstance(stream, trio.abc.HalfCloseableStream):
        await stream.send_eof()
    while True:
        try:
            data = await stream.receive_some(read_size)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        if not data:
            return


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
        self, server: Server, stream: trio.abc.Stream, peer: tuple[str, int] | None = None
    ) -> None:
        self.server = server
        self.config = server.config
        self.stream = stream
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self.config.max_header_size)
        self.accepted_at = trio.current_time()
        self.fd: int | None = None
        self.client = peer
        if isinstance(stream, trio.SocketStream):
            self.fd = stream.socket.fileno()
        self.direct = self.fd is not None
        # Cancelled by shutdown: an idle wait for a request, or a WebSocket.
        self._interruptible: trio.CancelScope | None = None
        self._must_close = False
        self._chunked = True
        self.heartbeat = server.heartbeat_chunk
        # The request being answered is a HEAD: errors too get no body.
        self._head = False
        self.exchange = Exchange(server.app, self.config, self, server.limits)

    # -- lifecycle ----------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """Whether the server is shutting down."""
        return self.server.stopping

    def interrupt(self) -> None:
        """Called at shutdown: cancel an idle wait or a stream handler."""
        if self._interruptible is not None:
            self._interruptible.cancel()
        if self.exchange.stop_scope is not None:
            self.exchange.stop_scope.cancel()

    async def run(self) -> None:
        graceful = True
        try:
            graceful = await self._serve()
        except PeerGone:
            graceful = False
        except Exception:
            graceful = False
            logger.exception("internal error serving connection from %s", self.client)
        finally:
            self.server.connections.discard(self)
            self.server.limits.release_connection(self.client and self.client[0])
            try:
                if graceful:
                    with trio.move_on_after(self.config.close_linger):
                        await _linger(self.stream, self.config.read_size)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            finally:
                await trio.aclose_forcefully(self.stream)

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
            if self.h11.their_state is h11.SEND_BODY:
                # The handler did not read the request body. A GET's (empty)
                # body has already been parsed, so taking its end costs no
                # I/O; a body that has not all arrived closes the connection.
                with contextlib.suppress(h11.RemoteProtocolError):
                    while isinstance(self.h11.next_event(), h11.Data):
                        pass
            if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
                self.h11.start_next_cycle()
            else:
                return True

    # -- reading ------------------------------------------------------------

    async def _receive(self) -> bytes:
        try:
            return bytes(await self.stream.receive_some(self.config.read_size))
        except trio.BrokenResourceError:
            return b""

    async def wait_disconnect(self) -> None:
        """Read (and drop) bytes until the peer closes: a stream reads nothing."""
        while await self._receive():
            pass

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
        try:
            n = os.write(fd, data)
        except BlockingIOError:
            return data
        except OSError as exc:
            raise PeerGone() from exc
        return None if n == len(data) else data[n:]

    async def write_rest(self, data: bytes, last: bool) -> None:
        """``send_all`` (the exchange applies ``write_timeout``)."""
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise PeerGone() from exc

    def close_after(self) -> None:
        """Close the connection once this response is sent."""
        self._must_close = True

    def encoder(self) -> Callable[[Event], bytes]:
        """Chunk-framed event bytes on HTTP/1.1, bare ones on HTTP/1.0."""
        return Event.encode_chunk if self._chunked else Event.encode

    def stream_tail(self, final: bytes) -> bytes:
        """``final`` as a chunk, then the terminating chunk (HTTP/1.1)."""
        if not self._chunked:
            return final
        if final:
            return b"%x\r\n%b\r\n%b" % (len(final), final, _LAST_CHUNK)
        return _LAST_CHUNK

    def _base_headers(self) -> list[tuple[bytes, bytes]]:
        return [_date_header(), _SERVER_HEADER]

    async def send_response(self, response: Response, head_only: bool) -> None:
        """Frame a whole response with h11 and write it."""
        conn = self.h11
        headers = self._base_headers() + response.header_list()
        if response.status != 204:  # RFC 9110 8.6: never in a 204
            headers.append((b"content-length", b"%d" % len(response.body)))
        if self._must_close or self.server.stopping:
            headers.append((b"connection", b"close"))
        data = conn.send(
            h11.Response(
                status_code=response.status,
                headers=headers,
                reason=status_phrase(response.status).encode("ascii"),
            )
        )
        assert data is not None
        if not head_only and response.body:
            body = conn.send(h11.Data(data=response.body))
            assert body is not None
            data += body
        end = conn.send(h11.EndOfMessage())
        assert end is not None
        await self.exchange.write(data + end)

    async def start_stream(self, response: StreamResponse, head_only: bool) -> None:
        """The stream head: chunked on HTTP/1.1; the connection closes afterwards."""
        chunked = self._chunked
        headers = self._base_headers() + response.header_list()
        if chunked:
            headers.append((b"transfer-encoding", b"chunked"))
        if not chunked or not head_only:
            # The connection closes after a stream: say so, or a keep-alive
            # client would send its next request into the closing socket.
            headers.append((b"connection", b"close"))
        head = self.h11.send(
            h11.Response(
                status_code=response.status,
                headers=headers,
                reason=status_phrase(response.status).encode("ascii"),
            )
        )
        assert head is not None
        if head_only:
            end = self.h11.send(h11.EndOfMessage())
            assert end is not None
            await self.exchange.write(head + end)
            return
        # The request body (if any) is not read during a stream: close afterwards.
        self._must_close = True
        await self.exchange.write(head)

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
        if event.http_version not in (b"1.1", b"1.0"):
            # h11 parses any HTTP/x.y request line; this server speaks 1.x.
            await self._send_error(505, "HTTP/1.1 or HTTP/1.0 only")
            return False
        if len(event.headers) > cfg.max_header_count:
            await self._send_error(431, f"more than {cfg.max_header_count} request headers")
            return False
        size = len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers)
        if size > cfg.max_header_size:
            await self._send_error(431, f"request head over {cfg.max_header_size} bytes")
            return False
        refused = request_head_error(event.headers.raw_items())
        if refused is not None:
            # Possible smuggling: answer, then close (never read what follows).
            await self._send_error(400, refused)
            return False
        declared = 0
        for name, value in event.headers:
            if name == b"content-length":
                declared = int(value)  # h11 validated it
        self.exchange.declared_length = declared
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
        if app.websocket_routes and is_websocket_upgrade(event.method, list(event.headers)):
            ws_route, ws_params = app.resolve_websocket(request.path)
            if ws_route is not None:
                request.path_params = ws_params
                return await self._websocket(event, request, ws_route)
        await self.exchange.dispatch(request)
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
        head = b"%s %s HTTP/%s\r\n" % (event.method, event.target, event.http_version)
        head += b"".join(b"%s: %s\r\n" % (n, v) for n, v in event.headers.raw_items())
        head += b"\r\n" + self.h11.trailing_data[0]

        def interruptible(scope: trio.CancelScope | None) -> None:
            self._interruptible = scope
            if scope is not None and self.server.stopping:
                scope.cancel()

        await serve_raw_websocket(self.stream, head, request, route, self.config, interruptible)
        return False
