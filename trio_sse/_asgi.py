"""The ASGI 3 adapter: an :class:`~trio_sse.App` served by a trio ASGI server.

Theory of operation
-------------------

``App.__call__`` delegates here, so ``hypercorn --worker-class trio MODULE:APP``
serves the same routes, streams and lifespan as :func:`trio_sse.serve`. The
server owns the sockets, the HTTP framing (HTTP/1.1, HTTP/2, TLS) and its own
header, keep-alive and shutdown limits. Above the framing, a request is
answered by the same :class:`~trio_sse._exchange.Exchange` as on the raw
server (routing, errors, body limits, the write deadline, heartbeats, the
stream lifetime and final ``retry:``); ``_ASGITransport`` is its transport.

Rule 1, one nursery per request: the exchange and the transport's *receive
watcher* share one nursery. The watcher is the only task that calls
``receive()``: it buffers the request body (the exchange bounds it by
``max_body_size`` and ``body_timeout``), and on ``http.disconnect`` it
cancels the nursery, so the handler is cancelled at its next checkpoint,
exactly as the raw server's read-side EOF does. Nothing outlives the request.

Rule 2, the same deadlines, applied by the exchange: ``write_timeout``
bounds each ``send`` of response bytes (hypercorn applies backpressure
inside ``send``), and a send that does not return in time ends the request
without ending the body, so the server closes the connection or resets the
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
through ``_ASGIWebSocket`` (``_asgi_websocket.py``), driven by the same
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
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, final

import trio

from ._asgi_scope import Message as Message
from ._asgi_scope import Receive as Receive
from ._asgi_scope import Scope as Scope
from ._asgi_scope import Send as Send
from ._asgi_scope import request_from_scope
from ._asgi_websocket import serve_websocket
from ._edge import request_head_error
from ._event import Event
from ._exchange import Exchange
from ._http import PlainTextResponse, Response, StreamResponse
from ._limits import ClientLimits
from ._transport import BodyTooLarge, PeerGone

if TYPE_CHECKING:
    from ._app import App

__all__ = ["Message", "Receive", "Scope", "Send", "serve_asgi"]

logger = logging.getLogger("trio_sse.asgi")


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
        await serve_websocket(app, scope, receive, send)
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


# -- http ---------------------------------------------------------------------


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
        request = request_from_scope(app, self.scope, self.exchange.read_body)
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
