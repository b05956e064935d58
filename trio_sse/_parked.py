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

Rule 1, one wait: the task waits for the socket to become readable (the peer
leaving, :meth:`Transport.wait_disconnect`) in a cancel scope whose deadline
is the next heartbeat. Meanwhile the subscription is in ``DIRECT`` mode:
publishers write each event straight to the socket from their own task
(:meth:`Exchange.write_nowait`). When they cannot (a write left bytes
behind), the event takes the subscription's channel as usual and the
subscription's *waker* (:meth:`WriteClock.wake_now`) cancels the wait; so
does the end of the subscription (eviction, a closed topic) and a failed
direct write.

Rule 2, the loop: after each wake, in this order: queued events (in batches
of ``max_batch``, in order, through :meth:`Exchange.write`), the end of the
subscription (its final event first), bytes a direct write left behind, a
heartbeat if one is due. Then wait again. Between reading the queue empty
and entering ``DIRECT`` mode there is no checkpoint, so no event can slip
between the two; order and the overflow policies are the subscription's own
(``_delivery.py``), unchanged.

What an idle parked stream holds, besides its socket: the connection and its
exchange, the subscription (its channel, no deques), this coroutine's frames,
and two cancel scopes (the stream's deadline and the wait).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import trio

from ._delivery import ACTIVE, Mode

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._event import Event
    from ._exchange import Exchange
    from ._topic_writer import TopicWriter

__all__ = ["serve_parked"]


async def serve_parked(
    exchange: Exchange, writer: TopicWriter, encode: Callable[[Event], bytes]
) -> bool:
    """Run ``writer``'s subscription in this task until it ends or the peer leaves.

    Returns:
        ``True`` if the peer left or a direct write failed (nothing more may
        be written), ``False`` if the subscription ended (evicted, closed).

    Raises:
        PeerGone: a write failed.
        Exception: the direct sink's error (a bug), raised in this task.

    """
    sub = writer.subscription
    max_batch = writer.max_batch
    write = exchange.write
    async with sub:
        first = writer.first_event()
        if first is not None:
            await write(encode(first))
        write_nowait = exchange.write_nowait
        sub._set_direct_sink(lambda event: write_nowait(encode(event)))
        sub._waker = exchange.wake_now
        try:
            while True:
                batch = sub._batch_nowait(max_batch)
                if batch:
                    # b"".join of one item is that very bytes object: no copy.
                    await write(b"".join([encode(e) for e in batch]))
                    continue
                error = sub._sink_error
                if error is not None:
                    sub._sink_error = None
                    raise error
                if sub._state != ACTIVE:
                    return False
                if exchange._gone:
                    return True
                if exchange._out:
                    await write(b"")
                elif exchange.due():
                    await write(exchange.transport.heartbeat)
                else:
                    # Rule 1 (inline: one coroutine frame less per idle stream).
                    if not sub._backlog:  # always so: an empty channel, an empty backlog
                        sub._set_mode(Mode.DIRECT)
                    interval = exchange.interval
                    deadline = math.inf if interval is None else exchange.last_write + interval
                    try:
                        with trio.CancelScope(deadline=deadline) as wake:
                            exchange._wake = wake
                            await exchange.transport.wait_disconnect()
                            return True
                    finally:
                        exchange._wake = None
                        sub._undirect()
        finally:
            sub._waker = None
            sub._set_direct_sink(None)
