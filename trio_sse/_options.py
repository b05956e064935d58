"""Topic options, overflow policies and statistics: plain values (no trio).

Strategy: everything a user configures or reads about a topic is an immutable
value checked at construction, so that a bad setting fails where it is
written, not at the first publish. The behaviour these values select lives in
:mod:`trio_sse._topic` (fan-out, policies) and :mod:`trio_sse._subscription`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, Literal, final

from ._event import Event

__all__ = [
    "DEFAULT_BUFFER_SIZE",
    "DEFAULT_HISTORY_SIZE",
    "EndReason",
    "OverflowPolicy",
    "PolicyName",
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
        fanout_slice: the most subscribers :meth:`Topic.publish` serves
            between two checkpoints (at least 1). A larger fan-out is
            delivered in slices, yielding to other tasks between them, so
            that publishing to 100,000 subscribers does not hold the event
            loop for the whole pass (on the raw server each idle subscriber
            costs one write system call). Order and the overflow policy are
            unchanged. :meth:`Topic.publish_nowait` cannot yield: its pass is
            whole unless a sliced pass is already running.

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
    fanout_slice: int = 500

    def __post_init__(self) -> None:
        _check_int("buffer_size", self.buffer_size, 1)
        _check_int("fanout_slice", self.fanout_slice, 1)
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


def check_bounds(options: TopicOptions, event: Event) -> None:
    """Refuse an event whose id or ``retry`` is over the topic's bounds."""
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
