"""A stream handler in a nursery beside its companion (Rule 3 of ``_exchange.py``).

Theory of operation
-------------------

The general way to run an event stream, on every transport: after the head,
the handler runs in a nursery beside one *companion* task. The companion
waits for the peer to leave (:meth:`Transport.wait_disconnect`; the handler
is then cancelled), flushes bytes a direct write left behind, and sends a
heartbeat after ``heartbeat_interval`` of silence (the exchange's
:class:`~trio_sse._pacing.WriteClock`). The handler runs under the stream's
deadline (``max_stream_lifetime`` or the response's ``expires_at``, the
sooner) and a server shutdown; a stream ended that way gets
``Config.stream_end_event()`` (the ``retry:`` hint) before the end of the
body. The handler writes through :class:`ExchangeEventStream`: framing, then
the exchange's one write path.

A topic stream on a transport that writes without waiting runs *parked*
instead, in one task (``_parked.py``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, final

import trio

from ._event import Event
from ._http import EventStream
from ._transport import PeerGone

if TYPE_CHECKING:
    from ._exchange import Exchange
    from ._http import StreamResponse
    from ._request import Request

__all__ = ["ExchangeEventStream", "stream_in_nursery"]

logger = logging.getLogger("trio_sse.exchange")


@final
class ExchangeEventStream(EventStream):
    """:class:`EventStream` over an exchange: frame, then the one write path."""

    __slots__ = ("_encode", "_exchange")

    def __init__(
        self, exchange: Exchange, encode: Callable[[Event], bytes], last_event_id: str | None
    ) -> None:
        self._exchange = exchange
        self._encode = encode
        self.last_event_id = last_event_id

    async def send(self, event: Event | str) -> None:
        """Send one event."""
        if isinstance(event, str):
            event = Event(event)
        await self._exchange.stream_write(self._encode(event))

    async def send_many(self, events: Sequence[Event]) -> None:
        """Send several events with one write."""
        if not events:
            await trio.lowlevel.checkpoint()
            return
        encode = self._encode
        # b"".join of one item returns that very bytes object: no copy.
        await self._exchange.stream_write(b"".join([encode(e) for e in events]))


async def stream_in_nursery(exchange: Exchange, request: Request, response: StreamResponse) -> None:
    """Run ``response``'s handler beside its companion; end the stream (its head is sent)."""
    cfg = exchange.config
    transport = exchange.transport
    event_stream = ExchangeEventStream(exchange, transport.encoder(), request.last_event_id)
    async with trio.open_nursery() as nursery:
        exchange._stream_scope = nursery.cancel_scope
        nursery.start_soon(_companion, exchange, nursery.cancel_scope)
        with trio.CancelScope() as stop:
            exchange.stop_scope = stop
            stop.deadline = response.deadline(cfg.max_stream_lifetime)
            if transport.stopping:
                stop.cancel()
            try:
                await response.handler(event_stream)
            except Exception:
                logger.exception("stream handler for %s raised", request.path)
        exchange.stop_scope = None
        final = cfg.stream_end_event() if stop.cancelled_caught else None
        tail = transport.stream_tail(b"" if final is None else final.encode())
        # After a write cut midway (or a vanished peer) this raises
        # PeerGone: no tail. It waits for a write in progress (a flush).
        with contextlib.suppress(PeerGone):
            await exchange.write(tail, last=True)
        nursery.cancel_scope.cancel()
    exchange._stream_scope = None


async def _companion(exchange: Exchange, stream_scope: trio.CancelScope) -> None:
    """Wait for the peer to leave (then cancel the stream); flush; heartbeats."""

    def pending() -> bool:
        return bool(exchange._out)

    async def on_wake() -> None:
        if exchange._out:
            await exchange.stream_write(b"")
        elif exchange.due():
            # If a slow write holds the lock, this waits for it (harmless).
            await exchange.stream_write(exchange.transport.heartbeat)

    await exchange.run(exchange.transport.wait_disconnect, on_wake, pending)
    stream_scope.cancel()
