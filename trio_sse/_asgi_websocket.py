"""The ASGI ``websocket`` scope: an App's WebSocket routes under an ASGI server.

A ``websocket`` scope goes to the App's WebSocket route through
``_ASGIWebSocket``, driven by the same
:func:`~trio_sse._websocket.run_websocket_handler` as on the raw server; a
refusal uses the ``websocket.http.response`` extension when the server offers
it (hypercorn does), so the client sees the real status. Each send is bounded
by ``Config.write_timeout`` (:func:`~trio_sse._pacing.write_within`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, final

import trio

from ._asgi_scope import Receive, Scope, Send, request_from_scope
from ._config import Config
from ._http import PlainTextResponse
from ._pacing import write_within
from ._request import Request
from ._websocket import CLOSE_NORMAL, WebSocket, WebSocketClosed, run_websocket_handler

if TYPE_CHECKING:
    from ._app import App

__all__ = ["serve_websocket"]

logger = logging.getLogger("trio_sse.asgi")


async def serve_websocket(app: App, scope: Scope, receive: Receive, send: Send) -> None:
    """A ``websocket`` scope: the App's WebSocket route, or a 404 refusal."""
    message = await receive()
    if message["type"] != "websocket.connect":  # pragma: no cover - gone before connecting
        return
    request = request_from_scope(app, scope)
    ws = _ASGIWebSocket(request, scope, receive, send, app.config)
    route, params = app._resolve_websocket(request.path)
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
