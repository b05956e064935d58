"""The ASGI 3 adapter: an :class:`~trio_sse.App` served by a trio ASGI server.

Theory of operation
-------------------

``App.__call__`` delegates here, so ``hypercorn --worker-class trio MODULE:APP``
serves the same routes, streams and lifespan as :func:`trio_sse.serve`. The
server owns the sockets, the HTTP framing (HTTP/1.1, HTTP/2, TLS) and its own
header, keep-alive and shutdown limits; this module owns what the raw server
does above the framing, reusing the same :class:`~trio_sse.Config` fields.

Rule 1, one nursery per request: a request's handler and its *receive
watcher* share one nursery. The watcher is the only task that calls
``receive()``: it buffers the request body (bounded by ``max_body_size``) for
:meth:`Request.body`, and on ``http.disconnect`` it cancels the nursery, so
the handler is cancelled at its next checkpoint, exactly as the raw server's
read-side EOF does. Nothing outlives the request.

Rule 2, the same deadlines: ``body_timeout`` bounds :meth:`Request.body`;
``write_timeout`` bounds each ``send`` of response bytes (hypercorn applies
backpressure inside ``send``), and a send that does not return in time
cancels the request like a disconnect; ``max_stream_lifetime`` ends a stream
with the ``retry:`` hint; ``heartbeat_interval`` sends comments on a silent
stream. Limits of the connection itself (header size, keep-alive, maximum
connections, graceful shutdown) are the ASGI server's own settings.

Rule 3, encode once: an event's bytes come cached from :meth:`Event.encode`;
one ``http.response.body`` message (``more_body=True``) carries one event, or
all the events of a :meth:`EventStream.send_many`. The server frames them
(chunks for HTTP/1.1, DATA frames for HTTP/2).

Rule 4, lifespan: ``lifespan.startup`` enters :meth:`App.run_lifespan` in a
task that holds it open until ``lifespan.shutdown``, so background tasks run
for the server's lifetime, as under the raw server.

Rule 5, WebSocket: a ``websocket`` scope goes to the App's WebSocket route
through ``_ASGIWebSocket``, driven by the same
:func:`~trio_sse._websocket.run_websocket_handler` as on the raw server; a
refusal uses the ``websocket.http.response`` extension when the server offers
it (hypercorn does), so the client sees the real status.

Only trio is supported: the handlers, streams and background tasks are trio
code. Called from another event loop (asyncio under uvicorn, or hypercorn's
default asyncio worker) the app fails the lifespan start-up and raises a
:class:`RuntimeError` for requests, both saying to use the trio worker.
"""

from __future__ import annotations

import contextlib
import logging
import urllib.parse
import weakref
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, Final, TypeAlias, final

import trio

from ._app import (
    App,
    BodyReader,
    Headers,
    PlainTextResponse,
    Request,
    Response,
    StreamResponse,
    _no_body,
)
from ._config import Config
from ._edge import request_head_error
from ._event import Event
from ._exchange import Exchange
from ._limits import ClientLimits
from ._pacing import write_within
from ._transport import BodyTooLarge, PeerGone
from ._websocket import CLOSE_NORMAL, WebSocket, WebSocketClosed, run_websocket_handler

__all__ = ["Message", "Receive", "Scope", "Send", "serve_asgi"]

logger = logging.getLogger("trio_sse.asgi")

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]

_NOT_TRIO: Final = (
    "trio_sse.App is a trio ASGI application and was called outside trio "
    "(asyncio?): serve it with hypercorn's trio worker, "
    "`hypercorn --worker-class trio MODULE:APP`, or with `trio-sse serve MODULE:APP`"
)


#: Per-client stream counts of each App served over ASGI (one per process).
_APP_LIMITS: weakref.WeakKeyDictionary[App, ClientLimits] = weakref.WeakKeyDictionary()


def client_limits(app: App) -> ClientLimits:
    """The :class:`ClientLimits` the ASGI adapter keeps for ``app`` in this process."""
    limits = _APP_LIMITS.get(app)
    if limits is None or limits.config is not app.config:
        limits = _APP_LIMITS[app] = ClientLimits(app.config, app.refusals)
    return limits


def _in_trio() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


async def serve_asgi(app: App, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one ASGI connection scope (``http``, ``websocket`` or ``lifespan``) with ``app``.

    Args:
        app: the application.
        scope: the ASGI connection scope.
        receive: the ASGI receive callable.
        send: the ASGI send callable.

    Raises:
        RuntimeError: not running under trio, or an unknown scope type.

    """
    kind = scope["type"]
    if not _in_trio():
        if kind == "lifespan":
            # Fail the server's start-up with the reason, rather than letting
            # it carry on "without lifespan support" and fail every request.
            # (receive/send belong to the server's loop, so awaiting them is fine.)
            await receive()
            await send({"type": "lifespan.startup.failed", "message": _NOT_TRIO})
            return
        raise RuntimeError(_NOT_TRIO)
    if kind == "http":
        await _ASGITransport(app, scope, receive, send).run()
    elif kind == "lifespan":
        await _lifespan(app, receive, send)
    elif kind == "websocket":
        await _serve_websocket(app, scope, receive, send)
    else:
        raise RuntimeError(f"trio_sse.App cannot serve ASGI scope type {kind!r}")


# -- lifespan -----------------------------------------------------------------


async def _hold_lifespan(
    app: App, stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    async with app.run_lifespan():
        task_status.started()
        await stop.wait()


async def _lifespan(app: App, receive: Receive, send: Send) -> None:
    """The ASGI lifespan protocol around :meth:`App.run_lifespan`.

    Error handling:
        An exception entering the lifespan is reported as
        ``lifespan.startup.failed`` with its message (hypercorn then exits);
        one while leaving it as ``lifespan.shutdown.failed``. A background
        task that raises while the server runs makes this coroutine raise:
        ASGI has no way to stop the server, so hypercorn logs the traceback
        and goes on serving (the raw server stops instead).
    """
    message = await receive()
    if message["type"] != "lifespan.startup":  # pragma: no cover - server bug
        raise RuntimeError(f"expected lifespan.startup, got {message['type']!r}")
    stopping = False
    try:
        async with trio.open_nursery() as nursery:
            stop = trio.Event()
            try:
                await nursery.start(_hold_lifespan, app, stop)
            except Exception as exc:
                logger.exception("lifespan startup failed")
                await send({"type": "lifespan.startup.failed", "message": _describe(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            stopping = True
            stop.set()
    except Exception as exc:
        if not stopping:
            raise
        logger.exception("lifespan shutdown failed")
        await send({"type": "lifespan.shutdown.failed", "message": _describe(exc)})
        return
    await send({"type": "lifespan.shutdown.complete"})


def _describe(exc: BaseException) -> str:
    """``"Type: message"`` of the error, looking inside single-error groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


# -- websocket ----------------------------------------------------------------


async def _serve_websocket(app: App, scope: Scope, receive: Receive, send: Send) -> None:
    """A ``websocket`` scope: the App's WebSocket route, or a 404 refusal."""
    message = await receive()
    if message["type"] != "websocket.connect":  # pragma: no cover - gone before connecting
        return
    request = _request_from_scope(app, scope)
    ws = _ASGIWebSocket(request, scope, receive, send, app.config)
    route, params = app.resolve_websocket(request.path)
    if route is None:
        await ws._reject(404, "not found", {})
        return
    request.path_params = params
    await run_websocket_handler(ws, route.handler, _ignore_scope)


def _ignore_scope(scope: trio.CancelScope | None) -> None:
    """ASGI servers shut down by cancelling the app; nothing to register."""


@final
class _ASGIWebSocket(WebSocket):
    """:class:`WebSocket` over an ASGI ``websocket`` scope."""

    def __init__(
        self, request: Request, scope: Scope, receive: Receive, send: Send, config: Config
    ) -> None:
        self.request = request
        self._scope = scope
        self._receive = receive
        self._send = send
        self._config = config
        self._accepted = False
        self._closed: WebSocketClosed | None = None

    @property
    def accepted(self) -> bool:
        return self._accepted

    async def accept(self, subprotocol: str | None = None) -> None:
        if self._accepted or self._closed is not None:
            raise RuntimeError("accept() may only be called once, before close()")
        await self._send({"type": "websocket.accept", "subprotocol": subprotocol})
        self._accepted = True

    def _check_open(self) -> None:
        if not self._accepted:
            raise RuntimeError("accept() the WebSocket first")
        if self._closed is not None:
            raise self._closed

    async def receive(self) -> str | bytes:
        self._check_open()
        message = await self._receive()
        kind = message["type"]
        if kind == "websocket.receive":
            text = message.get("text")
            if text is not None:
                return str(text)
            return bytes(message.get("bytes") or b"")
        # websocket.disconnect
        self._closed = WebSocketClosed(int(message.get("code", 1005)), message.get("reason") or "")
        raise self._closed

    async def send(self, message: str | bytes) -> None:
        self._check_open()
        key = "text" if isinstance(message, str) else "bytes"
        timeout = self._config.write_timeout
        if not await write_within(timeout, self._send, {"type": "websocket.send", key: message}):
            logger.info(
                "WebSocket write to %s stalled for %.1f s; closing", self.request.client, timeout
            )
            self._closed = WebSocketClosed(1006, "write stalled")
            raise self._closed

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        if self._closed is not None:
            return
        self._closed = WebSocketClosed(code, reason)
        # Before accept(), the server answers the handshake with 403.
        await self._send({"type": "websocket.close", "code": code, "reason": reason})

    async def _reject(self, status: int, detail: str, headers: Mapping[str, str]) -> None:
        if self._accepted or self._closed is not None:
            return
        self._closed = WebSocketClosed(1006, "refused")
        if "websocket.http.response" not in (self._scope.get("extensions") or {}):
            # Without the extension the server can only answer 403.
            await self._send({"type": "websocket.close", "code": 1008})
            return
        body = (detail + "\n").encode()
        response = PlainTextResponse(body, status, headers)
        response_headers = response.header_list()
        response_headers.append((b"content-length", b"%d" % len(body)))
        await self._send(
            {"type": "websocket.http.response.start", "status": status, "headers": response_headers}
        )
        await self._send({"type": "websocket.http.response.body", "body": body})


# -- http ---------------------------------------------------------------------


def _request_from_scope(app: App, scope: Scope, body_reader: BodyReader = _no_body) -> Request:
    raw_path = scope.get("raw_path")
    if not raw_path:
        raw_path = urllib.parse.quote(scope["path"]).encode("ascii")
    query = scope.get("query_string", b"")
    target = bytes(raw_path) + (b"?" + bytes(query) if query else b"")
    client = scope.get("client")
    return Request(
        scope.get("method", "GET"),
        target,
        Headers((bytes(name), bytes(value)) for name, value in scope["headers"]),
        app=app,
        http_version=scope.get("http_version", "1.1"),
        client=(str(client[0]), int(client[1])) if client else None,
        body_reader=body_reader,
        root_path=scope.get("root_path", ""),
    )


@final
class _ASGITransport:
    """The :class:`~trio_sse._exchange.Transport` of one ASGI ``http`` scope.

    Its *watcher* task is the only one that calls ``receive()``: it buffers
    the request body, and on ``http.disconnect`` it cancels the request.
    """

    heartbeat: bytes
    direct: Final = False
    stopping: Final = False  # ASGI servers shut down by cancelling the app

    def __init__(self, app: App, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        client = scope.get("client")
        self.client: tuple[str, int] | None = (str(client[0]), int(client[1])) if client else None
        self.heartbeat = app.config.heartbeat_bytes()
        self.exchange = Exchange(app, app.config, self, client_limits(app))
        self._cancel = trio.CancelScope()  # replaced by the request's nursery scope
        self._disconnected = trio.Event()
        # The request body, as the watcher receives it.
        self._parts: list[bytes] = []
        self._size = 0
        self._limit = app.config.max_body_size
        self._too_large = False
        self._body_ready = trio.Event()  # complete, or known to be too large
        self._finished = False  # the last body message is being sent

    async def run(self) -> None:
        app = self.exchange.app
        request = _request_from_scope(app, self.scope, self.exchange.read_body)
        declared = request.headers.get("content-length")
        if declared is not None and declared.strip().isdigit():
            self.exchange.declared_length = int(declared)
        refused = request_head_error(
            self.scope["headers"], http2=self.scope.get("http_version") == "2"
        )
        # On PeerGone (a stalled write), returning without ending the body
        # makes the server close the connection (HTTP/1.1) or reset the
        # stream (HTTP/2).
        if refused is not None:
            response = PlainTextResponse(refused + "\n", 400, {"connection": "close"})
            with contextlib.suppress(PeerGone):
                await self.exchange.respond(response, request.method == "HEAD")
            return
        async with trio.open_nursery() as nursery:
            self._cancel = nursery.cancel_scope
            nursery.start_soon(self._watch)
            with contextlib.suppress(PeerGone):
                await self.exchange.dispatch(request)
            nursery.cancel_scope.cancel()

    async def _watch(self) -> None:
        """Own ``receive()``: buffer the body; a disconnect cancels the request."""
        while True:
            message = await self._receive()
            kind = message["type"]
            if kind == "http.request":
                body = bytes(message.get("body", b""))
                if not self._too_large:
                    self._size += len(body)
                    if self._size > self._limit:
                        self._too_large = True
                        self._parts.clear()
                        self._body_ready.set()
                    elif body:
                        self._parts.append(body)
                if not message.get("more_body", False):
                    self._body_ready.set()
            elif kind == "http.disconnect":  # pragma: no branch - the only other type
                # After the last body message the server reports a disconnect
                # from *inside* that send call (hypercorn recycles or closes
                # the connection there): cancelling then would cut its
                # clean-up short. The response is complete; nothing to stop.
                if not self._finished:
                    self._disconnected.set()
                    self._cancel.cancel()
                return

    # -- Transport ------------------------------------------------------------

    async def receive_body(self, limit: int) -> bytes:
        """Wait for the watcher to have the whole body (it applies ``limit``)."""
        await self._body_ready.wait()
        if self._too_large:
            raise BodyTooLarge()
        return b"".join(self._parts)

    async def wait_disconnect(self) -> None:
        """Wait for the watcher to see ``http.disconnect``."""
        await self._disconnected.wait()

    def encoder(self) -> Callable[[Event], bytes]:
        """Bare event bytes: the server frames them."""
        return Event.encode

    def stream_tail(self, final: bytes) -> bytes:
        """The final event, if any: the server ends the body."""
        return final

    def close_after(self) -> None:
        """The ASGI server decides about its connections."""

    def write_now(self, data: bytes) -> bytes | None:
        """No direct path: every write is an ASGI message."""
        return data

    async def write_rest(self, data: bytes, last: bool) -> None:
        """One ``http.response.body`` message."""
        if last:
            self._finished = True
        await self._send({"type": "http.response.body", "body": data, "more_body": not last})

    async def send_response(self, response: Response, head_only: bool) -> None:
        """An ordinary response: ``Content-Length`` set, no body for HEAD."""
        headers = response.header_list()
        if response.status != 204:  # RFC 9110 8.6: never in a 204
            headers.append((b"content-length", b"%d" % len(response.body)))
        await self._send(
            {"type": "http.response.start", "status": response.status, "headers": headers}
        )
        await self.exchange.write(b"" if head_only else response.body, last=True)

    async def start_stream(self, response: StreamResponse, head_only: bool) -> None:
        """The stream head, then an empty body message (or the end, for HEAD)."""
        await self._send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": response.header_list(),
            }
        )
        # An empty body message makes servers that hold the head back until the
        # first body bytes send it now (hypercorn sends it at once anyway).
        await self.exchange.write(b"", last=head_only)
