"""Delivery modes: how a subscriber takes events from its topics' fan-out.

Theory of operation
===================

Every topic keeps a dict from subscription to the function its fan-out loop
calls for each event (Rule 1 of :mod:`trio_sse._topic`). Which function that
is, is the subscription's delivery *mode*, an explicit state (:class:`Mode`)
changed in one place, :meth:`Delivery._set_mode`, which writes the dict entry
of every subscribed topic; the fan-out loop itself never tests a subscriber's
state.

- ``QUEUE``: the channel's ``send_nowait``. The normal mode; a full channel
  raises :class:`trio.WouldBlock` and the topic's overflow policy applies.
- ``FULL``: a stub that raises :class:`trio.WouldBlock`. Entered when the
  ``block`` policy puts an entry in the subscriber's *backlog*, so that later
  events queue behind it in order; left when the subscriber, receiving, has
  moved the whole backlog into its channel. While active, the backlog is
  non-empty exactly when the mode is ``FULL``.
- ``DIRECT``: :meth:`Delivery._direct`, which hands the event to the writer's
  sink in the publisher's task (one system call, no task switch). Entered when
  the writer waits in ``receive_batch`` with nothing queued and a sink set;
  left as soon as the writer wakes or the sink refuses an event, which then
  takes the channel, as every later one does, so order and the overflow policy
  are unchanged. ``DIRECT`` never raises :class:`trio.WouldBlock`, so it never
  meets a backlog. A writer may also give an *entry sink*, which does
  ``_direct``'s work itself in one call (the raw server's parked stream:
  ``Exchange.write_entry_nowait``); it is the ``DIRECT`` function of an
  unmerged subscription, whose events are the entries' own, and it reports
  back through :meth:`Delivery._direct_refused` and
  :meth:`Delivery._direct_failed`.
- ``DETACHED``: in no topic's dict: not entered yet, or ended.

Rule 1: a subscription ends exactly once. Eviction, closing the topic and
leaving the ``async with`` block all detach it from every topic first and
close its send side second, so the publisher's loop never sees a closed
channel. An ended subscription discards its queue and yields only its final
event: the browser resumes through ``Last-Event-ID`` from the last event it
actually received.

Rule 2: the ``block`` policy never uses trio's blocking ``send``: when a
deadline cancels a queued send, a later ``send_nowait`` could take the freed
slot and overtake it. The publisher parks on the subscription's parking lot
instead, until the backlog no longer holds its entry.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import trio

from ._event import Event
from ._history import Entry
from ._queue import Queue

if TYPE_CHECKING:
    from ._options import EndReason
    from ._resume import Merge
    from ._topic import Topic

__all__ = ["ACTIVE", "ENDED", "LEFT", "NEW", "NO_EVENTS", "Delivery", "Mode"]

_Send = Callable[[Entry["Topic"]], None]

#: The shared, always-empty queue of a subscription with nothing pending or
#: backlogged. Allocated once: 10,000 idle subscriptions would otherwise hold
#: 20,000 empty deques (over 600 bytes each). Never appended to: code that
#: adds to ``_pending`` or ``_backlog`` first gives the subscription its own.
NO_EVENTS: Final[deque[Event]] = deque(maxlen=0)
_NO_ENTRIES: Final[deque[Entry[Topic]]] = deque(maxlen=0)

#: Lifecycle states of a subscription (``Delivery._state``).
NEW: Final = 0
ACTIVE: Final = 1
ENDED: Final = 2
LEFT: Final = 3


class Mode(enum.Enum):
    """How a subscription takes events from its topics' fan-out loops."""

    DETACHED = "detached"
    QUEUE = "queue"
    FULL = "full"
    DIRECT = "direct"


class Delivery:
    """The delivery side of :class:`~trio_sse.Subscription`: channel, mode, backlog, sink.

    :class:`~trio_sse.Subscription` adds the public stream API on top.
    """

    # Slots: an idle stream holds one of these; a __dict__ for its 17
    # attributes would cost about 600 bytes more.
    __slots__ = (
        "_backlog",
        "_end_reason",
        "_entry_sink",
        "_final",
        "_lot",
        "_merge",
        "_mode",
        "_pending",
        "_position",
        "_queue",
        "_send_nowait",
        "_sink",
        "_sink_error",
        "_state",
        "_topics",
        "_waker",
        "dropped",
    )

    def __init__(self, topics: tuple[Topic, ...]) -> None:
        self._topics = topics
        self._state = NEW
        self._mode = Mode.DETACHED
        self._merge: Merge | None = None
        self._end_reason: EndReason | None = None
        self._pending: deque[Event] = NO_EVENTS
        self._final: Event | None = None
        self._backlog: deque[Entry[Topic]] = _NO_ENTRIES
        self._lot: trio.lowlevel.ParkingLot | None = None
        self._sink: Callable[[Event], bool] | None = None
        self._entry_sink: _Send | None = None
        # Called when an event queues (or the subscription ends) while the
        # writer waits for something else than the channel: the raw server's
        # one-task topic stream (``_parked.py``) waits for its socket.
        self._waker: Callable[[], None] | None = None
        self._sink_error: Exception | None = None
        self._position: str | None = None
        self._queue: Queue[Entry[Topic]]
        self._send_nowait: _Send
        self.dropped = 0

    @property
    def queued(self) -> int:
        """Events waiting for this subscriber (its lag), including backlog."""
        if self._state != ACTIVE:
            return 0
        return len(self._queue) + len(self._backlog)

    def _end(self, reason: EndReason, by: Topic | None) -> None:
        # Rule 1: detach first, close second.
        if self._state != ACTIVE:
            return
        self._state = ENDED
        self._end_reason = reason
        self._set_mode(Mode.DETACHED)
        self._pending.clear()
        self._backlog.clear()
        if by is not None:
            by._evicted += 1
            self._final = by.options.eviction_event
        self._queue.close()
        if self._lot is not None:
            self._lot.unpark_all()
        if self._waker is not None:
            self._waker()

    # -- delivery modes ------------------------------------------------------

    def _set_mode(self, mode: Mode) -> None:
        """Enter *mode*: the one place that writes the topics' dict entries."""
        self._mode = mode
        for topic in self._topics:
            # A sliced pass looks members up again; the next one takes a new snapshot.
            topic._changes += 1
            topic._members = None
        if mode is Mode.DETACHED:
            for topic in self._topics:
                topic._subscribers.pop(self, None)
            return
        assert self._state == ACTIVE
        if mode is Mode.QUEUE:
            send = self._send_nowait
        elif mode is Mode.FULL:
            send = self._full
        elif self._entry_sink is not None and self._merge is None:
            send = self._entry_sink
        else:
            send = self._direct
        for topic in self._topics:
            topic._subscribers[self] = send

    def _full(self, entry: Entry[Topic]) -> None:
        # The FULL mode's function: later events queue behind the backlog.
        raise trio.WouldBlock

    # -- the block policy's backlog ------------------------------------------

    def _backlog_append(self, entry: Entry[Topic]) -> None:
        backlog = self._backlog
        if not backlog:
            backlog = self._backlog = deque()
            self._set_mode(Mode.FULL)
            self._parking_lot()  # the publisher parks there next
        backlog.append(entry)

    def _parking_lot(self) -> trio.lowlevel.ParkingLot:
        lot = self._lot
        if lot is None:
            lot = self._lot = trio.lowlevel.ParkingLot()
        return lot

    def _holds(self, entry: Entry[Topic]) -> bool:
        backlog = self._backlog
        return bool(backlog) and backlog[0].gseq <= entry.gseq

    def _refill(self) -> None:
        backlog = self._backlog
        send = self._send_nowait
        while backlog:
            try:
                send(backlog[0])
            except trio.WouldBlock:
                break
            backlog.popleft().topic._delivered += 1
        if not backlog:
            self._backlog = _NO_ENTRIES
            self._set_mode(Mode.QUEUE)
        self._parking_lot().unpark_all()

    def _drop_oldest_and_send(self, entry: Entry[Topic]) -> bool:
        if self._backlog:
            # A block-policy publisher is waiting on us: dropping would
            # reorder, so the caller evicts instead.
            return False
        try:
            dropped = self._queue.receive_nowait()
        except trio.WouldBlock:  # pragma: no cover - send_nowait failed, so it is full
            return False
        dropped.topic._dropped += 1
        self.dropped += 1
        self._send_nowait(entry)  # cannot fail: we just made room, no backlog
        return True

    def _convert_one(self, entry: Entry[Topic]) -> Event:
        merge = self._merge
        event = entry.event if merge is None else merge.convert(entry)
        self._position = event.id
        return event

    # -- the direct sink -------------------------------------------------------

    def _direct(self, entry: Entry[Topic]) -> None:
        # This subscriber's send function while its writer is parked in
        # receive_batch() with nothing queued (the DIRECT mode's function).
        # Never checkpoints: it runs inside the topic's fan-out pass.
        merge = self._merge
        event = entry.event if merge is None else merge.convert(entry)
        sink = self._sink
        if sink is not None:
            try:
                taken = sink(event)
            except Exception as exc:
                self._direct_failed(entry, exc)
                return
            if taken:
                self._position = event.id
                return
        self._direct_refused(entry)

    def _direct_refused(self, entry: Entry[Topic]) -> None:
        """The sink could not take ``entry`` now: it, and every later one, queues."""
        self._undirect()
        self._send_nowait(entry)  # the channel is empty: cannot block
        if self._waker is not None:
            self._waker()

    def _direct_failed(self, entry: Entry[Topic], exc: Exception) -> None:
        """The sink raised: not the publisher's problem, re-raised in receive_batch()."""
        self._sink = self._entry_sink = None
        self._sink_error = exc
        self._direct_refused(entry)

    def _keep_first(self, event: Event) -> None:
        """Put ``event`` back in front of the pending events (never in ``NO_EVENTS``)."""
        pending = self._pending
        if pending is NO_EVENTS:
            pending = self._pending = deque()
        pending.appendleft(event)

    def _undirect(self) -> None:
        # DIRECT never raises WouldBlock, so no backlog (FULL) can have begun
        # meanwhile; an ended subscription is DETACHED and stays so.
        if self._mode is Mode.DIRECT:
            self._set_mode(Mode.QUEUE)

    async def _receive_direct(self) -> Entry[Topic]:
        """Wait for an entry, letting the sink take events meanwhile."""
        receive = self._queue
        # A checkpoint either way, as trio's own receive() is.
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            entry = receive.receive_nowait()
        except trio.WouldBlock:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return entry
        self._set_mode(Mode.DIRECT)
        try:
            entry = await receive.receive()
        finally:
            self._undirect()
        error = self._sink_error
        if error is not None:
            # Keep the event for the next receive: raising loses nothing.
            self._sink_error = None
            self._keep_first(self._convert_one(entry))
            raise error
        return entry
