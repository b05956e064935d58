"""The writer of a topic stream: what :func:`~trio_sse.topic_stream` returns to stream.

Strategy: a :class:`TopicWriter` is an ordinary stream handler
(``async def (stream)``) that drains one subscription in batches; every
server can run it that way. Because it is a known type, the raw server may
instead run it *parked* (``_parked.py``): in the connection's own task, with
no companion task, waiting on the socket while the topic's publishers write
into it directly. The handler object carries what both ways need and
nothing else: an idle topic stream on the raw server holds one of these.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

from ._event import Event

if TYPE_CHECKING:
    from ._http import EventStream
    from ._subscription import Subscription

__all__ = ["TopicWriter"]


@final
class TopicWriter:
    """Stream one subscription: an announcement of its position, then its events.

    Args:
        subscription: the subscription, not entered yet.
        max_batch: the most queued events sent in one write.
        announce: send the subscription's starting position as an id-only
            event first (a fresh subscriber, so that a client disconnecting
            before any event still resumes exactly).
    """

    __slots__ = ("announce", "max_batch", "subscription")

    def __init__(self, subscription: Subscription, max_batch: int, announce: bool) -> None:
        self.subscription = subscription
        self.max_batch = max_batch
        self.announce = announce

    def first_event(self) -> Event | None:
        """The id-only announcement, once the subscription is entered (``None``: none)."""
        cursor = self.subscription.cursor
        if self.announce and cursor is not None:
            return Event(id=cursor)
        return None

    async def __call__(self, stream: EventStream) -> None:
        """Run on any server: wait in :meth:`Subscription.receive_batch`, send each batch."""
        subscription = self.subscription
        max_batch = self.max_batch
        async with subscription:
            first = self.first_event()
            if first is not None:
                await stream.send(first)
            while batch := await subscription.receive_batch(max_batch):
                await stream.send_many(batch)
