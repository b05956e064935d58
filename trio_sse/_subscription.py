"""Subscriptions: one subscriber's stream, as the application sees it.

Strategy: a :class:`Subscription` is an async context manager and async
iterator over one bounded memory channel. Entering it computes where it
resumes (:mod:`trio_sse._resume`) and registers it in its topics in one
synchronous step (Rule 2 of :mod:`trio_sse._topic`); how its topics hand it
events (queue, block backlog, direct sink) is its delivery mode, in
:mod:`trio_sse._delivery`. Receiving takes, in order: the pending events (the
resets and the replay), the channel, and after the end the final event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, final

import trio

from ._cursor import parse_cursor
from ._delivery import ACTIVE, ENDED, LEFT, NEW, NO_EVENTS, Delivery, Mode
from ._event import Event
from ._history import Entry
from ._queue import Queue
from ._resume import Fetched, Resume, Since

if TYPE_CHECKING:
    from ._options import EndReason
    from ._topic import Topic

__all__ = ["Subscription"]


@final
class Subscription(Delivery):
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

    __slots__ = ("__weakref__", "_cursor_in", "_merged", "_resume", "_since", "replayed", "reset")

    def __init__(self, topics: tuple[Topic, ...], cursor: str | None, *, merged: bool) -> None:
        super().__init__(topics)
        self._cursor_in = cursor
        self._merged = merged
        # Where a topic without a resume point starts (_resume.py, Rule 1b).
        self._since: Since | None = tuple((t._seq, t._last_id) for t in topics)
        self._resume: Resume
        self.reset = False
        self.replayed = 0

    def __repr__(self) -> str:
        names = ",".join(t.name for t in self._topics)
        state = ("new", "active", "ended", "left")[self._state]
        return f"<Subscription {names} {state} {self._mode.value}>"

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
        positions = self._client_positions()
        for topic in self._topics:
            await history.wait_ready(topic, positions.get(topic.name))
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

    def _client_positions(self) -> dict[str, str]:
        """The client's resume position in each topic (empty when fresh or malformed)."""
        cursor = self._cursor_in
        if cursor is None:
            return {}
        if not self._merged:
            return {self._topics[0].name: cursor}
        return parse_cursor(cursor) or {}

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
        if self._state != NEW:
            raise RuntimeError("a Subscription can only be entered once")
        topics = self._topics
        for topic in topics:
            topic._check_open()
        since, self._since = self._since, None
        assert since is not None  # set until the one entry, above
        resume = self._resume = Resume(topics, self._cursor_in, merged=self._merged, since=since)
        self._pending = resume.pending
        self._merge = resume.merge
        size = max(t.options.buffer_size for t in topics)
        self._queue = Queue(size)
        self._send_nowait = self._queue.send_nowait
        self._state = ACTIVE
        self._set_mode(Mode.QUEUE)
        return resume.remote

    def _finish_open(self, fetched: Iterable[Fetched]) -> None:
        """Add the remotely fetched replays (Rule 4 of the backplane)."""
        resume = self._resume
        del self._resume
        resume.finish(fetched, active=self._state == ACTIVE)
        if not self._pending:
            self._pending = NO_EVENTS  # the Resume's deque goes with it
        self._position = resume.position
        self.reset = resume.reset
        self.replayed = resume.replayed

    def _close(self) -> None:
        if self._state == NEW:
            return
        self._end("left", None)
        self._state = LEFT
        self._final = None
        self._queue.close_receiver()

    # -- receiving -----------------------------------------------------------

    def _take_special(self) -> Event:
        """Next event when the fast path does not apply (pending, ended, …)."""
        pending = self._pending
        if pending:
            event = pending.popleft()
            if not pending:
                self._pending = NO_EVENTS
            if event.id is not None:
                self._position = event.id
            return event
        state = self._state
        if state == ENDED:
            final = self._final
            if final is not None:
                self._final = None
                return final
            raise trio.EndOfChannel
        if state == LEFT:
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
        if self._pending or self._state != ACTIVE:
            return self._take_special()
        entry = self._queue.receive_nowait()
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
        if self._pending or self._state != ACTIVE:
            await trio.lowlevel.checkpoint()
            return self._take_special()
        try:
            entry = await self._queue.receive()
        except trio.EndOfChannel:  # ended while we waited
            return self._take_special()
        if self._backlog:
            self._refill()
        return self._convert_one(entry)

    def _set_direct_sink(
        self,
        sink: Callable[[Event], bool] | None,
        entry_sink: Callable[[Entry[Topic]], None] | None = None,
    ) -> None:
        """Let publishers hand events straight to an idle writer (the raw server's).

        Private to the server (issue 10): while :meth:`receive_batch` waits
        with nothing queued, each event published to this subscriber is
        passed to ``sink(event)`` in the publisher's task instead of being
        queued and waking this task. The sink returns ``True`` when it took
        the event and ``False`` when it cannot take it now; the event, and
        every later one, is then queued as usual, so order and the
        bounded-buffer overflow policy are unchanged. The sink must not block
        or checkpoint. ``None`` turns it off.

        ``entry_sink``, optional, is the same sink for an unmerged
        subscription, taking the topic's entry and doing the bookkeeping of
        ``Delivery._direct`` itself (the position; ``_direct_refused`` when
        it cannot take the entry, ``_direct_failed`` when it fails), so that
        a delivery is one call (``_delivery.py``).

        Error handling:
            If the sink raises an :class:`Exception`, the error belongs to this
            subscriber, not to the publisher whose task called it: the sink is
            turned off, and the pending :meth:`receive_batch` raises the error
            in the writer's task; the event is kept for the next receive.
        """
        self._sink = sink
        self._entry_sink = None if sink is None else entry_sink
        if self._mode is Mode.DIRECT:
            self._set_mode(Mode.DIRECT)  # the DIRECT function may have changed

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
            Exception: whatever the server's direct sink raised.
        """
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, got {max_events}")
        if self._pending or self._state != ACTIVE:
            await trio.lowlevel.checkpoint()
            return self._take_batch_special(max_events)
        receive = self._queue
        try:
            if self._sink is not None and not self._backlog:
                first = await self._receive_direct()
            else:
                first = await receive.receive()
        except trio.EndOfChannel:  # ended while we waited
            return self._take_batch_special(max_events)
        entries = [first]
        # Evicted after `first` was handed over: stop at it (Rule 1 of _delivery).
        if self._state == ACTIVE:
            self._take_ready(entries, max_events - 1)
        return self._events(entries)

    def _batch_nowait(self, max_events: int) -> list[Event]:
        """The events ready now, at most ``max_events``, without waiting.

        ``[]`` when none is ready; once the stream has ended, ``[]`` after its
        final event (the caller then sees ``_state != ACTIVE``). For writers
        that wait for something else than the channel (``_parked.py``).
        """
        if self._pending or self._state != ACTIVE:
            return self._take_batch_special(max_events)
        entries: list[Entry[Topic]] = []
        self._take_ready(entries, max_events)
        if not entries:
            return []
        return self._events(entries)

    def _take_ready(self, entries: list[Entry[Topic]], most: int) -> None:
        """Append up to ``most`` queued entries, without waiting; refill from the backlog."""
        receive_nowait = self._queue.receive_nowait
        for _ in range(most):
            try:
                entries.append(receive_nowait())
            except trio.WouldBlock:
                break
        if self._backlog:
            self._refill()

    def _events(self, entries: list[Entry[Topic]]) -> list[Event]:
        """The events of ``entries`` (converted for a merged stream); moves the position."""
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
            if not pending:
                self._pending = NO_EVENTS
            # Pending events exist only while active (ending clears them):
            # top up with live events already queued, without waiting.
            receive_nowait = self._queue.receive_nowait
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
