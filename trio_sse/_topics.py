"""Broker, topics and subscriptions: fan-out over bounded memory channels.

Theory of operation
===================

A :class:`Broker` owns named :class:`Topic` objects. Every subscriber owns one
bounded trio memory channel; a topic keeps a dict from subscription to that
channel's ``send_nowait``. Publishing goes through the broker's
:class:`~trio_sse.Backplane`, which assigns the id and calls back
:meth:`Topic.deliver_nowait` / :meth:`Topic.deliver`.

Rule 1: delivery is one synchronous pass. Recording the event in the history
and offering it to every subscriber's channel happen with no checkpoint in
between, so no task can observe a half-published event. The pass is a tight
loop of ``send_nowait`` calls: no task per subscriber and no allocation per
subscriber (the channel item is the history entry, shared by everyone).
Subscribers whose channel is full are collected and handled after the loop by
the topic's :class:`OverflowPolicy`:

- ``evict``: the subscriber is removed at once and its stream ends (after an
  optional final event). The publisher never waits.
- ``drop_oldest``: the publisher removes the oldest queued item from that
  subscriber's channel (``receive_nowait`` on the receive side) and queues the
  new one. The publisher never waits.
- ``block``: the entry goes into the subscriber's *backlog*, the subscriber is
  marked full in every topic (its dict value becomes a function that raises
  :class:`trio.WouldBlock`, so later events queue behind in order) and the
  publisher parks until the subscriber has moved the entry into its channel,
  for at most ``block_deadline`` seconds; then the subscriber is evicted. The
  subscriber refills its channel from the backlog whenever it receives. We do
  not use trio's own blocking ``send``: when a deadline cancels a queued send,
  a later ``send_nowait`` could take the freed slot and overtake it.

Rule 2: subscribing is one synchronous step too. Parsing the resume point,
snapshotting the history after it and registering the channel happen with no
checkpoint in between, so every event is either in the snapshot or in the
channel, never both and never neither: no gap and no duplicate at the
boundary, whatever other tasks publish concurrently.

Rule 3: a subscription ends exactly once. Eviction, closing the topic and
leaving the ``async with`` block all remove it from every topic's dict first
and close its send side second, so the publisher's loop never sees a closed
channel. An ended subscription discards its queue and yields only its final
event: the browser resumes through ``Last-Event-ID`` from the last event it
actually received.

Rule 4: an idle writer is written to directly. A writer that set a direct
sink (:meth:`Subscription.set_direct_sink`) and waits in ``receive_batch``
with nothing queued has its dict value swapped for a function that hands the
event to the sink in the publisher's task: one system call, no task switch.
When the sink refuses (the connection is busy), that event and every later one
take the channel as usual, so order and the overflow policy are unchanged. The
channel is the backlog; the swap is undone as soon as the writer wakes.

The dict values are how every special state is expressed (``send_nowait``,
direct, full): the fan-out loop itself never tests a subscriber's state.

History is a deque of entries bounded by count and by age (measured with
:func:`trio.current_time`, so autojump clocks work), plus a dict from event id
to entry for resuming. A resume point that is neither in the history nor the
topic's newest id is answered with the topic's reset event, never silence.

A subscription to several topics (:meth:`Broker.subscribe_many`) registers one
channel in each topic and rewrites each event's id to a composite cursor
holding every topic's position (format in :func:`_format_cursor`); the rewritten
event is cached on the entry, so subscribers at the same positions share it.
"""

from __future__ import annotations

import enum
import heapq
import re
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Final, Literal, final

import trio

from ._backplane import LocalBackplane, _with_id
from ._event import Event

if TYPE_CHECKING:
    from ._backplane import Backplane

__all__ = [
    "Broker",
    "OverflowPolicy",
    "Subscription",
    "Topic",
    "TopicOptions",
    "TopicStats",
]


class OverflowPolicy(enum.StrEnum):
    """What a topic does when a subscriber's channel is full.

    Being a :class:`~enum.StrEnum`, each member equals its value, so
    ``TopicOptions(overflow="drop_oldest")`` works too.
    """

    #: Disconnect the subscriber; its stream ends with the topic's optional
    #: ``eviction_event``. The default: a browser then resumes through
    #: ``Last-Event-ID`` and loses nothing that is still in the history.
    EVICT = "evict"
    #: Keep the newest events: discard the subscriber's oldest queued event and
    #: count it in ``dropped``. The subscriber silently misses that event.
    DROP_OLDEST = "drop_oldest"
    #: :meth:`Topic.publish` waits up to ``block_deadline`` seconds for room,
    #: then evicts. :meth:`Topic.publish_nowait` cannot wait, so it evicts a
    #: full subscriber at once.
    BLOCK = "block"


EndReason = Literal["evicted", "closed", "left"]
PolicyName = Literal["evict", "drop_oldest", "block"]

#: Default number of queued events per subscriber.
DEFAULT_BUFFER_SIZE: Final = 64
#: Default number of events kept for replay per topic.
DEFAULT_HISTORY_SIZE: Final = 100


@final
@dataclass(frozen=True, slots=True)
class TopicOptions:
    """Per-topic settings; immutable.

    Args:
        buffer_size: events queued per subscriber before the overflow policy
            applies (at least 1). A subscriber's queue holds at most
            ``buffer_size`` events; events are shared between subscribers and
            with the history, so ``buffer_size`` times the event size bounds
            the memory one slow subscriber can pin.
        overflow: the :class:`OverflowPolicy` (or its string value).
        history_size: events kept for replay to resuming subscribers (0
            disables replay; a resume then succeeds only from the newest id).
        history_max_age: if set, events older than this many seconds
            (:func:`trio.current_time`) also leave the history.
        block_deadline: under ``block``, how long :meth:`Topic.publish` waits
            for a full subscriber before evicting it, in seconds
            (``math.inf`` waits for ever).
        eviction_event: sent as the last event of an evicted subscriber's
            stream, e.g. ``Event(retry=1000)`` to make the browser come back
            after a second. ``None`` (default): the stream just ends.
        reset_event: sent first to a subscriber whose resume point is unknown
            or expired. ``None`` (default) means
            ``Event(event="reset", data=<topic name>)``. If it has no id, the
            topic's newest id is filled in so that the next reconnect resumes
            from here.
        max_id_length: the longest ``id`` (UTF-8 bytes) a published event may
            carry. Browsers send the id back in the ``Last-Event-ID`` header
            on every reconnect; one longer than a proxy's header limit gets
            ``431`` and the browser gives up for good. 256 is far below
            common limits (8 KiB).
        max_retry: the largest ``retry`` (ms) a published event may carry
            (default one hour), so a typo cannot park every browser for days.

    Raises:
        ValueError: a size or duration is out of range.
        TypeError: an event option is not an :class:`Event`.
    """

    buffer_size: int = DEFAULT_BUFFER_SIZE
    overflow: OverflowPolicy | PolicyName = OverflowPolicy.EVICT
    history_size: int = DEFAULT_HISTORY_SIZE
    history_max_age: float | None = None
    block_deadline: float = 1.0
    eviction_event: Event | None = None
    reset_event: Event | None = None
    max_id_length: int = 256
    max_retry: int = 3_600_000

    def __post_init__(self) -> None:
        _check_int("buffer_size", self.buffer_size, 1)
        _check_int("max_id_length", self.max_id_length, 1)
        _check_int("max_retry", self.max_retry, 0)
        _check_int("history_size", self.history_size, 0)
        object.__setattr__(self, "overflow", OverflowPolicy(self.overflow))
        if self.history_max_age is not None and not (
            isinstance(self.history_max_age, int | float) and self.history_max_age > 0
        ):
            raise ValueError(
                f"history_max_age must be a positive number of seconds or None, "
                f"got {self.history_max_age!r}"
            )
        if not (isinstance(self.block_deadline, int | float) and self.block_deadline >= 0):
            raise ValueError(
                f"block_deadline must be a non-negative number of seconds, "
                f"got {self.block_deadline!r}"
            )
        for name in ("eviction_event", "reset_event"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Event):
                raise TypeError(f"{name} must be an Event or None, got {type(value).__name__}")


def _check_int(name: str, value: object, minimum: int) -> None:
    if type(value) is not int or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


@final
@dataclass(frozen=True, slots=True)
class TopicStats:
    """A snapshot of one topic's counters, from :meth:`Topic.stats`.

    Attributes:
        name: the topic's name.
        subscribers: subscriptions currently receiving this topic.
        published: events delivered to this topic (by any publisher, through
            the backplane).
        delivered: events queued into subscribers' channels (one per event
            per subscriber; replayed history is counted in ``replayed``).
        dropped: queued events discarded under ``drop_oldest``.
        evicted: subscribers this topic evicted.
        replayed: history events handed to resuming subscribers.
        resets: subscribers whose resume point was unknown or expired.
        history_size: events currently kept for replay.
        max_lag: the largest number of events queued for one subscriber.
    """

    name: str
    subscribers: int
    published: int
    delivered: int
    dropped: int
    evicted: int
    replayed: int
    resets: int
    history_size: int
    max_lag: int


@final
class _Entry:
    """One published event as it travels: history item and channel item."""

    __slots__ = ("event", "gseq", "part", "seq", "time", "topic", "variant", "variant_key")

    def __init__(self, event: Event, seq: int, gseq: int, time: float, topic: Topic) -> None:
        self.event = event
        self.seq = seq  # per topic, contiguous
        self.gseq = gseq  # per broker: orders events of several topics
        self.time = time
        self.topic = topic
        # Composite-cursor cache (multi-topic subscriptions only).
        self.part: str | None = None
        self.variant_key: str | None = None
        self.variant: Event | None = None


_Send = Callable[[_Entry], None]
#: (topic, client's id, boundary id, events or None for "reset").
_Fetched = tuple["Topic", str, str, "list[Event] | None"]


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
        self._history_size = options.history_size
        self._max_age = options.history_max_age
        self._reset_event = options.reset_event or Event(event="reset", data=name)
        # Insertion order = subscription order; values are what the fan-out
        # loop calls: channel.send_nowait, the direct sink, or the "full" stub
        # (Rule 4).
        self._subscribers: dict[Subscription, _Send] = {}
        self._history: deque[_Entry] = deque()
        self._index: dict[str, _Entry] = {}
        self._last_id: str | None = None
        self._seq = 0
        self._trimmed = False  # has any event ever left (or skipped) the history?
        self._closed = False
        self._cursor_prefix = _escape(name) + ":"
        self._published = 0
        self._delivered = 0
        self._dropped = 0
        self._evicted = 0
        self._replayed = 0
        self._resets = 0

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
        self._check_bounds(event)
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
        self._check_bounds(event)
        return await self.broker.backplane.publish(self, event)

    def _check_bounds(self, event: Event) -> None:
        options = self.options
        event_id = event.id
        if event_id and len(event_id.encode("utf-8")) > options.max_id_length:
            raise ValueError(
                f"event id of {len(event_id.encode('utf-8'))} bytes is longer than "
                f"TopicOptions.max_id_length ({options.max_id_length}): browsers send "
                "it back as a header on every reconnect"
            )
        retry = event.retry
        if retry is not None and retry > options.max_retry:
            raise ValueError(
                f"retry {retry} ms is over TopicOptions.max_retry ({options.max_retry} ms)"
            )

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
        slow = self._send_all(entry)
        if slow is not None:
            self._overflow(entry, slow, may_wait=False)

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
        entry = self._record(event)
        slow = self._send_all(entry)
        waiting = None if slow is None else self._overflow(entry, slow, may_wait=True)
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

    def _record(self, event: Event) -> _Entry:
        if self._closed:
            raise trio.ClosedResourceError(f"topic {self.name!r} is closed")
        event_id = event.id
        if not event_id:
            raise ValueError("deliver() needs an event with an id; publish() assigns one")
        self._seq += 1
        broker = self.broker
        broker._gseq += 1
        max_age = self._max_age
        now = 0.0 if max_age is None else trio.current_time()
        entry = _Entry(event, self._seq, broker._gseq, now, self)
        self._published += 1
        self._last_id = event_id
        if self._history_size:
            self._history.append(entry)
            self._index[event_id] = entry
            self._trim(now)
        else:
            self._trimmed = True
        return entry

    def _send_all(self, entry: _Entry) -> list[Subscription] | None:
        # The hot path: keep it a bare loop.
        slow: list[Subscription] | None = None
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

    def _overflow(
        self, entry: _Entry, slow: list[Subscription], *, may_wait: bool
    ) -> list[Subscription] | None:
        policy = self._policy
        waiting: list[Subscription] | None = None
        for sub in slow:
            if policy is OverflowPolicy.BLOCK and may_wait:
                sub._backlog_append(entry)
                if waiting is None:
                    waiting = [sub]
                else:
                    waiting.append(sub)
            elif policy is OverflowPolicy.DROP_OLDEST and sub._drop_oldest_and_send(entry):
                self._delivered += 1
            else:
                sub._end("evicted", self)
        return waiting

    # -- history -----------------------------------------------------------

    def _trim(self, now: float | None = None) -> None:
        history = self._history
        index = self._index
        excess = len(history) - self._history_size
        while excess > 0:
            self._forget(history.popleft(), index)
            excess -= 1
        max_age = self._max_age
        if max_age is not None and history:
            if now is None:
                now = trio.current_time()
            cutoff = now - max_age
            while history and history[0].time < cutoff:
                self._forget(history.popleft(), index)

    def _forget(self, entry: _Entry, index: dict[str, _Entry]) -> None:
        self._trimmed = True
        event_id = entry.event.id
        assert event_id is not None
        # With duplicate ids the index points at the newest: keep that one.
        if index.get(event_id) is entry:
            del index[event_id]

    def _entries_after(self, last_event_id: str) -> list[_Entry] | None:
        """History after *last_event_id*, or None if it cannot be resumed."""
        if last_event_id == self._last_id:
            return []
        self._trim()
        if last_event_id == "":
            # Composite cursors use "" for "before this topic's first event".
            return None if self._trimmed else list(self._history)
        start = self._index.get(last_event_id)
        if start is None:
            return None
        after: list[_Entry] = []
        for entry in reversed(self._history):  # pragma: no branch - start is in it
            if entry.seq <= start.seq:
                break
            after.append(entry)
        after.reverse()
        return after

    def _reset_for_position(self, position: str | None = None) -> Event:
        reset = self._reset_event
        if position is None:
            position = self._last_id
        if reset.id is None and position is not None:
            reset = _with_id(reset, position)
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
        self._index.clear()
        self._trimmed = True
        self._resets += len(self._subscribers)
        self.deliver_nowait(_with_id(self._reset_event, position))

    # -- subscribing -------------------------------------------------------

    def subscribe(self, last_event_id: str | None = None) -> Subscription:
        """Subscribe to this topic; use the result with ``async with``.

        Example::

            async with topic.subscribe(request_last_event_id) as sub:
                async for event in sub:
                    ...

        Args:
            last_event_id: the client's ``Last-Event-ID``. ``None`` or ``""``:
                live events only. The topic's newest id: nothing to replay.
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
            self._trim()
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
        self._index.clear()
        self.broker._forget(self)


_NEW: Final = 0
_ACTIVE: Final = 1
_ENDED: Final = 2
_LEFT: Final = 3


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
        self._merge: _Merge | None = None
        self._merged = merged
        self._plan: list[list[_Entry] | None]
        self._state = _NEW
        self._end_reason: EndReason | None = None
        self._pending: deque[Event] = deque()
        self._final: Event | None = None
        self._backlog: deque[_Entry] = deque()
        self._lot: trio.lowlevel.ParkingLot | None = None
        self._sink: Callable[[Event], bool] | None = None
        self._direct_fn: _Send | None = None
        self._sink_error: Exception | None = None
        self._position: str | None = None
        self._send: trio.MemorySendChannel[_Entry]
        self._receive: trio.MemoryReceiveChannel[_Entry]
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
        return _parse_cursor(cursor) or {}

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Synchronous on purpose: must complete even when cancelled.
        self._close()

    def _open(self) -> list[tuple[Topic, str, str]]:
        # Rule 2: from here to registration there is no checkpoint.
        if self._state != _NEW:
            raise RuntimeError("a Subscription can only be entered once")
        topics = self._topics
        for topic in topics:
            topic._check_open()
        remote: list[tuple[Topic, str, str]] = []
        if self._merged:
            self._open_merged(remote)
        else:
            self._open_single(remote)
        size = max(t.options.buffer_size for t in topics)
        self._send, self._receive = trio.open_memory_channel[_Entry](size)
        send = self._send_nowait = self._send.send_nowait
        for topic in topics:
            topic._subscribers[self] = send
        self._state = _ACTIVE
        return remote

    def _finish_open(self, fetched: Iterable[_Fetched]) -> None:
        """Add the remotely fetched replays (Rule 4 of the backplane)."""
        if self._merged:
            self._build_merged(fetched)
            return
        for topic, after, until, events in fetched:
            if self._state != _ACTIVE:
                return  # evicted while fetching: the stream ends anyway
            if events is None:
                self._reset_topic(topic, position=until)
                self._position = until
            else:
                self._pending.extend(events)
                self._replay_count(topic, len(events))
                self._position = events[-1].id if events else after

    def _open_single(self, remote: list[tuple[Topic, str, str]]) -> None:
        topic = self._topics[0]
        last_id = self._cursor_in
        if last_id is None:
            self._position = topic._last_id
            return
        entries = topic._entries_after(last_id)
        if entries is None and topic._remote_replayable(last_id):
            assert topic._last_id is not None  # wait_ready() made sure
            remote.append((topic, last_id, topic._last_id))
            return
        if entries is None:
            self._reset_topic(topic)
            self._position = topic._last_id
            return
        self._pending.extend(e.event for e in entries)
        self._replay_count(topic, len(entries))
        self._position = entries[-1].event.id if entries else last_id

    def _open_merged(self, remote: list[tuple[Topic, str, str]]) -> None:
        topics = self._topics
        positions = _parse_cursor(self._cursor_in) if self._cursor_in is not None else {}
        plan: list[list[_Entry] | None] = []
        parts: list[str] = []
        for topic in topics:
            if positions is None:
                position: str | None = None  # invalid cursor: reset everything
                entries = None
            else:
                position = positions.get(topic.name)
                entries = [] if position is None else topic._entries_after(position)
            if entries is None and position is not None and topic._remote_replayable(position):
                assert topic._last_id is not None  # wait_ready() made sure
                remote.append((topic, position, topic._last_id))
                entries = []  # filled in by _build_merged
            plan.append(entries)
            if entries is None or position is None:  # reset or fresh: live from the newest
                position = topic._last_id or ""
            parts.append(topic._cursor_prefix + _escape(position))
        self._merge = _Merge(topics, parts)
        self._plan = plan

    def _build_merged(self, fetched: Iterable[_Fetched]) -> None:
        merge = self._merge
        assert merge is not None
        plan = self._plan
        del self._plan
        topics = self._topics
        remote = False
        for topic, _after, until, events in fetched:
            slot = merge.slots[topic]
            remote = True
            if events is None:
                plan[slot] = None
                merge.parts[slot] = topic._cursor_prefix + _escape(until)
            else:
                plan[slot] = [_Entry(event, 0, 0, 0.0, topic) for event in events]
        self._position = ",".join(merge.parts)
        if self._state != _ACTIVE:
            return  # evicted while fetching: the stream ends anyway
        replays: list[list[_Entry]] = []
        for topic, entries in zip(topics, plan, strict=True):
            if entries is None:
                self._reset_topic(topic, merge)
            elif entries:
                replays.append(entries)
                self._replay_count(topic, len(entries))
        if not replays:
            return
        if len(replays) == 1:
            ordered: Iterable[_Entry] = replays[0]
        elif remote:
            # Remote events have no broker sequence: order by publish time.
            key = topics[0].broker.backplane.remote_history
            assert key is not None
            order = key.order_key

            def by_time(entry: _Entry) -> tuple[int, int]:
                event_id = entry.event.id
                assert event_id is not None
                return order(event_id)

            ordered = heapq.merge(*replays, key=by_time)
        else:
            ordered = heapq.merge(*replays, key=_by_gseq)
        self._pending.extend(merge.convert(e) for e in ordered)

    def _reset_topic(
        self, topic: Topic, merge: _Merge | None = None, *, position: str | None = None
    ) -> None:
        self.reset = True
        topic._resets += 1
        reset = topic._reset_event
        if merge is None:
            self._pending.append(topic._reset_for_position(position))
        else:
            self._pending.append(_with_id(reset, ",".join(merge.parts)))

    def _replay_count(self, topic: Topic, n: int) -> None:
        self.replayed += n
        topic._replayed += n

    def _close(self) -> None:
        if self._state == _NEW:
            return
        self._end("left", None)
        self._state = _LEFT
        self._final = None
        self._receive.close()

    def _end(self, reason: EndReason, by: Topic | None) -> None:
        # Rule 3: unregister first, close second.
        if self._state != _ACTIVE:
            return
        self._state = _ENDED
        self._end_reason = reason
        for topic in self._topics:
            topic._subscribers.pop(self, None)
        self._pending.clear()
        self._backlog.clear()
        if by is not None:
            by._evicted += 1
            self._final = by.options.eviction_event
        self._send.close()
        if self._lot is not None:
            self._lot.unpark_all()

    # -- the block policy's backlog ------------------------------------------

    def _full(self, entry: _Entry) -> None:
        raise trio.WouldBlock

    def _backlog_append(self, entry: _Entry) -> None:
        backlog = self._backlog
        if not backlog:
            full = self._full
            for topic in self._topics:
                topic._subscribers[self] = full
            self._parking_lot()  # the publisher parks there next
        backlog.append(entry)

    def _parking_lot(self) -> trio.lowlevel.ParkingLot:
        lot = self._lot
        if lot is None:
            lot = self._lot = trio.lowlevel.ParkingLot()
        return lot

    def _holds(self, entry: _Entry) -> bool:
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
            for topic in self._topics:
                topic._subscribers[self] = send
        self._parking_lot().unpark_all()

    def _drop_oldest_and_send(self, entry: _Entry) -> bool:
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

    def _convert_one(self, entry: _Entry) -> Event:
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

    def _direct(self, entry: _Entry) -> None:
        # This subscriber's send function while its writer is parked in
        # receive_batch() with nothing queued. Never checkpoints (Rule 1).
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
        direct = self._direct_fn
        if direct is None:
            return
        self._direct_fn = None
        if self._state == _ACTIVE:
            # While direct, every topic holds `direct`: it never raises
            # WouldBlock, so nothing (like the block backlog) replaced it.
            send = self._send_nowait
            for topic in self._topics:
                topic._subscribers[self] = send

    async def _receive_direct(self) -> _Entry:
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
        direct = self._direct_fn = self._direct
        for topic in self._topics:
            topic._subscribers[self] = direct
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
        # Evicted after `first` was handed over: stop at it (Rule 3).
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


def _by_gseq(entry: _Entry) -> int:
    return entry.gseq


@final
class _Merge:
    """Composite-cursor state of a multi-topic subscription."""

    __slots__ = ("parts", "slots")

    def __init__(self, topics: tuple[Topic, ...], parts: list[str]) -> None:
        self.slots = {topic: i for i, topic in enumerate(topics)}
        self.parts = parts

    def convert(self, entry: _Entry) -> Event:
        part = entry.part
        if part is None:
            event_id = entry.event.id
            assert event_id is not None
            part = entry.part = entry.topic._cursor_prefix + _escape(event_id)
        parts = self.parts
        parts[self.slots[entry.topic]] = part
        key = ",".join(parts)
        # One-slot cache: subscribers at the same positions (the common case)
        # share one rewritten event, so it is encoded once.
        if entry.variant_key == key:
            variant = entry.variant
            assert variant is not None
            return variant
        variant = _with_id(entry.event, key)
        entry.variant_key = key
        entry.variant = variant
        return variant


# -- composite cursors ---------------------------------------------------------
#
# Format: "name:position,name:position,…" in subscription order, e.g.
# "prices:42,news:7". Names and positions keep A-Z a-z 0-9 "_" "." "-" as
# they are; every other character is written as "~" plus two upper-case hex
# digits per UTF-8 byte ("room/1" -> "room~2F1"). The result uses only
# unreserved URL characters plus ":" and ",", which RFC 3986 allows unescaped
# in a query, so it survives a ?lastEventId= parameter, a Last-Event-ID
# header and an SSE id field. An empty position means "before the topic's
# first event".

_SAFE: Final = re.compile(r"[A-Za-z0-9_.\-]*")
_ESCAPED: Final = re.compile(r"(?:[A-Za-z0-9_.\-]|~[0-9A-F]{2})*")


def _escape(text: str) -> str:
    if _SAFE.fullmatch(text):
        return text
    out: list[str] = []
    for char in text:
        if _SAFE.fullmatch(char):
            out.append(char)
        else:
            out.extend(f"~{byte:02X}" for byte in char.encode("utf-8"))
    return "".join(out)


def _unescape(text: str) -> str | None:
    if "~" not in text:
        return text if _SAFE.fullmatch(text) else None
    if not _ESCAPED.fullmatch(text):
        return None
    raw = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "~":
            raw.append(int(text[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.append(ord(text[i]))
            i += 1
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _format_cursor(positions: Iterable[tuple[str, str]]) -> str:
    """Encode (topic name, event id) pairs as a composite cursor."""
    return ",".join(f"{_escape(name)}:{_escape(pos)}" for name, pos in positions)


def _parse_cursor(cursor: str) -> dict[str, str] | None:
    """Decode a composite cursor; None if it is malformed."""
    positions: dict[str, str] = {}
    for item in cursor.split(","):
        name_part, sep, pos_part = item.partition(":")
        if not sep:
            return None
        name = _unescape(name_part)
        pos = _unescape(pos_part)
        if not name or pos is None or name in positions:
            return None
        positions[name] = pos
    return positions


@final
class Broker:
    """Owns named topics; the entry point for publishing and subscribing.

    Args:
        defaults: :class:`TopicOptions` for topics created on demand (and for
            :meth:`declare` without options).
        backplane: where published events go; default a fresh
            :class:`~trio_sse.LocalBackplane`.
        create_topics: create unknown topics on demand in :meth:`topic`,
            :meth:`subscribe` and :meth:`publish`. Set it to ``False`` when
            clients choose topic names, so that only declared topics exist.

    The broker is not thread-safe: use it from its trio run (from threads,
    via :func:`trio.from_thread.run_sync`).
    """

    def __init__(
        self,
        defaults: TopicOptions | None = None,
        *,
        backplane: Backplane | None = None,
        create_topics: bool = True,
    ) -> None:
        self.defaults: Final = defaults if defaults is not None else TopicOptions()
        self.backplane: Final[Backplane] = backplane if backplane is not None else LocalBackplane()
        self.create_topics: Final = create_topics
        self._topics: dict[str, Topic] = {}
        self._gseq = 0
        self._closed = False
        _LIVE_BROKERS.add(self)
        self.backplane.attach(self)

    def __repr__(self) -> str:
        return f"<Broker topics={len(self._topics)}>"

    @property
    def topics(self) -> Mapping[str, Topic]:
        """A read-only live view of the topics by name."""
        return MappingProxyType(self._topics)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def declare(self, name: str, options: TopicOptions | None = None) -> Topic:
        """Create a topic with explicit options, or return the existing one.

        Args:
            name: the topic's name (a non-empty string).
            options: its options; ``None`` means the broker's defaults.

        Returns:
            The topic.

        Raises:
            ValueError: the topic exists with different options, or the name
                is empty.
            TypeError: the name is not a string.
            trio.ClosedResourceError: the broker is closed.
        """
        _check_name(name)
        if options is None:
            options = self.defaults
        topic = self._topics.get(name)
        if topic is not None:
            if topic.options != options:
                raise ValueError(
                    f"topic {name!r} already exists with other options: {topic.options!r}"
                )
            return topic
        return self._create(name, options)

    def topic(self, name: str) -> Topic:
        """Return the topic *name*, creating it with the defaults if allowed.

        Raises:
            KeyError: the topic does not exist and ``create_topics`` is false.
            ValueError: the name is empty.
            TypeError: the name is not a string.
            trio.ClosedResourceError: the broker is closed.
        """
        topic = self._topics.get(name)
        if topic is not None:
            return topic
        _check_name(name)
        if not self.create_topics:
            raise KeyError(f"no topic {name!r} (this broker only has declared topics)")
        return self._create(name, self.defaults)

    def _create(self, name: str, options: TopicOptions) -> Topic:
        if self._closed:
            raise trio.ClosedResourceError("the broker is closed")
        topic = self._topics[name] = Topic(self, name, options)
        self.backplane.topic_added(topic)
        return topic

    def _forget(self, topic: Topic) -> None:
        # Called once per topic (Topic.close is idempotent), while registered.
        assert self._topics[topic.name] is topic
        del self._topics[topic.name]

    def publish_nowait(self, name: str, event: Event) -> Event:
        """Shortcut for ``broker.topic(name).publish_nowait(event)``."""
        return self.topic(name).publish_nowait(event)

    async def publish(self, name: str, event: Event) -> Event:
        """Shortcut for ``await broker.topic(name).publish(event)``."""
        return await self.topic(name).publish(event)

    def subscribe(self, name: str, last_event_id: str | None = None) -> Subscription:
        """Shortcut for ``broker.topic(name).subscribe(last_event_id)``."""
        return self.topic(name).subscribe(last_event_id)

    def subscribe_many(self, names: Iterable[str], cursor: str | None = None) -> Subscription:
        """Subscribe to several topics as one stream with composite ids.

        Every yielded event's id is replaced by a composite cursor holding
        the position in every topic (``"a:12,b:7"``; see ``docs/topics.md``).
        Events of different topics arrive in publish order (with
        :class:`~trio_sse.RedisBackplane`, each topic in its exact order and
        different topics by publish time to the millisecond: separate streams
        have no common order within one).

        Args:
            names: the topic names, in the order used in cursors (no
                duplicates, at least one).
            cursor: the client's ``Last-Event-ID``, a composite cursor from an
                earlier stream. ``None``: live events only. Each topic in it
                resumes exactly like :meth:`Topic.subscribe`; a topic whose
                position is unknown or expired yields its reset event (all of
                them first, then the merged replay); topics missing from the
                cursor start live; a malformed cursor resets every topic.

        Returns:
            A :class:`Subscription` to use with ``async with``. Its buffer is
            the largest ``buffer_size`` of the topics; on overflow, the policy
            of the topic being published applies.

        Raises:
            ValueError: *names* is empty or has duplicates.
        """
        topics = tuple(self.topic(name) for name in names)
        if not topics:
            raise ValueError("subscribe_many() needs at least one topic")
        if len(set(topics)) != len(topics):
            raise ValueError(f"duplicate topic names in {[t.name for t in topics]!r}")
        return Subscription(topics, cursor or None, merged=True)

    def stats(self) -> dict[str, TopicStats]:
        """Return :meth:`Topic.stats` of every topic, by name."""
        return {name: topic.stats() for name, topic in self._topics.items()}

    def close(self) -> None:
        """Close every topic and refuse new ones. Idempotent.

        Every subscription ends (``end_reason == "closed"``), so streams
        finish and their handlers return.
        """
        self._closed = True
        for topic in list(self._topics.values()):
            topic.close()


#: Every Broker alive in this process, so that ``trio-sse serve --workers``
#: can check the app's backplanes after importing it.
_LIVE_BROKERS: weakref.WeakSet[Broker] = weakref.WeakSet()


def _live_brokers() -> list[Broker]:
    """The brokers alive in this process (for start-up checks)."""
    return list(_LIVE_BROKERS)


def _check_name(name: object) -> None:
    if not isinstance(name, str):
        raise TypeError(f"topic names are str, got {type(name).__name__}")
    if not name:
        raise ValueError("topic names must not be empty")
