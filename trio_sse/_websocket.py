"""WebSocket routes, and topics over WebSocket, on both servers.

Theory of operation
-------------------

A :class:`WebSocket` is what a WebSocket route handler
(``async def handler(request, ws)``, registered with :meth:`App.websocket`)
talks to. Two transports implement it: on the raw server, trio-websocket
(``_RawWebSocket`` in ``_websocket_raw.py``) takes over the upgraded connection; under an ASGI
server, the ``websocket`` scope (``_ASGIWebSocket`` in ``_asgi.py``). One
driver, :func:`run_websocket_handler`, runs every handler, so refusing,
errors, shutdown and closing behave the same on both.

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

Topics over WebSocket
---------------------

:func:`topic_websocket` serves the broker's topics: the client's first text
message is ``{"subscribe": ["news", "prices"], "last_event_id": "..."}``;
each event then arrives as one text frame, a JSON object holding the event's
fields (``data``, ``event``, ``id``, ``retry``, ``comment``; absent when
unset). Ids, replay, reset events and composite cursors are exactly those of
:func:`~trio_sse.topic_stream`, so a client resumes by sending back the last
``id`` it received. Overflow policies apply unchanged; an evicted client gets
a final frame (the topic's ``eviction_event``, else ``{"event":"evicted"}``)
and a close with code :data:`CLOSE_EVICTED` (4000).
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Final

import trio

from ._broker import Broker
from ._errors import SSEError
from ._event import Event
from ._http import HTTPException, WebSocketHandler
from ._request import Request
from ._subscription import Subscription

if TYPE_CHECKING:
    pass

__all__ = [
    "CLOSE_EVICTED",
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_NORMAL",
    "CLOSE_POLICY_VIOLATION",
    "WebSocket",
    "WebSocketClosed",
    "event_frame",
    "run_websocket_handler",
    "topic_websocket",
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

#: The final frame of an evicted subscriber whose topic has no eviction event.
_EVICTED_EVENT: Final = Event(event="evicted")


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


# -- topics over WebSocket -------------------------------------------------------


async def _allowed(result: bool | Awaitable[bool]) -> bool:
    if inspect.isawaitable(result):
        result = await result
    return bool(result)


def _parse_subscribe(message: str | bytes, max_topics: int) -> tuple[list[str], str | None]:
    """``{"subscribe": [...] | "name", "last_event_id": str | null}`` → names, id."""
    if isinstance(message, bytes):
        raise ValueError("send the subscribe message as a text frame")
    try:
        obj = json.loads(message)
    except ValueError:
        raise ValueError("the subscribe message is not JSON") from None
    if not isinstance(obj, dict) or "subscribe" not in obj:
        raise ValueError('expected {"subscribe": ["topic", ...], "last_event_id": "..."}')
    names = obj["subscribe"]
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError('"subscribe" must name at least one topic')
    names = list(dict.fromkeys(names))
    if len(names) > max_topics:
        raise ValueError(f"at most {max_topics} topics per connection")
    last_event_id = obj.get("last_event_id")
    if last_event_id is not None and not isinstance(last_event_id, str):
        raise ValueError('"last_event_id" must be a string')
    return names, last_event_id or None


async def _refuse(ws: WebSocket, reason: str) -> None:
    """Tell the client why (an ``error`` frame), then close with 1008."""
    await ws.send(json.dumps({"error": reason}, ensure_ascii=False))
    # Close reasons are limited to 123 bytes.
    await ws.close(CLOSE_POLICY_VIOLATION, reason.encode()[:120].decode(errors="ignore"))


async def _until_closed(ws: WebSocket, scope: trio.CancelScope) -> None:
    """Read (and ignore) the client's later messages; its close cancels ``scope``."""
    try:
        while True:
            await ws.receive()
    except WebSocketClosed:
        scope.cancel()


def topic_websocket(
    broker: Broker,
    *,
    max_topics: int = 8,
    max_batch: int = 64,
    authorize: Callable[[Request, list[str]], bool | Awaitable[bool]] | None = None,
    subscribe_timeout: float = 10.0,
) -> WebSocketHandler:
    """A WebSocket route handler streaming topics, like :func:`~trio_sse.topic_stream`.

    Protocol (text frames, JSON):

    * client → server, first message: ``{"subscribe": ["news", "prices"],
      "last_event_id": "..."}``. ``subscribe`` names existing topics (a
      string for one); ``last_event_id`` (optional; else the request's
      ``lastEventId`` query parameter) is the last ``id`` received, a topic id
      for one topic or a composite cursor for several. Later messages are
      ignored.
    * server → client: one frame per event, ``{"data": ..., "event": ...,
      "id": ..., "retry": ..., "comment": ...}`` with the fields that are set.
      A fresh subscriber first gets ``{"id": <starting cursor>}``; replay,
      reset events and composite cursors are those of the SSE route.
    * a bad subscribe message, an unknown topic or a refused authorization:
      ``{"error": "..."}`` then close ``1008``; no subscribe message within
      *subscribe_timeout* seconds: the same.
    * eviction (the topic's overflow policy): the topic's
      ``eviction_event`` as a last frame (else ``{"event": "evicted"}``),
      then close :data:`CLOSE_EVICTED` (4000). A closed topic: close ``1001``.

    Args:
        broker: the broker to subscribe to.
        max_topics: the most topics one connection may subscribe to.
        max_batch: the most queued events taken per wake-up.
        authorize: optional ``(request, topic_names) -> bool`` (or awaitable).
        subscribe_timeout: seconds to wait for the subscribe message.

    Returns:
        A handler for :meth:`App.add_websocket_route`.

    Example::

        app.add_websocket_route("/ws", topic_websocket(broker))

    """
    if max_topics < 1 or max_batch < 1:
        raise ValueError("max_topics and max_batch must be at least 1")

    async def handler(request: Request, ws: WebSocket) -> None:
        await ws.accept()
        message: str | bytes = ""
        with trio.move_on_after(subscribe_timeout) as waiting:
            message = await ws.receive()
        if waiting.cancelled_caught:
            await _refuse(ws, f"no subscribe message within {subscribe_timeout:g} s")
            return
        try:
            names, last_event_id = _parse_subscribe(message, max_topics)
        except ValueError as exc:
            await _refuse(ws, str(exc))
            return
        unknown = [n for n in names if n not in broker.topics]
        if unknown:
            await _refuse(ws, f"no such topic: {', '.join(unknown)}")
            return
        if authorize is not None and not await _allowed(authorize(request, names)):
            await _refuse(ws, "not allowed to subscribe to these topics")
            return
        if last_event_id is None:
            last_event_id = request.last_event_id or None
        subscription = (
            broker.subscribe(names[0], last_event_id)
            if len(names) == 1
            else broker.subscribe_many(names, last_event_id)
        )
        await _pump(ws, subscription, broker, names, last_event_id, max_batch)

    return handler


async def _pump(
    ws: WebSocket,
    subscription: Subscription,
    broker: Broker,
    names: list[str],
    last_event_id: str | None,
    max_batch: int,
) -> None:
    finals = [e for n in names if (e := broker.topic(n).options.eviction_event) is not None]
    last: Event | None = None
    async with subscription, trio.open_nursery() as nursery:
        nursery.start_soon(_until_closed, ws, nursery.cancel_scope)
        try:
            cursor = subscription.cursor
            if last_event_id is None and cursor is not None:
                await ws.send_event(Event(id=cursor))
            while batch := await subscription.receive_batch(max_batch):
                for event in batch:
                    await ws.send(event_frame(event))
                last = batch[-1]
        except WebSocketClosed:  # pragma: no cover - timing: usually _until_closed sees it first
            pass  # the peer went away; nothing more to say
        nursery.cancel_scope.cancel()
    if subscription.evicted:
        if not any(last is final for final in finals):
            await ws.send_event(_EVICTED_EVENT)
        await ws.close(CLOSE_EVICTED, "evicted: too slow; reconnect with last_event_id")
    elif subscription.end_reason == "closed":
        await ws.close(CLOSE_GOING_AWAY, "topic closed")
