"""Topics over WebSocket: :func:`topic_websocket`, on both servers.

Theory of operation
-------------------

:func:`topic_websocket` serves the broker's topics: the client's first text
message is ``{"subscribe": ["news", "prices"], "last_event_id": "..."}``;
each event then arrives as one text frame, a JSON object holding the event's
fields (``data``, ``event``, ``id``, ``retry``, ``comment``; absent when
unset). Ids, replay, reset events and composite cursors are exactly those of
:func:`~trio_sse.topic_stream`, so a client resumes by sending back the last
``id`` it received. Overflow policies apply unchanged; an evicted client gets
a final frame (the topic's ``eviction_event``, else ``{"event":"evicted"}``)
and a close with code :data:`CLOSE_EVICTED` (4000).

Rule 1, subscribe first: the handler accepts, then waits (at most
``subscribe_timeout``) for the subscribe message; a bad message, an unknown
topic or a refused authorization gets an ``{"error": ...}`` frame and a close
with :data:`CLOSE_POLICY_VIOLATION`, before any subscription exists.

Rule 2, two tasks per connection: ``_pump`` takes batches from the
subscription and sends them (each send under ``Config.write_timeout``, see
``_websocket.py``); beside it, ``_until_closed`` reads and ignores the
client's later messages, so that its close cancels the pump at once instead
of at the next event.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable
from typing import Final

import trio

from ._broker import Broker
from ._event import Event
from ._http import WebSocketHandler
from ._request import Request
from ._subscription import Subscription
from ._websocket import (
    CLOSE_EVICTED,
    CLOSE_GOING_AWAY,
    CLOSE_POLICY_VIOLATION,
    WebSocket,
    WebSocketClosed,
    event_frame,
)

__all__ = ["topic_websocket"]

#: The final frame of an evicted subscriber whose topic has no eviction event.
_EVICTED_EVENT: Final = Event(event="evicted")


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
