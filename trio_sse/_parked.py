"""A parked topic stream: one task per idle stream on the raw server.

Theory of operation
-------------------

A topic stream (:class:`~trio_sse._topic_writer.TopicWriter`) run the general
way costs two tasks: the handler waiting in ``receive_batch`` and the
exchange's companion waiting for the peer to leave. On the raw server, where
a write can be tried without waiting (``Transport.direct``), the exchange
runs it *parked* instead, in the connection's own task, which is owned by the
server's connection nursery like any other (structured concurrency holds:
the stream ends with its task).

Rule 1, one wait: the task sleeps in the server's idle watch
(:meth:`~trio_sse._idle.IdleStreams.park`): no cancel scope, no trio socket
wait of its own; the watch wakes it when the peer sends bytes or leaves, or
the stream's end comes, and writes its heartbeats itself without waking it.
Meanwhile the subscription is in ``DIRECT`` mode: publishers write each event
straight to the socket from their own task
(:meth:`Exchange.write_entry_nowait`; ``write_event_nowait`` when the stream
has several topics). When they cannot (a write left bytes
behind), the event takes the subscription's queue as usual and the
subscription's *waker* (:meth:`Exchange.wake_now`) ends the park; so does
the end of the subscription (eviction, a closed topic), a failed direct
write and a shutdown (:meth:`Exchange.stop`).

Rule 2, the loop: after each wake, in this order: queued events (in batches
of ``max_batch``, in order, through :meth:`Exchange.write`), the end of the
subscription (its final event first), bytes a direct write left behind, a
heartbeat if one is due. Then wait again. Between reading the queue empty
and entering ``DIRECT`` mode there is no checkpoint, so no event can slip
between the two; order and the overflow policies are the subscription's own
(``_delivery.py``), unchanged.

Rule 3, a cancel scope only while writing: a write waits under the
stream's end (``max_stream_lifetime`` or the response's ``expires_at``),
which a shutdown cancels too (:meth:`Exchange.stop`). After each wake or
write the loop tells a stop from a wake by the flag and the clock.

What an idle parked stream holds, besides its socket: the connection and its
exchange, the subscription (an empty queue holds no deque), the frames of
``_Connection.run`` and :func:`serve_parked`, and its
:class:`~trio_sse._idle.Park`: about 5 KB of RSS (``docs/benchmarks.md``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING, Final

import trio

from ._delivery import ACTIVE, Mode
from ._transport import PeerGone

if TYPE_CHECKING:
    from ._exchange import Exchange
    from ._topic_writer import TopicWriter

__all__ = [
    "ENDED",
    "GONE",
    "STOPPED",
    "abandon_parked",
    "end_parked",
    "run_parked",
    "serve_parked",
    "stream_parked",
]

logger = logging.getLogger("trio_sse.exchange")

#: How a parked stream ended: the peer left (or a write failed: nothing more
#: may be written), the subscription ended (evicted, closed), or the stream's
#: end or a shutdown stopped it (the final ``retry:`` is then owed).
GONE: Final = "gone"
ENDED: Final = "ended"
STOPPED: Final = "stopped"


async def run_parked(exchange: Exchange) -> None:
    """Run the stream ``dispatch(park_later=True)`` left, end it, release its limit.

    The connection's task calls :func:`serve_parked` and :func:`end_parked`
    itself instead, so that an idle stream holds one coroutine frame less.
    """
    try:
        await end_parked(exchange, await serve_parked(exchange))
    finally:
        abandon_parked(exchange)  # cancelled meanwhile: the limit all the same


async def end_parked(exchange: Exchange, how: str | None) -> None:
    """End a parked stream as :func:`serve_parked` said, and release its limit.

    The end is ``_streamed.stream_in_nursery``'s: the final ``retry:`` after
    a stop, the end of the body, nothing after the peer left. ``None``: no
    stream was parked.
    """
    parked = exchange._parked
    if how is None or parked is None:
        return
    transport = exchange.transport
    try:
        exchange.stop_scope = None
        if how == GONE:
            transport.close_after()
            return
        final = exchange.config.stream_end_event() if how == STOPPED else None
        tail = transport.stream_tail(b"" if final is None else final.encode())
        with contextlib.suppress(PeerGone):
            await exchange.write(tail, last=True)
    finally:
        exchange._parked = None
        exchange.limits.release_stream(parked[3])


def abandon_parked(exchange: Exchange) -> None:
    """Release the limit of a parked stream that will not run (its connection ended)."""
    parked = exchange._parked
    if parked is not None:
        exchange._parked = None
        exchange.limits.release_stream(parked[3])


async def stream_parked(
    exchange: Exchange, writer: TopicWriter, deadline: float, path: str
) -> None:
    """Run a parked stream at once (a caller of ``dispatch`` without ``park_later``)."""
    exchange._parked = (writer, deadline, path, None)  # dispatch releases the limit
    await run_parked(exchange)


async def serve_parked(exchange: Exchange) -> str | None:
    """Run the stream ``dispatch(park_later=True)`` left until it ends, stops or the peer leaves.

    Called by the connection's task itself, its frame the only one between
    the task and its sleep while the stream is idle (then :func:`end_parked`).

    Args:
        exchange: the stream's exchange (given an idle watch, ``_idle.py``).

    Returns:
        :data:`GONE`, :data:`ENDED` or :data:`STOPPED`; ``None`` if no
        stream was parked. A failed write is :data:`GONE`; any other error
        (a bug: a handler's or the direct sink's) is logged and :data:`ENDED`.

    """
    parked = exchange._parked
    if parked is None:
        return None
    writer, end, path, _ = parked
    transport = exchange.transport
    if transport.stopping:
        exchange.stop_requested = True
    encode = transport.encoder()
    try:
        sub = writer.subscription
        idle = exchange.idle
        assert idle is not None  # _exchange.py parks a stream only then
        # Entering may wait (a remote history): under the stream's end too.
        with _stop_scope(exchange, end) as scope:
            await sub.__aenter__()
        exchange.stop_scope = None
        if scope.cancelled_caught:
            return STOPPED
        del scope  # not kept by this frame while idle
        try:
            first = writer.first_event()
            if first is not None and await _write(exchange, encode(first), end):
                return STOPPED
            del first  # not kept by this frame while idle
            exchange.encode = encode
            exchange._sub = sub
            sub._set_direct_sink(exchange.write_event_nowait, exchange.write_entry_nowait)
            sub._waker = exchange.wake_now
            while True:
                batch = sub._batch_nowait(writer.max_batch)
                if batch:
                    # b"".join of one item is that very bytes object: no copy.
                    if await _write(exchange, b"".join([encode(e) for e in batch]), end):
                        return STOPPED
                    continue
                error = sub._sink_error
                if error is not None:
                    sub._sink_error = None
                    raise error
                if sub._state != ACTIVE:
                    return ENDED
                if exchange._gone:
                    return GONE
                if exchange._out:
                    if await _write(exchange, b"", end):
                        return STOPPED
                elif exchange.due():
                    if await _write(exchange, exchange.transport.heartbeat, end):
                        return STOPPED
                else:
                    # Rule 1: sleep in the idle watch, in DIRECT mode.
                    if not sub._backlog:  # always so: an empty channel, an empty backlog
                        sub._set_mode(Mode.DIRECT)
                    try:
                        park = idle.park(exchange, exchange.fd, end)
                        await trio.lowlevel.wait_task_rescheduled(park.abort)
                    finally:
                        sub._undirect()
                    if park.readable and _peer_left(exchange.fd):
                        return GONE
                    if exchange.stop_requested or trio.current_time() >= end:
                        return STOPPED
        finally:
            sub._waker = None
            sub._set_direct_sink(None)
            exchange._sub = None
            sub._close()  # what __aexit__ does, synchronously
    except PeerGone:
        return GONE
    except Exception:
        logger.exception("stream handler for %s raised", path)
        return ENDED


def _peer_left(fd: int) -> bool:
    """Read (and drop) what the peer sent; ``True``: it closed or reset the connection."""
    try:
        return not os.read(fd, 65536)
    except BlockingIOError:
        return False
    except OSError:
        return True


def _stop_scope(exchange: Exchange, deadline: float) -> trio.CancelScope:
    """A scope that the stream's end and a shutdown cancel (Rule 3)."""
    scope = trio.CancelScope(deadline=deadline)
    exchange.stop_scope = scope
    if exchange.stop_requested:
        scope.cancel()
    return scope


async def _write(exchange: Exchange, data: bytes, end: float) -> bool:
    """Write ``data`` before the stream's end; ``True``: stopped (Rule 3)."""
    with _stop_scope(exchange, end) as scope:
        await exchange.write(data)
    exchange.stop_scope = None
    return scope.cancelled_caught
