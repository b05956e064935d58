"""WebSocket routes, and topics over WebSocket, on both servers.

Theory of operation
-------------------

A :class:`WebSocket` is what a WebSocket route handler
(``async def handler(request, ws)``, registered with :meth:`App.websocket`)
talks to. Two transports implement it: on the raw server, trio-websocket
(``_RawWebSocket`` in ``_websocket_raw.py``) takes over the upgraded
connection; under an ASGI server, the ``websocket`` scope
(``_ASGIWebSocket`` in ``_asgi_websocket.py``). One driver,
:func:`run_websocket_handler`, runs every handler, so refusing, errors,
shutdown and closing behave the same on both.

Rule 1, the handshake is the handler's: it calls :meth:`WebSocket.accept`,
or raises :class:`~trio_sse.HTTPException` first to refuse with that status.
Returning without accepting refuses with ``403``.

Rule 2, disconnects are seen by receiving: unlike an event stream, whose
server reads the socket for it, a WebSocket's incoming frames belong to the
handler. :meth:`WebSocket.receive` and :meth:`WebSocket.send` raise
:class:`WebSocketClosed` once the peer is gone, which ends the handler
quietly. A handler that mostly sends runs a receiving task beside its sender
(as :func:`topic_websocket` does).

Rule 3, the same deadlines: each send is bounded by ``Config.write_timeout``
(a stall aborts the connection and raises :class:`WebSocketClosed`); on the
raw server an unsolicited pong frame goes out after ``heartbeat_interval`` of
silence (under hypercorn, set its ``websocket_ping_interval``); a message is
bounded by ``Config.max_body_size``; server shutdown closes with ``1001``.

Topics over WebSocket (:func:`~trio_sse.topic_websocket`) are in
``_websocket_topics.py``, built on this module.
"""

from __future__ import annotations

import functools
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Final

import trio

from ._errors import SSEError
from ._event import Event
from ._http import HTTPException, WebSocketHandler
from ._request import Request

__all__ = [
    "CLOSE_EVICTED",
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_NORMAL",
    "CLOSE_POLICY_VIOLATION",
    "WebSocket",
    "WebSocketClosed",
    "event_frame",
    "is_websocket_upgrade",
    "run_websocket_handler",
]

logger = logging.getLogger("trio_sse.websocket")

#: The handler finished.
CLOSE_NORMAL: Final = 1000
#: The server is shutting down, or a topic was closed.
CLOSE_GOING_AWAY: Final = 1001
#: A bad or refused subscribe message (the reason says why).
CLOSE_POLICY_VIOLATION: Final = 1008
#: The handler raised.
CLOSE_INTERNAL_ERROR: Final = 1011
#: The client fell behind and its topic's overflow policy evicted it: reconnect
#: and resume with the last ``id`` received.
CLOSE_EVICTED: Final = 4000


class WebSocketClosed(SSEError):
    """The WebSocket is closed (by the peer, by a stall, or by this side).

    Attributes:
        code: the close code (``1006`` when the connection was lost or cut
            without a close frame).
        reason: the close reason, possibly empty.

    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"WebSocket closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


class WebSocket(ABC):
    """One WebSocket connection as a handler sees it, on either server.

    Attributes:
        request: the upgrade request (path, headers, query, path parameters).

    """

    request: Request

    @property
    @abstractmethod
    def accepted(self) -> bool:
        """Whether :meth:`accept` completed the handshake."""

    @abstractmethod
    async def accept(self, subprotocol: str | None = None) -> None:
        """Complete the handshake (optionally choosing a subprotocol)."""

    @abstractmethod
    async def receive(self) -> str | bytes:
        """Wait for the next message (``str`` for text, ``bytes`` for binary).

        Raises:
            WebSocketClosed: the connection is closed.

        """

    @abstractmethod
    async def send(self, message: str | bytes) -> None:
        """Send a text (``str``) or binary (``bytes``) message.

        Raises:
            WebSocketClosed: the connection is closed, or this write stalled
                past ``Config.write_timeout`` (the connection is then cut).

        """

    @abstractmethod
    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Close the connection (idempotent; before :meth:`accept`: refuse with 403)."""

    @abstractmethod
    async def _reject(self, status: int, detail: str, headers: Mapping[str, str]) -> None:
        """Refuse the handshake with an HTTP response."""

    async def send_event(self, event: Event) -> None:
        """Send ``event`` as one JSON text frame (see :func:`event_frame`)."""
        await self.send(event_frame(event))


@functools.lru_cache(maxsize=1024)
def event_frame(event: Event) -> str:
    """The JSON text frame of ``event``: an object of its fields that are set.

    Cached, so a broadcast encodes each event once for every WebSocket
    subscriber (events are immutable and hashable).

    Example::

        event_frame(Event("hi", event="greeting", id="7"))
        # '{"data":"hi","event":"greeting","id":"7"}'
    """
    fields: dict[str, str | int] = {}
    if event.data is not None:
        fields["data"] = event.data
    if event.event is not None:
        fields["event"] = event.event
    if event.id is not None:
        fields["id"] = event.id
    if event.retry is not None:
        fields["retry"] = event.retry
    if event.comment is not None:
        fields["comment"] = event.comment
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)


def is_websocket_upgrade(method: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether an HTTP/1.1 request head asks to upgrade to WebSocket."""
    if method != b"GET":
        return False
    upgrade = connection = b""
    for name, value in headers:
        if name == b"upgrade":
            upgrade = value
        elif name == b"connection":
            connection = value
    return upgrade.strip().lower() == b"websocket" and b"upgrade" in {
        token.strip() for token in connection.lower().split(b",")
    }


def _only_closed(exc: BaseException) -> bool:
    if isinstance(exc, WebSocketClosed):
        return True
    if isinstance(exc, BaseExceptionGroup):
        _, rest = exc.split(WebSocketClosed)
        return rest is None
    return False


async def run_websocket_handler(
    ws: WebSocket,
    handler: WebSocketHandler,
    set_interruptible: Callable[[trio.CancelScope | None], None],
) -> None:
    """Run a WebSocket route handler and finish the connection (both servers).

    Args:
        ws: the connection, not yet accepted.
        handler: the route's handler.
        set_interruptible: receives the handler's cancel scope (and ``None``
            when it is over); the raw server cancels it at shutdown.

    Error handling:
        :class:`WebSocketClosed` ends the handler quietly. Before the
        handshake, :class:`HTTPException` refuses with its status and any
        other exception with ``500``; after it, an exception is logged and
        the connection closed with ``1011``. Cancellation by shutdown closes
        with ``1001`` (or refuses with ``503``).
    """
    request = ws.request
    refusal: HTTPException | None = None
    failed = False
    with trio.CancelScope() as scope:
        set_interruptible(scope)
        try:
            await handler(request, ws)
        except Exception as exc:
            if _only_closed(exc):
                pass
            elif isinstance(exc, HTTPException) and not ws.accepted:
                refusal = exc
            else:
                logger.exception("WebSocket handler for %s raised", request.path)
                failed = True
        finally:
            set_interruptible(None)
    if refusal is not None:
        await ws._reject(refusal.status, refusal.detail, refusal.headers)
    elif failed:
        if ws.accepted:
            await ws.close(CLOSE_INTERNAL_ERROR, "internal error")
        else:
            await ws._reject(500, "internal server error", {})
    elif scope.cancelled_caught:
        if ws.accepted:
            await ws.close(CLOSE_GOING_AWAY, "server shutting down")
        else:
            await ws._reject(503, "server shutting down", {})
    elif not ws.accepted:
        await ws._reject(403, "WebSocket handshake refused", {})
    else:
        await ws.close()
