"""A subscription's bounded queue: one consumer, no memory while empty.

Strategy: a subscription used a trio memory channel pair, about 1.6 KB per
subscriber (the shared state, its deque, two ordered dicts of waiting tasks,
two channel objects) even while nothing is queued, which on the raw server is
nearly always: idle streams take events directly (``_delivery.py``). A
subscription has exactly one consumer and its publishers never wait on it
(``send_nowait`` only; the ``block`` policy parks elsewhere), so this queue
keeps what that needs: a deque created on the first queued item and dropped
when the queue empties, the one waiting task, and two flags.

The semantics are those of the memory channel as the subscription used it:
``send_nowait`` raises :class:`trio.WouldBlock` when full; ``receive`` is a
checkpoint either way, and cancelling it loses nothing; after :meth:`close`
the queued items are still received, then :class:`trio.EndOfChannel`; after
:meth:`close_receiver` receiving raises :class:`trio.ClosedResourceError`
and items are dropped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable
from typing import Generic, TypeVar, final

import outcome
import trio

__all__ = ["Queue"]

_T = TypeVar("_T")


@final
class Queue(Generic[_T]):
    """A bounded FIFO with one receiving task.

    Args:
        capacity: the most items queued at once (at least 1).

    """

    __slots__ = ("__weakref__", "_capacity", "_closed", "_items", "_receiver_closed", "_waiter")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: deque[_T] | None = None
        self._waiter: trio.lowlevel.Task | None = None
        self._closed = False
        self._receiver_closed = False

    def __len__(self) -> int:
        items = self._items
        return 0 if items is None else len(items)

    def send_nowait(self, item: _T) -> None:
        """Queue ``item``, or hand it to the waiting receiver.

        Raises:
            trio.WouldBlock: the queue is full.
            trio.ClosedResourceError: :meth:`close` was called.
            trio.BrokenResourceError: the receiver is closed.

        """
        if self._closed:
            raise trio.ClosedResourceError("the queue is closed")
        if self._receiver_closed:
            raise trio.BrokenResourceError("the receiver is closed")
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            trio.lowlevel.reschedule(waiter, outcome.Value(item))
            return
        items = self._items
        if items is None:
            items = self._items = deque()
        elif len(items) >= self._capacity:
            raise trio.WouldBlock
        items.append(item)

    def receive_nowait(self) -> _T:
        """The oldest item.

        Raises:
            trio.WouldBlock: nothing is queued.
            trio.EndOfChannel: nothing is queued and :meth:`close` was called.
            trio.ClosedResourceError: :meth:`close_receiver` was called.

        """
        if self._receiver_closed:
            raise trio.ClosedResourceError("the receiver is closed")
        items = self._items
        if items:
            item = items.popleft()
            if not items:
                self._items = None  # an empty queue holds no deque
            return item
        if self._closed:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    def receive(self) -> Awaitable[_T]:
        """Wait for the oldest item (a checkpoint either way; see :meth:`receive_nowait`).

        A plain function returning the awaitable, so that a receiver waiting
        for its next item holds one coroutine less, and no closure: with many
        waiting receivers, fewer objects per wait for the cyclic collector
        (``docs/deploying.md``, *Many subscriber tasks*). Await it at once.
        """
        if self._items or self._closed or self._receiver_closed:
            return self._receive_ready()
        if self._waiter is not None:
            raise trio.BusyResourceError("another task is already receiving")
        # A cancelled wait ends in self._abort; trio raises Cancelled then.
        self._waiter = trio.lowlevel.current_task()
        return trio.lowlevel.wait_task_rescheduled(self._abort)  # noqa: ASYNC105 (awaited by the caller)

    async def _receive_ready(self) -> _T:
        # Cancelled first, so that a cancelled receive takes nothing.
        await trio.lowlevel.checkpoint_if_cancelled()
        item = self.receive_nowait()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return item

    def _abort(self, _: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED

    def close(self) -> None:
        """No more items: the receiver gets what is queued, then :class:`trio.EndOfChannel`."""
        self._closed = True
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            trio.lowlevel.reschedule(waiter, outcome.Error(trio.EndOfChannel()))

    def close_receiver(self) -> None:
        """The receiver is done: queued items are dropped, receiving raises."""
        self._receiver_closed = True
        self._items = None
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            trio.lowlevel.reschedule(waiter, outcome.Error(trio.ClosedResourceError()))
