"""The broker: named topics, their defaults and their backplane.

Strategy: a :class:`Broker` is a dict of :class:`~trio_sse.Topic` objects by
name plus the :class:`~trio_sse.Backplane` every publish goes through (Rule 2
of :mod:`trio_sse._backplane`: the backplane assigns ids and delivers). It
holds no events itself; the broker-wide sequence ``_gseq`` orders events of
several topics for merged subscriptions (:mod:`trio_sse._resume`).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, final

import trio

from ._backplane import LocalBackplane
from ._event import Event
from ._options import TopicOptions, TopicStats
from ._subscription import Subscription
from ._topic import Topic

if TYPE_CHECKING:
    from ._backplane import Backplane

__all__ = ["Broker"]


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
                earlier stream. ``None``: the events published since this
                call (still in the histories), then live ones. Each topic in it
                resumes exactly like :meth:`Topic.subscribe`; a topic whose
                position is unknown or expired yields its reset event (all of
                them first, then the merged replay); topics missing from the
                cursor start as if fresh; a malformed cursor resets every topic.

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
