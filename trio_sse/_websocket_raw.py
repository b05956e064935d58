"""The raw server's WebSocket transport: trio-websocket on an upgraded connection.

The raw server reads the upgrade request's head with h11, then hands the
socket here (:func:`serve_raw_websocket`): trio-websocket reads the handshake
again from those bytes, so h11 and wsproto never share a connection state.
``_RawWebSocket`` implements :class:`~trio_sse.WebSocket` over it, driven by
the same :func:`~trio_sse._websocket.run_websocket_handler` as under ASGI.

Deadlines: every send is bounded by ``Config.write_timeout``
(:func:`~trio_sse._pacing.write_within`; a stall cuts the connection), and
an unsolicited pong goes out after ``heartbeat_interval`` of silence, timed
by the same :class:`~trio_sse._pacing.WriteClock` as event streams.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, final

import trio

from ._app import WebSocketRoute
from ._config import Config
from ._pacing import WriteClock, write_within
from ._request import Request
from ._websocket import CLOSE_NORMAL, WebSocket, WebSocketClosed, run_websocket_handler

if TYPE_CHECKING:
    import trio_websocket

__all__ = ["serve_raw_websocket", "websocket_available"]

logger = logging.getLogger("trio_sse.websocket")


def websocket_available() -> bool:
    """Whether trio-websocket is installed (the raw server needs it for WebSocket routes)."""
    try:
        import trio_websocket  # noqa: F401
    except ImportError:  # pragma: no cover - it is a test dependency
        return False
    return True


@final
class _PrefixedStream(trio.abc.Stream):
    """A stream that first yields bytes already read (the request head)."""

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self._stream = stream
        self._prefix = prefix

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:  # pragma: no cover - unused
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._prefix:
            data, self._prefix = self._prefix, b""
            await trio.lowlevel.checkpoint()
            return data
        return await self._stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._stream.aclose()


@final
class _RawWebSocket(WebSocket):
    """:class:`WebSocket` over trio-websocket, on a connection of the raw server."""

    def __init__(
        self,
        ws_request: trio_websocket.WebSocketRequest,
        stream: trio.abc.Stream,
        request: Request,
        config: Config,
        nursery: trio.Nursery,
    ) -> None:
        self.request = request
        self._ws_request = ws_request
        self._stream = stream
        self._config = config
        self._nursery = nursery
        self._conn: trio_websocket.WebSocketConnection | None = None
        # Set once closed, refused or cut: what later calls raise.
        self._closed: WebSocketClosed | None = None
        self._writing = False
        self._clock = WriteClock(config.heartbeat_interval)

    @property
    def accepted(self) -> bool:
        return self._conn is not None

    async def accept(self, subprotocol: str | None = None) -> None:
        if self._conn is not None or self._closed is not None:
            raise RuntimeError("accept() may only be called once, before close()")
        self._conn = await self._ws_request.accept(subprotocol=subprotocol)
        self._clock.wrote()
        if self._clock.interval is not None:
            self._nursery.start_soon(self._clock.run, trio.sleep_forever, self._heartbeat)

    def _open(self) -> trio_websocket.WebSocketConnection:
        if self._conn is None:
            raise RuntimeError("accept() the WebSocket first")
        if self._closed is not None:
            raise self._closed
        return self._conn

    async def receive(self) -> str | bytes:
        import trio_websocket

        conn = self._open()
        try:
            return await conn.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise _closed(exc) from None

    async def send(self, message: str | bytes) -> None:
        conn = self._open()
        await self._write(conn.send_message, message)

    async def _write(self, op: Callable[[Any], Awaitable[None]], arg: str | bytes | None) -> None:
        import trio_websocket

        timeout = self._config.write_timeout
        self._writing = True
        try:
            done = await write_within(timeout, op, arg)
        except trio_websocket.ConnectionClosed as exc:
            raise _closed(exc) from None
        finally:
            self._writing = False
        if not done:
            logger.info(
                "WebSocket write to %s stalled for %.1f s; closing", self.request.client, timeout
            )
            # The frame may be half written: cut the connection, no close handshake.
            self._closed = WebSocketClosed(1006, "write stalled")
            await trio.aclose_forcefully(self._stream)
            raise self._closed
        self._clock.wrote()

    async def _heartbeat(self) -> None:
        """An unsolicited pong after ``interval`` of silence keeps proxies from timing out.

        Called by the :class:`~trio_sse._pacing.WriteClock` whenever its timer
        fires; a pong that fails means the connection is closed, and the
        next send says so.
        """
        if not self._clock.due() or self._writing or self._closed is not None:
            return  # a write in progress has its own deadline
        with contextlib.suppress(WebSocketClosed):
            await self._write(self._open().pong, None)

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        if self._closed is not None:
            return
        if self._conn is None:
            await self._reject(403, "WebSocket handshake refused", {})
            return
        self._closed = WebSocketClosed(code, reason)
        # Wait for the peer's close frame for a moment; aclose() then closes the stream.
        with trio.move_on_after(self._config.close_linger):
            await self._conn.aclose(code, reason or None)
        await trio.aclose_forcefully(self._stream)

    async def _reject(self, status: int, detail: str, headers: Mapping[str, str]) -> None:
        if self._closed is not None or self._conn is not None:
            return
        self._closed = WebSocketClosed(1006, "refused")
        extra = [(b"content-type", b"text/plain; charset=utf-8")]
        extra.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
        body = (detail + "\n").encode()

        async def reject(ws_request: trio_websocket.WebSocketRequest) -> None:
            await ws_request.reject(status, extra_headers=extra, body=body)

        await write_within(self._config.write_timeout, reject, self._ws_request)


def _closed(exc: trio_websocket.ConnectionClosed) -> WebSocketClosed:
    reason = exc.reason
    if reason is None:  # pragma: no cover - trio-websocket always sets one
        return WebSocketClosed(1006)
    return WebSocketClosed(reason.code, reason.reason or "")


async def serve_raw_websocket(
    stream: trio.abc.Stream,
    head: bytes,
    request: Request,
    route: WebSocketRoute,
    config: Config,
    set_interruptible: Callable[[trio.CancelScope | None], None],
) -> None:
    """Serve a WebSocket upgrade the raw server has read the head of.

    trio-websocket reads the handshake again (``head``: the request head and
    any bytes after it), so the raw server's h11 and trio-websocket's wsproto
    never share a connection state.

    Args:
        stream: the connection; closed when this returns.
        head: the bytes of the request head and whatever followed it.
        request: the upgrade request.
        route: the matched route.
        config: limits and deadlines.
        set_interruptible: see :func:`run_websocket_handler`.

    """
    import trio_websocket

    ws_request: trio_websocket.WebSocketRequest | None = None
    async with trio.open_nursery() as nursery:
        with trio.move_on_after(config.header_timeout):
            ws_request = await trio_websocket.wrap_server_stream(
                nursery,
                _PrefixedStream(stream, head),
                max_message_size=config.max_body_size,
            )
        if ws_request is None:  # pragma: no cover - the head was already valid
            nursery.cancel_scope.cancel()
            return
        ws = _RawWebSocket(ws_request, stream, request, config, nursery)
        await run_websocket_handler(ws, route.handler, set_interruptible)
        nursery.cancel_scope.cancel()
