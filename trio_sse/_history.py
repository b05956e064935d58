"""A topic's replay history: bounded by count and age (sans-IO, no trio).

Strategy: the history is a deque of :class:`Entry` objects, oldest first,
plus a dict from event id to entry for resuming. Both bounds are applied when
an entry is added and before every lookup; the caller passes the current time
(the topic reads :func:`trio.current_time`, so autojump clocks work, and tests
here pass plain numbers).

Rule 1: an entry is the unit everything shares. The same object is the history
item and the item queued in every subscriber's channel, so a publish allocates
one entry whatever the number of subscribers; multi-topic subscriptions cache
their rewritten event on it (``part`` / ``variant_key`` / ``variant``).

Rule 2: a resume point is answered exactly or not at all. :meth:`entries_after`
returns every entry after a known id, or ``None`` when the id is unknown or
expired, so that the topic sends its reset event instead of a silent gap.
The empty id means "before the first event": answerable only while nothing has
ever left the history.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar, final

from ._event import Event

__all__ = ["Entry", "History"]

#: The entry's owner: the topic it was published on.
T = TypeVar("T")


@final
class Entry(Generic[T]):
    """One published event as it travels: history item and channel item."""

    __slots__ = ("event", "gseq", "part", "seq", "time", "topic", "variant", "variant_key")

    def __init__(self, event: Event, seq: int, gseq: int, time: float, topic: T) -> None:
        self.event = event
        self.seq = seq  # per topic, contiguous
        self.gseq = gseq  # per broker: orders events of several topics
        self.time = time  # trio.current_time() when recorded (0.0: a replayed copy)
        self.topic = topic
        # Composite-cursor cache (multi-topic subscriptions only).
        self.part: str | None = None
        self.variant_key: str | None = None
        self.variant: Event | None = None


@final
class History(Generic[T]):
    """Entries kept for replay, bounded by *size* and by *max_age* seconds.

    Args:
        size: the most entries kept (0: none; only the newest id resumes).
        max_age: if set, entries older than this many seconds are dropped.
    """

    __slots__ = ("_entries", "_index", "max_age", "size", "trimmed")

    def __init__(self, size: int, max_age: float | None) -> None:
        self.size = size
        self.max_age = max_age
        self._entries: deque[Entry[T]] = deque()
        self._index: dict[str, Entry[T]] = {}
        #: Whether any entry ever left (or skipped) the history.
        self.trimmed = False

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, entry: Entry[T], now: float) -> None:
        """Keep *entry* (its event has an id), then apply the bounds."""
        if not self.size:
            self.trimmed = True
            return
        event_id = entry.event.id
        assert event_id is not None
        self._entries.append(entry)
        self._index[event_id] = entry
        self.trim(now)

    def trim(self, now: float) -> None:
        """Drop entries beyond the count, then those older than ``now - max_age``."""
        history = self._entries
        excess = len(history) - self.size
        while excess > 0:
            self._forget(history.popleft())
            excess -= 1
        max_age = self.max_age
        if max_age is not None and history:
            cutoff = now - max_age
            while history and history[0].time < cutoff:
                self._forget(history.popleft())

    def _forget(self, entry: Entry[T]) -> None:
        self.trimmed = True
        event_id = entry.event.id
        assert event_id is not None
        # With duplicate ids the index points at the newest: keep that one.
        index = self._index
        if index.get(event_id) is entry:
            del index[event_id]

    def clear(self) -> None:
        """Forget every entry, as if all had expired."""
        self._entries.clear()
        self._index.clear()
        self.trimmed = True

    def entries_since(self, seq: int, now: float) -> list[Entry[T]]:
        """The entries kept of those recorded after the topic's *seq*-th, oldest first."""
        self.trim(now)
        after: list[Entry[T]] = []
        for entry in reversed(self._entries):
            if entry.seq <= seq:
                break
            after.append(entry)
        after.reverse()
        return after

    def entries_after(self, last_event_id: str, now: float) -> list[Entry[T]] | None:
        """The entries after *last_event_id*, or ``None`` if it cannot be resumed.

        The caller answers its newest id itself (nothing to replay), since
        that id may be known without being in the history.
        """
        self.trim(now)
        if last_event_id == "":
            # Composite cursors use "" for "before this topic's first event".
            return None if self.trimmed else list(self._entries)
        start = self._index.get(last_event_id)
        if start is None:
            return None
        return self.entries_since(start.seq, now)
