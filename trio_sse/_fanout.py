"""Sliced fan-out: a large pass yields to other tasks between slices.

Theory of operation
-------------------

A topic's fan-out pass (Rule 1 of :mod:`trio_sse._topic`) calls each
subscriber's delivery function; on the raw server an idle subscriber's costs
one write system call, some microseconds. For 100,000 subscribers a single
synchronous pass would hold the event loop for a second. So
:meth:`Topic.deliver` (what :meth:`Topic.publish` ends in) serves at most
``TopicOptions.fanout_slice`` subscribers between two checkpoints.

Rule 1, members: the subscribers of an event are those registered when it was
recorded in the history, fixed then (a snapshot of the dict's keys and
functions, with the topic's count of dict writes, ``_changes``). One that
leaves during the pass is skipped (it is no longer in the topic's dict, so
the pass never sees a closed channel); one that arrives during the pass is
not a member: its resume snapshot already holds the event, or its position is
past it. No gap, no duplicate, as with one synchronous pass. While the count
is unchanged the snapshot's functions are the dict's, and the pass calls them
as they are; once any subscriber's entry has been written (it joined, left
or changed mode), the pass looks each remaining member up again. The topic
keeps its snapshot (``_members``) for the next event until an entry is
written, which drops it: a steady topic builds none per event, and touches
each member once per event, in its pass.

Rule 2, order: one sliced pass at a time per topic, in the order events were
recorded. While a pass runs, :meth:`Topic.deliver_nowait` records its event
and appends it (with its members) to the topic's *later* queue, which the
running pass serves next; another :meth:`Topic.deliver` waits before
recording its event until the pass is over. So every subscriber receives a
topic's events in the order of their ids, whichever way they were published.

Rule 3, the slices are shielded: the checkpoints between slices are
``cancel_shielded_checkpoint``, so a cancelled publisher still completes the
pass of an event already recorded. Overflow is handled per slice, with the
topic's policy, exactly as after a whole pass; ``block`` waiters are
collected over all slices and waited for at the end, as before.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from itertools import islice
from typing import TYPE_CHECKING, Any, Protocol

import trio

from ._options import OverflowPolicy

if TYPE_CHECKING:
    from ._history import Entry
    from ._options import TopicOptions

#: A subscriber's key in its topic (a ``_delivery.Delivery``).
Delivery = Any
#: A subscriber's delivery function, and an event's members (Rule 1).
Send = Callable[["Entry[Any]"], None]
Members = tuple[list[Delivery], list[Send]]

__all__ = ["defer", "overflow", "pass_sliced", "wait_turn"]


class FanTopic(Protocol):
    """What a pass needs of its topic (``_topic.Topic``; named here, not imported)."""

    @property
    def options(self) -> TopicOptions: ...

    _subscribers: dict[Delivery, Send]
    _changes: int
    _members: Members | None
    _delivered: int
    _fanning: bool
    _later: deque[tuple[Entry[Any], Members, int]] | None
    _fan_lot: trio.lowlevel.ParkingLot | None
    _policy: OverflowPolicy


async def wait_turn(topic: FanTopic) -> None:
    """Wait until no sliced pass runs on ``topic`` (Rule 2); a checkpoint if none."""
    while topic._fanning:
        lot = topic._fan_lot
        if lot is None:
            lot = topic._fan_lot = trio.lowlevel.ParkingLot()
        await lot.park()


def defer(topic: FanTopic, entry: Entry[Any]) -> None:
    """Queue ``entry`` behind the running pass, with its members (Rules 1, 2)."""
    later = topic._later
    if later is None:
        later = topic._later = deque()
    later.append((entry, snapshot(topic), topic._changes))


def snapshot(topic: FanTopic) -> Members:
    """The topic's subscribers and their functions, now (Rule 1); kept until they change.

    Two lists rather than a list of pairs: a pair per subscriber would be
    10,000 objects for the cyclic GC to track at 10,000 streams. Nobody
    changes the lists: passes share them.
    """
    members = topic._members
    if members is None:
        subscribers = topic._subscribers
        members = topic._members = (list(subscribers), list(subscribers.values()))
    return members


async def pass_sliced(topic: FanTopic, entry: Entry[Any]) -> list[Delivery] | None:
    """Fan ``entry`` out in slices, then whatever was deferred meanwhile.

    Returns:
        The ``block`` waiters of ``entry`` (``None``: none).

    """
    topic._fanning = True
    try:
        waiting = await _slices(topic, entry, snapshot(topic), topic._changes, may_wait=True)
        later = topic._later
        while later:
            deferred, deferred_members, changes = later.popleft()
            await trio.lowlevel.cancel_shielded_checkpoint()
            await _slices(topic, deferred, deferred_members, changes, may_wait=False)
        topic._later = None
    finally:
        topic._fanning = False
        if topic._fan_lot is not None:
            topic._fan_lot.unpark_all()
    return waiting


async def _slices(
    topic: FanTopic, entry: Entry[Any], members: Members, changes: int, *, may_wait: bool
) -> list[Delivery] | None:
    size = topic.options.fanout_slice
    subscribers = topic._subscribers
    waiting: list[Delivery] | None = None
    subs, sends = members
    total = len(subs)
    # One iterator over the pass, sliced as it goes: no copy of the lists.
    # zip reuses its pair while the loop holds none: nothing allocated per member.
    pairs = zip(subs, sends, strict=True)
    for start in range(0, total, size):
        if start:
            # Rule 3: yield between slices, but the pass goes on.
            await trio.lowlevel.cancel_shielded_checkpoint()
        slow: list[Delivery] | None = None
        served = min(start + size, total) - start
        for sub, send in islice(pairs, size):
            if topic._changes != changes:  # Rule 1: look it up again
                current = subscribers.get(sub)
                if current is None:  # left during the pass
                    served -= 1
                    continue
                send = current
            try:
                send(entry)
            except trio.WouldBlock:
                if slow is None:
                    slow = [sub]
                else:
                    slow.append(sub)
        if slow is None:
            topic._delivered += served
            continue
        topic._delivered += served - len(slow)
        more = overflow(topic, entry, slow, may_wait=may_wait)
        if more:
            waiting = more if waiting is None else waiting + more
    return waiting


def overflow(
    topic: FanTopic, entry: Entry[Any], slow: list[Delivery], *, may_wait: bool
) -> list[Delivery] | None:
    """Apply the topic's overflow policy to the subscribers whose queue was full.

    Returns:
        The ``block`` waiters (``None``: none).

    """
    policy = topic._policy
    waiting: list[Delivery] | None = None
    for sub in slow:
        if policy is OverflowPolicy.BLOCK and may_wait:
            sub._backlog_append(entry)
            if waiting is None:
                waiting = [sub]
            else:
                waiting.append(sub)
        elif policy is OverflowPolicy.DROP_OLDEST and sub._drop_oldest_and_send(entry):
            topic._delivered += 1
        else:
            sub._end("evicted", topic)
    return waiting
