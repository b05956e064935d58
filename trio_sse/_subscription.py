"""Subscriptions: one subscriber's bounded channel and its delivery mode.

Theory of operation
===================

A :class:`Subscription` owns one bounded trio memory channel. Every topic it
subscribes to keeps a dict from subscription to the function its fan-out loop
calls for each event (Rule 1 of :mod:`trio_sse._topic`). Which function that
is, is the subscription's delivery *mode*, an explicit state (:class:`Mode`)
changed in one place, :meth:`Subscription._set_mode`, which writes the dict
entry of every topic; the fan-out loop itself never tests a subscriber's state.

- ``QUEUE``: the channel's ``send_nowait``. The normal mode; a full channel
  raises :class:`trio.WouldBlock` and the topic's overflow policy applies.
- ``FULL``: a stub that raises :class:`trio.WouldBlock`. Entered when the
  ``block`` policy puts an entry in the subscriber's *backlog*, so that later
  events queue behind it in order; left when the subscriber, receiving, has
  moved the whole backlog into its channel. The backlog is non-empty exactly
  while the mode is ``FULL``.
- ``DIRECT``: :meth:`Subscription._direct`, which hands the event to the
  writer's sink in the publisher's task (one system call, no task switch).
  Entered when the writer waits in ``receive_batch`` with nothing queued and
  a sink set; left as soon as the writer wakes or the sink refuses an event,
  which then takes the channel, as every later one does. ``DIRECT`` never
  raises :class:`trio.WouldBlock`, so it cannot meet a backlog.
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
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Final, final

import trio

from ._event import Event
from ._history import Entry
from ._resume import Fetched, Merge, Resume

if TYPE_CHECKING:
    from ._options import EndReason
    from ._topic import Topic

__all__ = ["Mode", "Subscription"]

_Send = Callable[[Entry["Topic"]], None]

_NEW: Final = 0
_ACTIVE: Final = 1
_ENDED: Final = 2
_LEFT: Final = 3


class Mode(enum.Enum):
    """How a subscription takes events from its topics' fan-out loops."""

    DETACHED = "detached"
    QUEUE = "queue"
    FULL = "full"
    DIRECT = "direct"


@final
class Subscription:
    """One subscriber's stream: an async context manager and async iterator.

    Created by :meth:`Topic.subscribe`, :meth:`Broker.subscribe` or
    :meth:`Broker.subscribe_many`. Entering the ``async with`` block registers
    it (and snapshots the replay); leaving the block, however it is left,
    unregisters it at once.

    Iterating yields, in order: the reset event(s) if the resume point was
    unknown, the replayed history, then live events. The iteration stops when
    the subscription is evicted (after the topic's optional eviction event) or
    its topic or broker is closed.

    Resource handling:
        The subscription owns a memory channel of the topic's
        ``buffer_size`` (the largest, for several topics). It is closed when
        the ``async with`` block exits; using the subscription afterwards
        raises :class:`trio.ClosedResourceError`.

    Attributes:
        reset: whether a resume point was unknown or expired, so that a reset
            event is (or was) among the first events yielded.
        replayed: how many history events this subscription replays.
        dropped: events discarded from this subscriber's queue under
            ``drop_oldest``.
    """

    def __init__(self, topics: tuple[Topic, ...], cursor: str | None, *, merged: bool) -> None:
        self._topics = topics
        self._cursor_in = cursor
        self._merge: Merge | None = None
        self._merged = merged
        self._resume: Resume
        self._state = _NEW
        self._mode = Mode.DETACHED
        self._end_reason: EndReason | None = None
        self._pending: deque[Event] = deque()
        self._final: Event | None = None
        self._backlog: deque[Entry[Topic]] = deque()
        self._lot: trio.lowlevel.ParkingLot | None = None
        self._sink: Callable[[Event], bool] | None = None
        self._sink_error: Exception | None = None
        self._position: str | None = None
        self._send: trio.MemorySendChannel[Entry[Topic]]
        self._receive: trio.MemoryReceiveChannel[Entry[Topic]]
        self._send_nowait: _Send
        self.reset = False
        self.replayed = 0
        self.dropped = 0

    def __repr__(self) -> str:
        names = ",".join(t.name for t in self._topics)
        state = ("new", "active", "ended", "left")[self._state]
        return f"<Subscription {names} {state}>"

    # -- public state ------------------------------------------------------

    @property
    def topics(self) -> tuple[str, ...]:
        """The names of the subscribed topics."""
        return tuple(t.name for t in self._topics)

    @property
    def end_reason(self) -> EndReason | None:
        """Why the stream ended: ``"evicted"``, ``"closed"`` or ``"left"``.

        ``None`` while active. ``"closed"`` means the topic or broker was
        closed; ``"left"`` that the ``async with`` block exited.
        """
        return self._end_reason

    @property
    def evicted(self) -> bool:
        """Whether a topic evicted this subscriber for falling behind."""
        return self._end_reason == "evicted"

    @property
    def queued(self) -> int:
        """Events waiting for this subscriber (its lag), including backlog."""
        if self._state != _ACTIVE:
            return 0
        return self._receive.statistics().current_buffer_used + len(self._backlog)

    @property
    def cursor(self) -> str | None:
        """The resume point after the events yielded so far.

        The id of the last event yielded; before any, where the subscription
        started: the resume point, or the topic's newest id (for several
        topics, the composite cursor of those positions). An application can
        send it as an id-only event right after subscribing, so that a client
        that disconnects before any event arrives still resumes exactly.
        ``None`` for a single topic that never had an event.
        """
        return self._position

    # -- context management --------------------------------------------------

    async def __aenter__(self) -> Subscription:
        await trio.lowlevel.checkpoint_if_cancelled()
        history = self._topics[0].broker.backplane.remote_history
        if history is None:
            self._open()
            self._finish_open(())
            return self
        # Rule 4 of the backplane: wait until every topic knows its newest
        # id, register (fixing the history/live boundary), then fetch what
        # lies between the client's ids and those boundaries.
        for topic in self._topics:
            await history.wait_ready(topic)
        remote = self._open()
        try:
            fetched = [
                (topic, after, until, await history.replay(topic, after, until))
                for topic, after, until in remote
            ]
        except BaseException:
            self._close()
            raise
        self._finish_open(fetched)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Synchronous on purpose: must complete even when cancelled.
        self._close()

    def _open(self) -> list[tuple[Topic, str, str]]:
        # Rule 2 of the topic: from here to registration there is no checkpoint.
        if self._state != _NEW:
            raise RuntimeError("a Subscription can only be entered once")
        topics = self._topics
        for topic in topics:
            topic._check_open()
        resume = self._resume = Resume(topics, self._cursor_in, merged=self._merged)
        self._pending = resume.pending
        self._merge = resume.merge
        size = max(t.options.buffer_size for t in topics)
        self._send, self._receive = trio.open_memory_channel[Entry["Topic"]](size)
        self._send_nowait = self._send.send_nowait
        self._state = _ACTIVE
        self._set_mode(Mode.QUEUE)
        return resume.remote

    def _finish_open(self, fetched: Iterable[Fetched]) -> None:
        """Add the remotely fetched replays (Rule 4 of the backplane)."""
        resume = self._resume
        del self._resume
        resume.finish(fetched, active=self._state == _ACTIVE)
        self._position = resume.position
        self.reset = resume.reset
        self.replayed = resume.replayed

    def _close(self) -> None:
        if self._state == _NEW:
            return
        self._end("left", None)
        self._state = _LEFT
        self._final = None
        self._receive.close()

    def _end(self, reason: EndReason, by: Topic | None) -> None:
        # Rule 1: detach first, close second.
        if self._state != _ACTIVE:
            return
        self._state = _ENDED
        self._end_reason = reason
        self._set_mode(Mode.DETACHED)
        self._pending.clear()
        self._backlog.clear()
        if by is not None:
            by._evicted += 1
            self._final = by.options.eviction_event
        self._send.close()
        if self._lot is not None:
            self._lot.unpark_all()

    # -- delivery modes ------------------------------------------------------

    def _set_mode(self, mode: Mode) -> None:
        """Enter *mode*: the one place that writes the topics' dict entries."""
        self._mode = mode
        if mode is Mode.DETACHED:
            for topic in self._topics:
                topic._subscribers.pop(self, None)
            return
        assert self._state == _ACTIVE
        if mode is Mode.QUEUE:
            send = self._send_nowait
        elif mode is Mode.FULL:
            send = self._full
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
            self._set_mode(Mode.QUEUE)
        self._parking_lot().unpark_all()

    def _drop_oldest_and_send(self, entry: Entry[Topic]) -> bool:
        if self._backlog:
            # A block-policy publisher is waiting on us: dropping would
            # reorder, so the caller evicts instead.
            return False
        try:
            dropped = self._receive.receive_nowait()
        except trio.WouldBlock:  # pragma: no cover - send_nowait failed, so it is full
            return False
        dropped.topic._dropped += 1
        self.dropped += 1
        self._send_nowait(entry)  # cannot fail: we just made room, no backlog
        return True

    # -- receiving -----------------------------------------------------------

    def _convert_one(self, entry: Entry[Topic]) -> Event:
        merge = self._merge
        event = entry.event if merge is None else merge.convert(entry)
        self._position = event.id
        return event

    def _take_special(self) -> Event:
        """Next event when the fast path does not apply (pending, ended, …)."""
        if self._pending:
            event = self._pending.popleft()
            if event.id is not None:
                self._position = event.id
            return event
        state = self._state
        if state == _ENDED:
            final = self._final
            if final is not None:
                self._final = None
                return final
            raise trio.EndOfChannel
        if state == _LEFT:
            raise trio.ClosedResourceError("the subscription's async with block has exited")
        raise RuntimeError("enter the subscription with `async with` before receiving")

    def receive_nowait(self) -> Event:
        """Return the next event if one is ready.

        Returns:
            The next event.

        Raises:
            trio.WouldBlock: nothing is queued yet.
            trio.EndOfChannel: the stream has ended (evicted or closed) and
                its final event, if any, was already returned.
            trio.ClosedResourceError: the ``async with`` block has exited.
        """
        if self._pending or self._state != _ACTIVE:
            return self._take_special()
        entry = self._receive.receive_nowait()
        if self._backlog:
            self._refill()
        return self._convert_one(entry)

    async def receive(self) -> Event:
        """Wait for the next event.

        Returns:
            The next event.

        Raises:
            trio.EndOfChannel: the stream has ended (evicted or closed) and
                its final event, if any, was already returned.
            trio.ClosedResourceError: the ``async with`` block has exited.
        """
        if self._pending or self._state != _ACTIVE:
            await trio.lowlevel.checkpoint()
            return self._take_special()
        try:
            entry = await self._receive.receive()
        except trio.EndOfChannel:  # ended while we waited
            return self._take_special()
        if self._backlog:
            self._refill()
        return self._convert_one(entry)

    def set_direct_sink(self, sink: Callable[[Event], bool] | None) -> None:
        """Let publishers hand events straight to an idle writer.

        While :meth:`receive_batch` waits with nothing queued, each event
        published to this subscriber is passed to ``sink(event)`` in the
        publisher's task instead of being queued and waking this task. The
        sink returns ``True`` when it took the event (for the raw server: the
        bytes went to the socket) and ``False`` when it cannot take it now;
        the event, and every later one, is then queued as usual, so order and
        the bounded-buffer overflow policy are unchanged. The sink must not
        block or checkpoint. ``None`` turns it off.

        Error handling:
            If the sink raises an :class:`Exception`, the error belongs to this
            subscriber, not to the publisher whose task called it: the sink is
            turned off, and the pending :meth:`receive_batch` raises the error
            in the writer's task; the event is kept for the next receive.

        Topic streams (:func:`~trio_sse.topic_stream`) set this from
        :meth:`EventStream.direct_sink`: one system call per delivery and no
        task switch while a connection keeps up.
        """
        self._sink = sink

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
                # Not the publisher's problem: re-raised in receive_batch().
                self._sink = None
                self._sink_error = exc
                taken = False
            if taken:
                self._position = event.id
                return
        self._undirect()
        self._send_nowait(entry)  # the channel is empty: cannot block

    def _undirect(self) -> None:
        # DIRECT never raises WouldBlock, so no backlog (FULL) can have begun
        # meanwhile; an ended subscription is DETACHED and stays so.
        if self._mode is Mode.DIRECT:
            self._set_mode(Mode.QUEUE)

    async def _receive_direct(self) -> Entry[Topic]:
        """Wait for an entry, letting the sink take events meanwhile."""
        receive = self._receive
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
            self._pending.appendleft(self._convert_one(entry))
            raise error
        return entry

    async def receive_batch(self, max_events: int = 64) -> list[Event]:
        """Wait for at least one event, then take every queued one.

        Meant for writers that coalesce several events into one socket
        write: ``while batch := await sub.receive_batch(): ...``.

        Args:
            max_events: the most events to return (at least 1).

        Returns:
            Between 1 and *max_events* events, in order; an empty list once
            the stream has ended (after its final event, if any).

        Raises:
            ValueError: *max_events* is below 1.
            trio.ClosedResourceError: the ``async with`` block has exited.
            Exception: whatever the direct sink raised (see
                :meth:`set_direct_sink`).
        """
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, got {max_events}")
        if self._pending or self._state != _ACTIVE:
            await trio.lowlevel.checkpoint()
            return self._take_batch_special(max_events)
        receive = self._receive
        try:
            if self._sink is not None and not self._backlog:
                first = await self._receive_direct()
            else:
                first = await receive.receive()
        except trio.EndOfChannel:  # ended while we waited
            return self._take_batch_special(max_events)
        entries = [first]
        # Evicted after `first` was handed over: stop at it (Rule 1).
        if self._state == _ACTIVE:
            receive_nowait = receive.receive_nowait
            for _ in range(max_events - 1):
                try:
                    entries.append(receive_nowait())
                except trio.WouldBlock:
                    break
            if self._backlog:
                self._refill()
        merge = self._merge
        if merge is None:
            batch = [e.event for e in entries]
        else:
            convert = merge.convert
            batch = [convert(e) for e in entries]
        self._position = batch[-1].id
        return batch

    def _take_batch_special(self, max_events: int) -> list[Event]:
        pending = self._pending
        if pending:
            batch = [pending.popleft() for _ in range(min(max_events, len(pending)))]
            # Pending events exist only while active (ending clears them):
            # top up with live events already queued, without waiting.
            receive_nowait = self._receive.receive_nowait
            convert = self._convert_one
            while len(batch) < max_events:
                try:
                    batch.append(convert(receive_nowait()))
                except trio.WouldBlock:
                    break
            if self._backlog:
                self._refill()
            ids = [e.id for e in batch if e.id is not None]
            if ids:
                self._position = ids[-1]
            return batch
        try:
            return [self._take_special()]
        except trio.EndOfChannel:
            return []

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
