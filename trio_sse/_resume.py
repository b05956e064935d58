"""Where a subscription starts: resets, replay and composite ids (no trio).

Theory of operation
===================

A :class:`Resume` is computed when a subscription is entered, in the same
synchronous step that registers it (Rule 2 of :mod:`trio_sse._topic`): it
reads every topic's history after the client's resume point and decides what
the subscription yields before live events.

Rule 1: every topic is answered. A position that is the topic's newest id
replays nothing; one in the history replays the events after it; any other
position (unknown, expired, another epoch) yields the topic's reset event,
with the topic's newest id so that the next reconnect resumes from here.

Rule 1b: a topic without a resume point (a fresh subscriber, or a topic the
client's composite cursor leaves out) starts where the topic stood when the
subscription was *created* (``since``: the topic's count of events and newest
id then), not when it is entered: the events recorded in between, still in the
history, are replayed. A server creates the subscription before it sends the
response head, and enters it after, so a client that publishes as soon as its
stream opens still receives that event. No reset for what the history no
longer holds: the client never had those events' predecessors either.

Rule 2: what the local history cannot answer, the backplane's remote history
may (Rule 4 of :mod:`trio_sse._backplane`). Those topics are listed in
:attr:`Resume.remote` as (topic, client's id, boundary id); the subscription
fetches them after registering and hands them to :meth:`Resume.finish`.

Rule 3: several topics merge into one stream. Each event's id becomes a
composite cursor (:mod:`trio_sse._cursor`) holding every topic's position;
:class:`Merge` keeps those positions and rewrites each event as the
subscriber receives it. Replays of several topics are merged in publish
order (the broker's sequence, or the backplane's time order for remote ones).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, final

from ._cursor import escape, parse_cursor, with_id
from ._event import Event
from ._history import Entry

if TYPE_CHECKING:
    from ._topic import Topic

__all__ = ["Fetched", "Merge", "Resume", "Since"]

#: (topic, client's id, boundary id, events or None for "reset").
Fetched = tuple["Topic", str, str, "list[Event] | None"]
#: Per topic, its count of recorded events and its newest id when the
#: subscription was created (Rule 1b).
Since = tuple[tuple[int, "str | None"], ...]


def _entries_since(topic: Topic, seq: int) -> list[Entry[Topic]]:
    """The history entries recorded after the topic's *seq*-th event (Rule 1b)."""
    return topic._history.entries_since(seq, topic._now()) if seq < topic._seq else []


def _by_gseq(entry: Entry[Topic]) -> int:
    return entry.gseq


@final
class Merge:
    """Composite-cursor state of a multi-topic subscription."""

    __slots__ = ("parts", "slots")

    def __init__(self, topics: tuple[Topic, ...], parts: list[str]) -> None:
        self.slots = {topic: i for i, topic in enumerate(topics)}
        self.parts = parts

    def convert(self, entry: Entry[Topic]) -> Event:
        """The entry's event with its composite id at this subscriber's positions."""
        part = entry.part
        if part is None:
            event_id = entry.event.id
            assert event_id is not None
            part = entry.part = entry.topic._cursor_prefix + escape(event_id)
        parts = self.parts
        parts[self.slots[entry.topic]] = part
        key = ",".join(parts)
        # One-slot cache: subscribers at the same positions (the common case)
        # share one rewritten event, so it is encoded once.
        if entry.variant_key == key:
            variant = entry.variant
            assert variant is not None
            return variant
        variant = with_id(entry.event, key)
        entry.variant_key = key
        entry.variant = variant
        return variant


@final
class Resume:
    """What a subscription yields before live events, and where it stands.

    Args:
        topics: the subscribed topics, in cursor order.
        cursor: the client's ``Last-Event-ID`` (``None``: fresh).
        merged: whether ids are composite cursors (:meth:`Broker.subscribe_many`).
        since: where each topic stood when the subscription was created (Rule 1b).

    Attributes:
        pending: the reset events and replayed events, in order.
        position: the resume point before any event is yielded.
        merge: the composite-cursor state, for merged subscriptions.
        remote: topics to fetch from the remote history (Rule 2).
        reset: whether some topic's position was unknown.
        replayed: how many history events are replayed.
    """

    __slots__ = ("_plan", "_topics", "merge", "pending", "position", "remote", "replayed", "reset")

    def __init__(
        self,
        topics: tuple[Topic, ...],
        cursor: str | None,
        *,
        merged: bool,
        since: Since,
    ) -> None:
        self._topics = topics
        self.pending: deque[Event] = deque()
        self.position: str | None = None
        self.merge: Merge | None = None
        self.remote: list[tuple[Topic, str, str]] = []
        self.reset = False
        self.replayed = 0
        self._plan: list[list[Entry[Topic]] | None] = []
        if merged:
            self._plan_merged(cursor, since)
        else:
            self._plan_single(cursor, since[0])

    def _plan_single(self, last_id: str | None, since: tuple[int, str | None]) -> None:
        topic = self._topics[0]
        if last_id is None:  # Rule 1b
            caught_up = _entries_since(topic, since[0])
            self.pending.extend(e.event for e in caught_up)
            self._count_replay(topic, len(caught_up))
            self.position = since[1] if caught_up else topic._last_id
            return
        entries = topic._entries_after(last_id)
        if entries is None and topic._remote_replayable(last_id):
            assert topic._last_id is not None  # wait_ready() made sure
            self.remote.append((topic, last_id, topic._last_id))
            return
        if entries is None:
            self._reset_topic(topic)
            self.position = topic._last_id
            return
        self.pending.extend(e.event for e in entries)
        self._count_replay(topic, len(entries))
        self.position = entries[-1].event.id if entries else last_id

    def _plan_merged(self, cursor: str | None, since: Since) -> None:
        topics = self._topics
        positions = parse_cursor(cursor) if cursor is not None else {}
        plan = self._plan
        parts: list[str] = []
        for topic, (seq, since_id) in zip(topics, since, strict=True):
            if positions is None:
                position: str | None = None  # invalid cursor: reset everything
                entries = None
            else:
                position = positions.get(topic.name)
                if position is None:  # Rule 1b
                    caught_up = _entries_since(topic, seq)
                    plan.append(caught_up)
                    position = since_id if caught_up else topic._last_id
                    parts.append(topic._cursor_prefix + escape(position or ""))
                    continue
                entries = topic._entries_after(position)
            if entries is None and position is not None and topic._remote_replayable(position):
                assert topic._last_id is not None  # wait_ready() made sure
                self.remote.append((topic, position, topic._last_id))
                entries = []  # filled in by finish()
            plan.append(entries)
            if entries is None or position is None:  # reset or fresh: live from the newest
                position = topic._last_id or ""
            parts.append(topic._cursor_prefix + escape(position))
        self.merge = Merge(topics, parts)

    def finish(self, fetched: Iterable[Fetched], *, active: bool) -> None:
        """Add the remotely fetched replays (Rule 2).

        Args:
            fetched: one item per :attr:`remote` topic.
            active: whether the subscription is still registered; an evicted
                one ends anyway, so nothing is added.
        """
        if self.merge is not None:
            self._finish_merged(self.merge, fetched, active=active)
            return
        for topic, after, until, events in fetched:
            if not active:
                return
            if events is None:
                self._reset_topic(topic, position=until)
                self.position = until
            else:
                self.pending.extend(events)
                self._count_replay(topic, len(events))
                self.position = events[-1].id if events else after

    def _finish_merged(self, merge: Merge, fetched: Iterable[Fetched], *, active: bool) -> None:
        plan = self._plan
        self._plan = []
        topics = self._topics
        remote = False
        for topic, _after, until, events in fetched:
            slot = merge.slots[topic]
            remote = True
            if events is None:
                plan[slot] = None
                merge.parts[slot] = topic._cursor_prefix + escape(until)
            else:
                plan[slot] = [Entry(event, 0, 0, 0.0, topic) for event in events]
        self.position = ",".join(merge.parts)
        if not active:
            return
        replays: list[list[Entry[Topic]]] = []
        for topic, entries in zip(topics, plan, strict=True):
            if entries is None:
                self._reset_topic(topic, merge)
            elif entries:
                replays.append(entries)
                self._count_replay(topic, len(entries))
        if not replays:
            return
        if len(replays) == 1:
            ordered: Iterable[Entry[Topic]] = replays[0]
        elif remote:
            # Remote events have no broker sequence: order by publish time.
            history = topics[0].broker.backplane.remote_history
            assert history is not None
            order = history.order_key

            def by_time(entry: Entry[Topic]) -> tuple[int, int]:
                event_id = entry.event.id
                assert event_id is not None
                return order(event_id)

            ordered = heapq.merge(*replays, key=by_time)
        else:
            ordered = heapq.merge(*replays, key=_by_gseq)
        self.pending.extend(merge.convert(e) for e in ordered)

    def _reset_topic(
        self, topic: Topic, merge: Merge | None = None, *, position: str | None = None
    ) -> None:
        self.reset = True
        topic._resets += 1
        if merge is None:
            self.pending.append(topic._reset_for_position(position))
        else:
            self.pending.append(with_id(topic._reset_event, ",".join(merge.parts)))

    def _count_replay(self, topic: Topic, n: int) -> None:
        self.replayed += n
        topic._replayed += n
