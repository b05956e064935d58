"""The backplane: where published events go before subscribers see them.

Theory of operation: a :class:`~trio_sse.Broker` never fans an event out
directly. ``Topic.publish`` hands the event to the broker's backplane, which
does two things:

Rule 1: the backplane decides the event's id. Locally that is a per-topic
counter; with Redis Streams it would be the id ``XADD`` returns, so that every
process agrees on ids and a browser can resume against any of them.

Rule 2: the backplane calls :meth:`Topic.deliver_nowait` /
:meth:`Topic.deliver` on every broker that shares it, with the event as it
will be sent (id included). Delivery is purely local: history, overflow
policies and subscriber channels live in the process that serves the
connection, so subscribers only ever see local memory channels.

:class:`LocalBackplane` does both in-process and synchronously, which is why
``publish_nowait`` can return the event with its id. A networked backplane
would publish in ``publish`` (awaiting the round trip for the id) and run a
reader task that delivers what every process published, including its own
events; its ``publish_nowait`` may raise :class:`trio.WouldBlock` if it cannot
accept an event without waiting (:class:`~trio_sse.RedisBackplane`).

Rule 3: ids carry an epoch. An id means something only to the run (local) or
the stream incarnation (Redis) that assigned it; a browser that comes back with
an id from another epoch gets the topic's reset event, never a silent replay
of unrelated events that happen to share its number.

Rule 4: a backplane may keep history that outlives the process (Redis keeps
the stream). Its :attr:`Backplane.remote_history` then lets a subscription
resume from an id older than the local history: the subscription registers
first (fixing the boundary between history and live events), then fetches the
events between the client's id and that boundary, so the hand-off has no gap
and no duplicate.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Protocol, final

from ._event import Event

if TYPE_CHECKING:
    from ._topics import Broker, Topic

__all__ = ["Backplane", "LocalBackplane", "RemoteHistory"]


def new_epoch() -> str:
    """A fresh epoch: 8 random hex digits, distinct across runs in practice."""
    return secrets.token_hex(4)


def _with_id(event: Event, event_id: str) -> Event:
    """Return a copy of *event* with another id (events are immutable).

    Spelled out rather than ``dataclasses.replace``: it is on the publish path
    and cheaper, and it does not depend on how :class:`Event` stores its
    cached encodings. tests/test_topics.py fails if Event grows a field.
    """
    return Event(
        data=event.data, event=event.event, id=event_id, retry=event.retry, comment=event.comment
    )


class RemoteHistory(Protocol):
    """History kept by a backplane beyond the process (see Rule 4).

    Used by :class:`~trio_sse.Subscription` only; applications never call it.
    """

    async def wait_ready(self, topic: Topic, position: str | None) -> None:
        """Wait until *topic*'s boundary (its newest id) is known locally.

        With the client's *position*, also wait (briefly) until the local
        boundary has reached it: a client coming from a process that is a
        few milliseconds ahead must not be reset for it.
        """
        ...

    def replayable(self, topic: Topic, event_id: str) -> bool:
        """Whether *event_id* could be resumed from the remote history."""
        ...

    async def replay(self, topic: Topic, after: str, until: str) -> list[Event] | None:
        """The events after *after* up to and including *until*.

        Returns ``None`` when *after* is no longer (or never was) in the
        remote history: the subscriber then gets the topic's reset event.
        """
        ...

    def order_key(self, event_id: str) -> tuple[int, int]:
        """Sort key that orders events of different topics by publish time."""
        ...


class Backplane(Protocol):
    """Carries published events to subscribers, assigning their ids.

    Implementations must hand every event to :meth:`Topic.deliver_nowait` or
    :meth:`Topic.deliver` of the topic of that name, on every broker sharing
    the backplane, exactly once and in one order per topic; ids must be
    unique within a topic and non-empty, and should be increasing so that
    clients can reason about them. See ``docs/topics.md``, "Backplanes".
    """

    @property
    def cross_process(self) -> bool:
        """Whether processes sharing this backplane's engine see each other's events.

        ``trio-sse serve --workers N`` (N > 1) refuses to start while the app
        has a broker whose backplane says ``False``.
        """
        ...

    @property
    def remote_history(self) -> RemoteHistory | None:
        """History beyond the process, or ``None`` (see Rule 4)."""
        ...

    def attach(self, broker: Broker) -> None:
        """Called once by every :class:`~trio_sse.Broker` created on this backplane."""
        ...

    def topic_added(self, topic: Topic) -> None:
        """Called when an attached broker creates *topic*."""
        ...

    def publish_nowait(self, topic: Topic, event: Event) -> Event:
        """Publish *event* on *topic* without blocking.

        Args:
            topic: the local topic the event was published on.
            event: the event; an event without an id (``None`` or ``""``)
                gets one from the backplane.

        Returns:
            The event as published, with its id, or without one when the id
            is assigned remotely and not known yet.

        Raises:
            trio.WouldBlock: the backplane cannot accept the event without
                waiting (never raised by :class:`LocalBackplane`).
            trio.ClosedResourceError: the topic is closed.
        """
        ...

    async def publish(self, topic: Topic, event: Event) -> Event:
        """Publish *event* on *topic*, waiting if the backplane or topic needs to.

        Args:
            topic: the local topic the event was published on.
            event: the event; an event without an id gets one.

        Returns:
            The event as published, with its id.

        Raises:
            trio.ClosedResourceError: the topic is closed.
        """
        ...


@final
class LocalBackplane:
    """The in-process backplane: a counter per topic name, direct delivery.

    Ids are ``f"{id_prefix}{n}"`` with ``n`` = 1, 2, 3, … per topic name. They
    keep counting if a topic is closed and created again, so a cursor from
    before the close can never match a new event.

    Args:
        id_prefix: prepended to every assigned id. By default it is the
            backplane's *epoch*, 8 random hex digits and a dash, new for every
            backplane (so for every process start): ids look like
            ``3f9a0c1e-57``. A browser that comes back after a restart with
            ``Last-Event-ID: 3f9a0c1e-57`` then gets the topic's reset event
            instead of silently resuming at the new run's event 57. Pass
            ``""`` for bare numbers (tests, or ids that must survive
            restarts by other means). Must not contain CR, LF or NUL.

    Attributes:
        id_prefix: the prefix in use.
    """

    __slots__ = ("_counters", "_prefix")

    #: Topics live in one process: see :attr:`Backplane.cross_process`.
    cross_process = False

    def __init__(self, *, id_prefix: str | None = None) -> None:
        if id_prefix is None:
            id_prefix = new_epoch() + "-"
        if not isinstance(id_prefix, str):
            raise TypeError(f"id_prefix must be a str, got {type(id_prefix).__name__}")
        Event(id=id_prefix)  # validates: no CR, LF or NUL
        self._prefix = id_prefix
        self._counters: dict[str, int] = {}

    @property
    def id_prefix(self) -> str:
        """The prefix of every id this backplane assigns (its epoch)."""
        return self._prefix

    @property
    def remote_history(self) -> None:
        """Always ``None``: the history lives in the topics only."""
        return None

    def attach(self, broker: Broker) -> None:
        """Nothing to do: delivery is direct."""

    def topic_added(self, topic: Topic) -> None:
        """Nothing to do: delivery is direct."""

    def _assign(self, topic: Topic, event: Event) -> Event:
        if event.id:
            return event
        name = topic.name
        n = self._counters.get(name, 0) + 1
        self._counters[name] = n
        return _with_id(event, f"{self._prefix}{n}")

    def publish_nowait(self, topic: Topic, event: Event) -> Event:
        """Assign an id if needed and deliver to *topic* at once.

        See :meth:`Backplane.publish_nowait`.
        """
        topic._check_open()
        event = self._assign(topic, event)
        topic.deliver_nowait(event)
        return event

    async def publish(self, topic: Topic, event: Event) -> Event:
        """Assign an id if needed and deliver to *topic*.

        See :meth:`Backplane.publish`; waits only under the ``block`` policy.
        """
        topic._check_open()
        event = self._assign(topic, event)
        await topic.deliver(event)
        return event
