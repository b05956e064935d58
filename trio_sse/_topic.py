"""Topics: history, fan-out over subscribers' bounded channels, overflow policies.

Theory of operation
===================

A :class:`Topic` belongs to a :class:`~trio_sse.Broker`. Every subscriber
(:mod:`trio_sse._subscription`) owns one bounded trio memory channel; a topic
keeps a dict from subscription to the function its fan-out loop calls with each
event, which the subscription sets according to its delivery mode. Publishing
goes through the broker's :class:`~trio_sse.Backplane`, which assigns the id
and calls back :meth:`Topic.deliver_nowait` / :meth:`Topic.deliver`.

Rule 1: delivery is one synchronous pass, up to ``TopicOptions.fanout_slice``
subscribers. Recording the event in the history and offering it to every
subscriber happen with no checkpoint in between, so no task can observe a
half-published event. (A larger pass by :meth:`Topic.deliver` yields between
slices, with the same members, order and policies: ``_fanout.py``, which
also applies the policies.) The pass is a bare loop of calls
(``send_nowait``, or the subscription's direct or full function): no task per
subscriber, no allocation per subscriber (the channel item is the history
entry, shared by everyone) and no test of a subscriber's state. Subscribers
that raise :class:`trio.WouldBlock` are collected and handled after the loop
by the topic's :class:`~trio_sse.OverflowPolicy`:

- ``evict``: the subscriber is removed at once and its stream ends (after an
  optional final event). The publisher never waits.
- ``drop_oldest``: the publisher removes the oldest queued item from that
  subscriber's channel and queues the new one. The publisher never waits.
- ``block``: the entry goes into the subscriber's *backlog* (its mode becomes
  ``FULL``, so later events queue behind in order) and the publisher parks
  until the subscriber has moved the entry into its channel, for at most
  ``block_deadline`` seconds; then the subscriber is evicted.

Rule 2: subscribing is one synchronous step too. Parsing the resume point,
snapshotting the history after it (:mod:`trio_sse._resume`) and registering the
channel happen with no checkpoint in between, so every event is either in the
snapshot or in the channel, never both and never neither: no gap and no
duplicate at the boundary, whatever other tasks publish concurrently.

The history (:mod:`trio_sse._history`) is bounded by count and by age,
measured with :func:`trio.current_time` so that autojump clocks work. A resume
point that is neither in the history nor the topic's newest id is answered
with the topic's reset event, never silence.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Final, final

import trio

from ._cursor import escape, with_id
from ._event import Event
from ._fanout import Members, defer, overflow, pass_sliced, wait_turn
from ._history import Entry, History
from ._options import OverflowPolicy, TopicOptions, TopicStats, check_bounds
from ._subscription import Subscription

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._broker import Broker
    from ._delivery import Delivery

__all__ = ["Topic"]


@final
class Topic:
    """A named stream of events with subscribers, history and a policy.

    Get topics from :meth:`Broker.topic` or :meth:`Broker.declare`; do not
    instantiate this class yourself.

    Attributes:
        name: the topic's name.
        options: its :class:`TopicOptions`.
        broker: the :class:`Broker` that owns it.
    """

    def __init__(self, broker: Broker, name: str, options: TopicOptions) -> None:
        self.broker: Final = broker
        self.name: Final = name
        self.options: Final = options
        self._policy = OverflowPolicy(options.overflow)
        self._reset_event = options.reset_event or Event(event="reset", data=name)
        # Insertion order = subscription order; values are what the fan-out
        # loop calls, set by Delivery._set_mode() alone (Rule 1).
        self._subscribers: dict[Delivery, Callable[[Entry[Topic]], None]] = {}
        self._history: History[Topic] = History(options.history_size, options.history_max_age)
        # The newest id; backplanes may set it before any event (a boundary).
        self._last_id: str | None = None
        self._seq = 0
        self._closed = False
        self._cursor_prefix = escape(name) + ":"
        self._published = 0
        self._delivered = 0
        self._dropped = 0
        self._evicted = 0
        self._replayed = 0
        self._resets = 0
        # Sliced fan-out (``_fanout.py``): a pass is running; events recorded
        # meanwhile, with their members; deliverers waiting for their turn.
        self._fanning = False
        # Writes of _subscribers: a sliced pass's snapshot is current while
        # this is unchanged (_fanout.py, Rule 1).
        self._changes = 0
        # The subscribers and their functions, for the next pass (dropped by writes).
        self._members: Members | None = None
        self._later: deque[tuple[Entry[Topic], Members, int]] | None = None
        self._fan_lot: trio.lowlevel.ParkingLot | None = None

    def __repr__(self) -> str:
        return f"<Topic {self.name!r} subscribers={len(self._subscribers)}>"

    @property
    def last_event_id(self) -> str | None:
        """The id of the newest event delivered to this topic, if any."""
        return self._last_id

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (on the topic or its broker)."""
        return self._closed

    # -- publishing --------------------------------------------------------

    def publish_nowait(self, event: Event) -> Event:
        """Publish *event* without blocking.

        The event goes through the broker's backplane, which assigns an id if
        the event has none (``None`` or ``""``).

        Under ``evict`` and ``drop_oldest`` this never waits for anyone; under
        ``block`` it evicts full subscribers at once, since it cannot wait.

        Args:
            event: the event to publish.

        Returns:
            The event as published, with its id; a networked backplane that
            assigns ids remotely (:class:`~trio_sse.RedisBackplane`) returns
            it without one: use :meth:`publish` when you need the id.

        Raises:
            TypeError: *event* is not an :class:`Event`.
            ValueError: its id or retry exceeds ``max_id_length`` /
                ``max_retry`` (see :class:`TopicOptions`).
            trio.ClosedResourceError: the topic is closed.
            trio.WouldBlock: a networked backplane cannot take the event now.
            BackplaneUnavailableError: a networked backplane cannot reach
                its engine; nothing was published.
        """
        if type(event) is not Event:
            raise TypeError(f"expected an Event, got {type(event).__name__}")
        check_bounds(self.options, event)
        return self.broker.backplane.publish_nowait(self, event)

    async def publish(self, event: Event) -> Event:
        """Publish *event*; under ``block``, wait for full subscribers.

        Under ``block`` this waits up to ``block_deadline`` seconds for each
        full subscriber to make room, then evicts the ones that did not.
        Other policies never wait (this is then just a checkpoint plus
        :meth:`publish_nowait`).

        Args:
            event: the event to publish.

        Returns:
            The event as published, with its id.

        Raises:
            TypeError: *event* is not an :class:`Event`.
            ValueError: its id or retry exceeds ``max_id_length`` /
                ``max_retry`` (see :class:`TopicOptions`).
            trio.ClosedResourceError: the topic is closed.
            BackplaneUnavailableError: a networked backplane cannot reach
                its engine (see :class:`~trio_sse.RedisBackplane`).

        Error handling:
            If the caller is cancelled while waiting, the event stays
            published (it is in the history and other subscribers have it);
            the subscribers still waited for are evicted, because they would
            otherwise miss it silently.
        """
        if type(event) is not Event:
            raise TypeError(f"expected an Event, got {type(event).__name__}")
        check_bounds(self.options, event)
        return await self.broker.backplane.publish(self, event)

    def deliver_nowait(self, event: Event) -> None:
        """Fan out an event whose id is final, without blocking.

        For :class:`~trio_sse.Backplane` implementations: applications call
        :meth:`publish_nowait`. Under ``block``, full subscribers are evicted
        at once.

        Args:
            event: the event, with a non-empty id.

        Raises:
            ValueError: the event has no id.
            trio.ClosedResourceError: the topic is closed.
        """
        entry = self._record(event)
        if self._fanning:
            defer(self, entry)  # behind the running sliced pass (_fanout.py)
            return
        slow = self._send_all(entry)
        if slow is not None:
            overflow(self, entry, slow, may_wait=False)

    async def deliver(self, event: Event) -> None:
        """Fan out an event whose id is final; under ``block``, wait for room.

        For :class:`~trio_sse.Backplane` implementations: applications call
        :meth:`publish`.

        Args:
            event: the event, with a non-empty id.

        Raises:
            ValueError: the event has no id.
            trio.ClosedResourceError: the topic is closed.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._fanning:
            await wait_turn(self)
        entry = self._record(event)
        if len(self._subscribers) > self.options.fanout_slice:
            waiting = await pass_sliced(self, entry)
        else:
            slow = self._send_all(entry)
            waiting = None if slow is None else overflow(self, entry, slow, may_wait=True)
        if waiting is None:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        try:
            with trio.move_on_after(self.options.block_deadline):
                for sub in waiting:
                    while sub._holds(entry):
                        await sub._parking_lot().park()
        finally:
            # Deadline or cancellation: whoever still holds the entry in its
            # backlog has not received it and must not receive later ones.
            for sub in waiting:
                if sub._holds(entry):
                    sub._end("evicted", self)
        # If every waiter left before we parked, we never checkpointed.
        await trio.lowlevel.cancel_shielded_checkpoint()

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError(f"topic {self.name!r} is closed")

    def _record(self, event: Event) -> Entry[Topic]:
        if self._closed:
            raise trio.ClosedResourceError(f"topic {self.name!r} is closed")
        event_id = event.id
        if not event_id:
            raise ValueError("deliver() needs an event with an id; publish() assigns one")
        self._seq += 1
        broker = self.broker
        broker._gseq += 1
        history = self._history
        # Read once per event: the history's age and the direct sinks' write
        # time (_direct.py, Rule 3) both use it. Outside trio.run (a topic
        # filled before serving) there are no sinks, and no age without trio.
        try:
            now = trio.current_time()
        except RuntimeError:
            if history.max_age is not None:
                raise
            now = 0.0
        entry = Entry(event, self._seq, broker._gseq, now, self)
        self._published += 1
        self._last_id = event_id
        history.add(entry, now)
        return entry

    def _send_all(self, entry: Entry[Topic]) -> list[Delivery] | None:
        # The hot path: keep it a bare loop.
        slow: list[Delivery] | None = None
        subscribers = self._subscribers
        for sub, send in subscribers.items():
            try:
                send(entry)
            except trio.WouldBlock:
                if slow is None:
                    slow = [sub]
                else:
                    slow.append(sub)
        if slow is None:
            self._delivered += len(subscribers)
        else:
            self._delivered += len(subscribers) - len(slow)
        return slow

    # -- history -----------------------------------------------------------

    def _now(self) -> float:
        # The clock is read only when age matters, so that stats() works
        # outside trio when it does not.
        history = self._history
        return trio.current_time() if history.max_age is not None and history else 0.0

    def _entries_after(self, last_event_id: str) -> list[Entry[Topic]] | None:
        """History after *last_event_id*, or None if it cannot be resumed."""
        if last_event_id == self._last_id:
            return []
        return self._history.entries_after(last_event_id, self._now())

    def _reset_for_position(self, position: str | None = None) -> Event:
        reset = self._reset_event
        if position is None:
            position = self._last_id
        if reset.id is None and position is not None:
            reset = with_id(reset, position)
        return reset

    def _remote_replayable(self, event_id: str) -> bool:
        history = self.broker.backplane.remote_history
        return history is not None and history.replayable(self, event_id)

    def _restart(self, position: str) -> None:
        """A new epoch began (the backplane lost its data): tell subscribers.

        For backplanes: the history is forgotten (its ids belong to the old
        epoch) and every subscriber receives the topic's reset event, with id
        *position*, as a live event; a client that reconnects with that id
        resumes from the new epoch's start.
        """
        self._history.clear()
        self._resets += len(self._subscribers)
        self.deliver_nowait(with_id(self._reset_event, position))

    # -- subscribing -------------------------------------------------------

    def subscribe(self, last_event_id: str | None = None) -> Subscription:
        """Subscribe to this topic; use the result with ``async with``.

        Example::

            async with topic.subscribe(request_last_event_id) as sub:
                async for event in sub:
                    ...

        Args:
            last_event_id: the client's ``Last-Event-ID``. ``None`` or ``""``:
                the events published since this call (still in the history),
                then live ones. The topic's newest id: nothing to replay.
                An id in the history: the events after it, then live ones.
                Anything else (unknown, or expired from the history): the
                topic's reset event first, then live events.

        Returns:
            A :class:`Subscription`, registered when its ``async with`` block
            is entered.
        """
        return Subscription((self,), last_event_id or None, merged=False)

    def stats(self) -> TopicStats:
        """Return a snapshot of this topic's counters (O(subscribers))."""
        if not self._closed:
            self._history.trim(self._now())
        max_lag = 0
        for sub in self._subscribers:
            lag = sub.queued
            if lag > max_lag:
                max_lag = lag
        return TopicStats(
            name=self.name,
            subscribers=len(self._subscribers),
            published=self._published,
            delivered=self._delivered,
            dropped=self._dropped,
            evicted=self._evicted,
            replayed=self._replayed,
            resets=self._resets,
            history_size=len(self._history),
            max_lag=max_lag,
        )

    def close(self) -> None:
        """End every subscription, forget the history, leave the broker.

        Subscribers' iterators stop (``end_reason == "closed"``, no final
        event). Later publishes and subscribes raise
        :class:`trio.ClosedResourceError`; :meth:`Broker.topic` creates a
        fresh topic of the same name. Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        for sub in list(self._subscribers):
            sub._end("closed", None)
        self._history.clear()
        self.broker._forget(self)
