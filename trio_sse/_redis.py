"""The Redis Streams backplane: topics shared by every process and host.

Theory of operation
===================

One Redis stream per topic (``trio-sse:{name}``, see
:mod:`trio_sse._redis_streams` for keys, ids and the entry format). Every
process runs the backplane's tasks in one nursery (:meth:`RedisBackplane.run`):

Rule 1: publishing is ``XADD`` through one writer task. ``publish`` and
``publish_nowait`` append to a bounded outbox; the writer sends everything
queued as one pipeline, so many publishers cost one round trip. The first
entry of each topic in a pipeline goes through a small Lua script that also
reads (or creates) the topic's epoch and tags the entry with it; the others
are plain ``XADD``. Streams are trimmed as they grow: ``MAXLEN ~`` to the
topic's ``history_size`` (at least ``stream_min_length``), or ``MINID ~`` to
``history_max_age`` when that is set.

Rule 2: delivery is one reader loop per process (one per cluster slot in use),
``XREAD BLOCK`` over every topic of the attached brokers, from the last id it
delivered. Each entry becomes an event with the id ``{epoch}-{stream id}`` and
goes through :meth:`Topic.deliver_nowait` (``deliver`` under ``block``), so
history, overflow policies, eviction and direct writes work exactly as with
the in-process backplane. A process sees its own events the same way as
everyone else's: one order per topic, the stream's.

Rule 3: before a topic is read, the backplane learns its epoch and newest id
(its *boundary*); subscriptions wait for that (:meth:`wait_ready`). Resuming
from an id older than the local history reads ``XRANGE`` from that id to the
boundary (:meth:`replay`); the id must still be in the stream, else the
client gets the topic's reset event.

Rule 4: failures are visible and never silent. While Redis is unreachable,
open streams stay open (heartbeats go on), publishing raises
:class:`~trio_sse.BackplaneUnavailableError`, and one recovery task retries
with jittered, capped backoff. On reconnecting it checks every topic: same
epoch and the stream at or past the last delivered id -> reading resumes
where it stopped, nothing lost or repeated; the epoch key gone (Redis lost its
data) or the stream behind what was delivered -> a new epoch, and every local
subscriber receives the topic's reset event as a live event.

The pieces: :mod:`._redis_streams` (sans-IO: keys, ids, the entry format,
epoch records and their Lua scripts), :mod:`._redis_client` (the settings'
checks and the coredis client), :mod:`._redis_link` (the connection
state everyone agrees on), :mod:`._redis_writer` (Rule 1),
:mod:`._redis_reader` (Rules 2-4, with :mod:`._redis_watch` for the
per-topic state and :mod:`._redis_replay` for the exact history read); this
module is the public face.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, final

import trio

from ._errors import unwrap_groups
from ._event import Event
from ._redis_client import check_settings, redis_client, require_coredis
from ._redis_link import Link
from ._redis_reader import Reader
from ._redis_streams import order_key
from ._redis_writer import Writer

if TYPE_CHECKING:
    from ._broker import Broker
    from ._topic import Topic

__all__ = ["BackplaneStats", "RedisBackplane"]


@final
@dataclass(frozen=True, slots=True)
class BackplaneStats:
    """A snapshot of a :class:`RedisBackplane`'s health, from :meth:`RedisBackplane.stats`.

    Attributes:
        connected: whether Redis answers; ``False`` while publishing fails.
        running: whether :meth:`RedisBackplane.run` is running.
        reconnects: connections lost (and recovered or being recovered).
        last_error: the newest connection error, as text.
        published: events this process added to streams.
        publish_errors: events this process failed to publish.
        outbox: events queued for the writer now.
        received: stream entries the reader delivered to local topics.
        malformed: entries skipped because they cannot be events.
        epoch_resets: topics whose data Redis lost (each sent a reset).
        gaps: times the reader fell more than a stream's length behind and
            reset that topic's subscribers.
        topics: topics being read.
        lag: seconds from an entry's creation (its stream id's time, Redis'
            clock) to its local delivery, for the newest entry; ``None``
            before the first.
        last_read_age: seconds since the reader last heard from Redis (an
            entry or an empty ``XREAD BLOCK``); ``None`` before the first.
    """

    connected: bool
    running: bool
    reconnects: int
    last_error: str | None
    published: int
    publish_errors: int
    outbox: int
    received: int
    malformed: int
    epoch_resets: int
    gaps: int
    topics: int
    lag: float | None
    last_read_age: float | None


@final
class RedisBackplane:
    """Topics shared through Redis Streams by every process and host.

    Give it to every :class:`~trio_sse.Broker` (one per process is usual)
    and run it for the life of the app, e.g. as a background task::

        backplane = RedisBackplane("redis://127.0.0.1:6379")
        broker = Broker(backplane=backplane)
        app = App()
        app.background(backplane.run)

    Needs ``coredis`` (``pip install 'trio-sse[redis]'``). See
    ``docs/scaling.md`` for the design, failure behaviour and metrics.

    Args:
        url: the Redis server, ``redis://[user:password@]host:port/db`` (or
            ``rediss://`` for TLS). With ``cluster=True``, any node of the
            cluster.
        cluster: connect to a Redis Cluster (keys spread over slots: one
            ``XREAD`` loop per slot in use).
        key_prefix: prepended to every key; must not contain ``{`` or ``}``.
        outbox_size: events queued for the writer at most; beyond it
            :meth:`publish_nowait` raises :class:`trio.WouldBlock` and
            :meth:`publish` waits.
        max_batch: events sent in one pipeline at most.
        read_count: entries read per stream per ``XREAD`` at most. They are
            delivered in one synchronous burst, as if published without an
            await in between: keep it below the topics' ``buffer_size`` so
            that a burst cannot overflow subscribers that keep up.
        read_block: seconds one ``XREAD BLOCK`` waits for entries; a read that
            takes ``command_timeout`` longer than this counts as a lost
            connection.
        stream_min_length: streams are never trimmed below this many entries,
            even for topics with a smaller ``history_size``, so that a reader
            that falls behind a burst still finds its entries. A reader that
            falls further behind resets that topic's subscribers (counted in
            ``gaps``) instead of skipping events silently. Resuming replays
            at most ``history_size`` events whatever the stream holds.
        reconnect_delay: first delay (s) before reconnecting; doubles up to
            *reconnect_max_delay*, each delay jittered by ±50 %.
        reconnect_max_delay: the longest delay between reconnection attempts.
        command_timeout: seconds one exchange with Redis (a pipeline, a page
            of a replay, the checks after a reconnect) may take; a server
            that stops answering without closing the connection (frozen,
            partitioned) then counts as unreachable, like one that refuses.
        max_entry_size: a stream entry whose fields add up to more bytes is
            skipped (counted as ``malformed``): another producer must not make
            every process push a huge event to every subscriber. Publishing
            such an event here raises :class:`ValueError`.
        retry_after: the ``Retry-After`` (s) that
            :func:`~trio_sse.publish_endpoint` sends with a ``503`` while
            Redis is unreachable.

    Raises:
        ModuleNotFoundError: ``coredis`` is not installed.
        ValueError: a setting is out of range.
    """

    #: Every process sharing the Redis server sees every event.
    cross_process = True

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379",
        *,
        cluster: bool = False,
        key_prefix: str = "trio-sse:",
        outbox_size: int = 10_000,
        max_batch: int = 1_000,
        read_count: int = 32,
        read_block: float = 1.0,
        stream_min_length: int = 10_000,
        reconnect_delay: float = 0.1,
        reconnect_max_delay: float = 5.0,
        command_timeout: float = 5.0,
        max_entry_size: int = 1 << 20,
        retry_after: int = 1,
    ) -> None:
        require_coredis()
        check_settings(
            key_prefix=key_prefix,
            integers={
                "outbox_size": outbox_size,
                "max_batch": max_batch,
                "read_count": read_count,
                "stream_min_length": stream_min_length,
                "retry_after": retry_after,
                "max_entry_size": max_entry_size,
            },
            numbers={
                "read_block": read_block,
                "reconnect_delay": reconnect_delay,
                "reconnect_max_delay": reconnect_max_delay,
                "command_timeout": command_timeout,
            },
        )
        self.url: Final = url
        self.cluster: Final = cluster
        self.key_prefix: Final = key_prefix
        self.outbox_size: Final = outbox_size
        self.max_batch: Final = max_batch
        self.read_count: Final = read_count
        self.read_block: Final = read_block
        self.stream_min_length: Final = stream_min_length
        self.reconnect_delay: Final = reconnect_delay
        self.reconnect_max_delay: Final = reconnect_max_delay
        self.command_timeout: Final = command_timeout
        self.max_entry_size: Final = max_entry_size
        self.retry_after: Final = retry_after
        self._link = Link(
            redis_client(url, cluster=cluster),
            reconnect_delay=reconnect_delay,
            reconnect_max_delay=reconnect_max_delay,
            command_timeout=command_timeout,
        )
        self._writer = Writer(
            self._link,
            key_prefix=key_prefix,
            cluster=cluster,
            outbox_size=outbox_size,
            max_batch=max_batch,
            stream_min_length=stream_min_length,
            max_entry_size=max_entry_size,
        )
        self._reader = Reader(
            self._link,
            key_prefix=key_prefix,
            cluster=cluster,
            read_count=read_count,
            read_block=read_block,
            max_entry_size=max_entry_size,
        )

    def __repr__(self) -> str:
        state = "connected" if self._link.connected else "disconnected"
        return f"<RedisBackplane {self.url!r} {state} topics={len(self._reader.watches)}>"

    # -- Backplane protocol ------------------------------------------------------

    @property
    def remote_history(self) -> RedisBackplane:
        """This backplane: streams keep history beyond the process."""
        return self

    @property
    def connected(self) -> bool:
        """Whether Redis answers (publishing works) right now."""
        return self._link.connected

    def attach(self, broker: Broker) -> None:
        """Deliver to *broker*'s topics too (called by :class:`~trio_sse.Broker`)."""
        self._reader.brokers.append(broker)
        for topic in broker.topics.values():  # pragma: no cover - brokers start empty
            self._reader.topic_added(topic)

    def topic_added(self, topic: Topic) -> None:
        """Start reading *topic*'s stream (called by :class:`~trio_sse.Broker`)."""
        self._reader.topic_added(topic)

    def publish_nowait(self, topic: Topic, event: Event) -> Event:
        """Queue *event* for the writer; return it **without** an id.

        The id is the stream entry id, known only when Redis answers: use
        :meth:`publish` when you need it. The event reaches subscribers (in
        every process, this one included) through the reader, like any
        other. If the connection breaks before the writer sends it, it is
        lost and counted in ``publish_errors``.

        Raises:
            BackplaneUnavailableError: Redis is unreachable now (nothing queued).
            trio.WouldBlock: the outbox holds ``outbox_size`` events.
            ValueError: the event has an id, or nothing to send.
            trio.ClosedResourceError: the topic is closed.
        """
        return self._writer.publish_nowait(topic, event)

    async def publish(self, topic: Topic, event: Event) -> Event:
        """Add *event* to *topic*'s stream; return it with its id.

        Waits for room in the outbox, then for Redis' answer (pipelined with
        every other event published meanwhile).

        Raises:
            BackplaneUnavailableError: Redis is unreachable (nothing was
                published), or the connection broke while the event was on
                its way (it may then be in the stream).
            ValueError: the event has an id, or nothing to send.
            trio.ClosedResourceError: the topic is closed.
        """
        return await self._writer.publish(topic, event)

    # -- RemoteHistory protocol ------------------------------------------------

    async def wait_ready(self, topic: Topic, position: str | None) -> None:
        """Wait until *topic*'s epoch and newest id are known (and reach *position*)."""
        await self._reader.wait_ready(topic, position)

    def replayable(self, topic: Topic, event_id: str) -> bool:
        """Whether *event_id* belongs to the stream's current epoch."""
        return self._reader.replayable(topic, event_id)

    def order_key(self, event_id: str) -> tuple[int, int]:
        """Stream ids order events by publish time across topics."""
        return order_key(event_id)

    async def replay(self, topic: Topic, after: str, until: str) -> list[Event] | None:
        """Read the events after *after* up to *until* from the stream.

        Returns ``None`` (the client gets a reset) when *after* is no longer
        in the stream, or more than the topic's ``history_size`` events would
        be replayed (the same bound as a resume from the local history).
        Waits through Redis outages: the client's disconnect cancels it.
        """
        return await self._reader.replay(topic, after, until)

    # -- running -----------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect and run the writer, the reader(s) and recovery until cancelled.

        Starts even while Redis is unreachable (retrying in the background);
        ``task_status.started()`` is called at once. Run it once, for the life
        of the app (``app.background(backplane.run)``).

        Raises:
            RuntimeError: it is already running.
        """
        link = self._link
        if link.running:
            raise RuntimeError("this RedisBackplane is already running")
        link.running = True
        try:
            # The client's context only sets up its pool; it connects lazily,
            # so entering it works while Redis is down. Every command's
            # connection error is handled by the task that sent it.
            with unwrap_groups():
                async with link.client, trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer.run)
                    nursery.start_soon(self._reader.run)
                    task_status.started()
        finally:
            link.running = False
            link.set_down("stopped")

    def stats(self) -> BackplaneStats:
        """Return a snapshot of the backplane's health and counters."""
        link, reader, writer = self._link, self._reader, self._writer
        age = None
        if link.running and reader.last_read is not None:
            age = trio.current_time() - reader.last_read
        return BackplaneStats(
            connected=link.connected,
            running=link.running,
            reconnects=link.reconnects,
            last_error=link.last_error,
            published=writer.published,
            publish_errors=writer.errors,
            outbox=len(writer.outbox),
            received=reader.received,
            malformed=reader.malformed,
            epoch_resets=reader.epoch_resets,
            gaps=reader.gaps,
            topics=len(reader.watches),
            lag=reader.lag,
            last_read_age=age,
        )
