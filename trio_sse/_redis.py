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
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, final

import trio

from ._backplane import _with_id, new_epoch
from ._errors import BackplaneUnavailableError
from ._event import Event
from ._redis_streams import (
    START,
    epoch_key,
    event_from_entry,
    fields_for,
    key_slot,
    order_key,
    split_id,
    stream_key,
    stream_order,
)
from ._topics import OverflowPolicy

if TYPE_CHECKING:
    from ._topics import Broker, Topic

__all__ = ["BackplaneStats", "RedisBackplane"]

logger = logging.getLogger("trio_sse.redis")

# Epoch records. The epoch key holds "<epoch> <start>": the epoch and the
# stream id before its first entry (the stream's newest id when the epoch was
# made, or the newest one a reader had delivered; "0-0" for none). Every
# process derives the reset position "<epoch>-<start>" from it, so they all
# send the same reset id.
_ENSURE: Final = """
local function ensure(ekey, skey, candidate, upto)
  local record = redis.call('GET', ekey)
  if record then return record end
  local newest = redis.call('XREVRANGE', skey, upto, '-', 'COUNT', 1)
  local start = '0-0'
  if #newest > 0 then start = newest[1][1] end
  record = candidate .. ' ' .. start
  redis.call('SET', ekey, record)
  return record
end
"""

# KEYS: stream, epoch key. ARGV: candidate epoch. Returns the record in force.
_ENSURE_EPOCH: Final = _ENSURE + "return ensure(KEYS[2], KEYS[1], ARGV[1], '+')"

# KEYS: stream, epoch key. ARGV: candidate epoch, trim strategy, threshold,
# field/value pairs. Adds the entry tagged with the record; returns
# {record, entry id}.
_XADD_TAGGED: Final = (
    _ENSURE
    + """
local record = ensure(KEYS[2], KEYS[1], ARGV[1], '+')
local args = {KEYS[1], ARGV[2], '~', ARGV[3], '*', 'epoch', record}
for i = 4, #ARGV do args[#args + 1] = ARGV[i] end
return {record, redis.call('XADD', unpack(args))}
"""
)

# KEYS: stream, epoch key. ARGV: the record that lost data, a candidate, the
# last id the caller delivered. Makes a new epoch only if the lost one is
# still in force (or none is), so the processes that notice the same loss
# agree on one; it starts after the newest entry the caller had seen (entries
# after that are new). Returns the record in force.
_NEW_EPOCH: Final = (
    _ENSURE
    + """
local record = redis.call('GET', KEYS[2])
if record and record ~= ARGV[1] then return record end
redis.call('DEL', KEYS[2])
return ensure(KEYS[2], KEYS[1], ARGV[2], ARGV[3])
"""
)


def _parse_record(record: bytes) -> tuple[str, str]:
    """``b"<epoch> <start>"`` -> (epoch, start); a bare epoch starts at 0-0."""
    epoch, _, start = record.decode("ascii", "replace").partition(" ")
    return epoch, start or START


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
class _Watch:
    """What this process knows of one topic's stream."""

    __slots__ = (
        "by_age",
        "epoch",
        "epoch_key",
        "key",
        "last",
        "name",
        "ready",
        "record",
        "slot",
    )

    def __init__(self, name: str, prefix: str, cluster: bool) -> None:
        self.name = name
        self.key = stream_key(prefix, name)
        self.epoch_key = epoch_key(prefix, name)
        self.slot = key_slot(self.key) if cluster else 0
        self.epoch = ""
        self.record = b""  # the epoch key's value this process follows
        self.last = START  # the newest stream id delivered (or the boundary)
        self.ready = trio.Event()
        self.by_age = False  # some local topic of this name trims by age

    @property
    def position(self) -> str:
        return f"{self.epoch}-{self.last}"


@final
class _Outgoing:
    __slots__ = ("done", "error", "fields", "result", "topic")

    def __init__(self, topic: Topic, fields: list[str], done: trio.Event | None) -> None:
        self.topic = topic
        self.fields = fields
        self.done = done
        self.result: str | None = None
        self.error: BaseException | None = None


@final
class _Group:
    """The topics read by one ``XREAD`` (all of them, or one cluster slot's)."""

    __slots__ = ("scope", "watches")

    def __init__(self) -> None:
        self.watches: list[_Watch] = []
        self.scope: trio.CancelScope | None = None


def _check_positive(name: str, value: object, *, integer: bool) -> None:
    kinds = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0:
        raise ValueError(
            f"{name} must be a positive {'int' if integer else 'number'}, got {value!r}"
        )


def _redis_errors() -> tuple[type[BaseException], ...]:
    import coredis.exceptions as errors

    # OSError covers TimeoutError; cluster errors mean a node is unreachable
    # or the cluster is reconfiguring: both pass, like a lost connection.
    return (errors.ConnectionError, errors.ClusterDownError, errors.ClusterError, OSError)


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
            takes 5 s longer than this counts as a lost connection.
        stream_min_length: streams are never trimmed below this many entries,
            even for topics with a smaller ``history_size``, so that a reader
            that falls behind a burst still finds its entries. A reader that
            falls further behind resets that topic's subscribers (counted in
            ``gaps``) instead of skipping events silently. Resuming replays
            at most ``history_size`` events whatever the stream holds.
        reconnect_delay: first delay (s) before reconnecting; doubles up to
            *reconnect_max_delay*, each delay jittered by ±50 %.
        reconnect_max_delay: the longest delay between reconnection attempts.
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
        retry_after: int = 1,
    ) -> None:
        try:
            import coredis
        except ModuleNotFoundError:  # pragma: no cover - depends on the install
            raise ModuleNotFoundError(
                "RedisBackplane needs coredis: pip install 'trio-sse[redis]'"
            ) from None
        for name, value in (
            ("outbox_size", outbox_size),
            ("max_batch", max_batch),
            ("read_count", read_count),
            ("stream_min_length", stream_min_length),
            ("retry_after", retry_after),
        ):
            _check_positive(name, value, integer=True)
        for name, fvalue in (
            ("read_block", read_block),
            ("reconnect_delay", reconnect_delay),
            ("reconnect_max_delay", reconnect_max_delay),
        ):
            _check_positive(name, fvalue, integer=False)
        if stream_min_length < read_count:
            raise ValueError(
                f"stream_min_length ({stream_min_length}) must be at least "
                f"read_count ({read_count})"
            )
        if not isinstance(key_prefix, str) or "{" in key_prefix or "}" in key_prefix:
            raise ValueError(f"key_prefix must be a str without braces, got {key_prefix!r}")
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
        self.retry_after: Final = retry_after
        # No retries inside coredis: a command that fails must reach us, so
        # that the reconnect check runs (a silently retried XREAD would read
        # on from a server that came back without its data).
        no_retry = coredis.retry.NoRetryPolicy()
        self._client: Any
        if cluster:
            self._client = _cluster_client(url, no_retry)
        else:
            self._client = coredis.Redis.from_url(
                url, decode_responses=False, retry_policy=no_retry
            )
        self._errors = _redis_errors()
        self._read_errors: tuple[type[BaseException], ...] = (*self._errors, trio.TooSlowError)
        self._brokers: list[Broker] = []
        self._watches: dict[str, _Watch] = {}
        self._unready: list[_Watch] = []
        self._groups: dict[int, _Group] = {}
        self._outbox: deque[_Outgoing] = deque()
        self._outbox_space = trio.lowlevel.ParkingLot()
        self._wake_writer = trio.Event()
        self._wake_watcher = trio.Event()
        self._up = trio.Event()
        self._connected = False
        self._running = False
        self._tag_script: Any = None
        self._ensure_script: Any = None
        self._epoch_script: Any = None
        # Stats.
        self._reconnects = 0
        self._last_error: str | None = None
        self._published = 0
        self._publish_errors = 0
        self._received = 0
        self._malformed = 0
        self._epoch_resets = 0
        self._gaps = 0
        self._generation = 0
        self._lag: float | None = None
        self._last_read: float | None = None

    def __repr__(self) -> str:
        state = "connected" if self._connected else "disconnected"
        return f"<RedisBackplane {self.url!r} {state} topics={len(self._watches)}>"

    # -- Backplane protocol ------------------------------------------------------

    @property
    def remote_history(self) -> RedisBackplane:
        """This backplane: streams keep history beyond the process."""
        return self

    @property
    def connected(self) -> bool:
        """Whether Redis answers (publishing works) right now."""
        return self._connected

    def attach(self, broker: Broker) -> None:
        """Deliver to *broker*'s topics too (called by :class:`~trio_sse.Broker`)."""
        self._brokers.append(broker)
        for topic in broker.topics.values():  # pragma: no cover - brokers start empty
            self.topic_added(topic)

    def topic_added(self, topic: Topic) -> None:
        """Start reading *topic*'s stream (called by :class:`~trio_sse.Broker`)."""
        watch = self._watches.get(topic.name)
        if watch is None:
            watch = self._watches[topic.name] = _Watch(topic.name, self.key_prefix, self.cluster)
            self._unready.append(watch)
            self._wake_watcher.set()
        if topic.options.history_max_age is not None:
            watch.by_age = True
        elif watch.ready.is_set() and topic._last_id is None:
            topic._last_id = watch.position

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
        topic._check_open()
        fields = fields_for(event)
        self._check_connected()
        if len(self._outbox) >= self.outbox_size:
            raise trio.WouldBlock
        self._outbox.append(_Outgoing(topic, fields, None))
        self._wake_writer.set()
        return event

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
        await trio.lowlevel.checkpoint_if_cancelled()
        topic._check_open()
        fields = fields_for(event)
        while True:
            self._check_connected()
            if len(self._outbox) < self.outbox_size:
                break
            await self._outbox_space.park()
        item = _Outgoing(topic, fields, trio.Event())
        self._outbox.append(item)
        self._wake_writer.set()
        assert item.done is not None
        await item.done.wait()
        if item.error is not None:
            raise item.error
        assert item.result is not None
        return _with_id(event, item.result)

    def _check_connected(self) -> None:
        if not self._connected:
            detail = f" ({self._last_error})" if self._last_error else ""
            state = "not connected yet" if self._running else "not running"
            raise BackplaneUnavailableError(
                f"Redis backplane {state}{detail}: nothing was published; retry later"
            )

    # -- RemoteHistory protocol ------------------------------------------------

    async def wait_ready(self, topic: Topic) -> None:
        """Wait until *topic*'s epoch and newest id are known."""
        watch = self._watches.get(topic.name)
        if watch is None:  # pragma: no cover - Broker calls topic_added first
            self.topic_added(topic)
            watch = self._watches[topic.name]
        await watch.ready.wait()
        if topic._last_id is None:
            topic._last_id = watch.position

    def replayable(self, topic: Topic, event_id: str) -> bool:
        """Whether *event_id* belongs to the stream's current epoch."""
        parts = split_id(event_id)
        watch = self._watches.get(topic.name)
        return parts is not None and watch is not None and parts[0] == watch.epoch

    def order_key(self, event_id: str) -> tuple[int, int]:
        """Stream ids order events by publish time across topics."""
        return order_key(event_id)

    async def replay(self, topic: Topic, after: str, until: str) -> list[Event] | None:
        """Read the events after *after* up to *until* from the stream.

        Returns ``None`` (the client gets a reset) when *after* is no longer
        in the stream, or more than the topic's ``history_size`` events would be
        replayed (the same bound as a resume from the local history).
        Waits through Redis outages: the client's disconnect cancels it.
        """
        start, end = split_id(after), split_id(until)
        if start is None or end is None or start[0] != end[0]:
            return None
        first, last = start[1], end[1]
        if stream_order(first) > stream_order(last):
            return None
        if first == last:
            return []
        watch = self._watches[topic.name]
        while True:
            await self._up.wait()
            try:
                return await self._read_range(
                    watch, start[0], first, last, topic.options.history_size
                )
            except self._errors as exc:
                self._lost(exc)

    async def _read_range(
        self, watch: _Watch, epoch: str, first: str, last: str, limit: int
    ) -> list[Event] | None:
        """XRANGE from *first* (exclusive) to *last*; None if it cannot be exact.

        Each page starts *at* the previous page's last entry and checks that
        it is still there: trimming removes the oldest entries first, so its
        presence proves nothing after it was trimmed between pages.
        """
        client = self._client
        events: list[Event] = []
        cursor = first
        if first == START:
            # "Before the first entry": exact only if nothing was trimmed.
            import coredis.exceptions

            try:
                info = await client.xinfo_stream(watch.key)
            except coredis.exceptions.ResponseError:
                return []  # no stream: nothing was ever published
            if info["entries-added"] != info["length"]:
                return None
            page = await client.xrange(watch.key, "-", last, count=self.read_count)
            if not page:
                return []
            head = page[0]
            cursor = head.identifier.decode()
            event = event_from_entry(epoch, cursor, head.field_values)
            if event is not None:
                events.append(event)
        while True:
            page = await client.xrange(watch.key, cursor, last, count=self.read_count + 1)
            if not page or page[0].identifier.decode() != cursor:
                return None  # trimmed past the client's position
            for entry in page[1:]:
                event = event_from_entry(epoch, entry.identifier.decode(), entry.field_values)
                if event is not None:
                    events.append(event)
            if len(events) > limit:
                return None  # further behind than the topic's history_size
            if len(page) <= self.read_count:
                return events
            cursor = page[-1].identifier.decode()

    # -- running -----------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect and run the writer, the reader(s) and recovery until cancelled.

        Starts even while Redis is unreachable (retrying in the background);
        ``task_status.started()`` is called at once. Run it once, for the life
        of the app (``app.background(backplane.run)``).

        Raises:
            RuntimeError: it is already running.
        """
        if self._running:
            raise RuntimeError("this RedisBackplane is already running")
        self._running = True
        try:
            # The client's context only sets up its pool; it connects lazily,
            # so entering it works while Redis is down. Every command's
            # connection error is handled by the task that sent it.
            async with self._client, trio.open_nursery() as nursery:
                nursery.start_soon(self._writer)
                nursery.start_soon(self._watcher)
                task_status.started()
        finally:
            self._running = False
            self._set_down("stopped")

    def stats(self) -> BackplaneStats:
        """Return a snapshot of the backplane's health and counters."""
        now = trio.current_time() if self._running else None
        age = None
        if now is not None and self._last_read is not None:
            age = now - self._last_read
        return BackplaneStats(
            connected=self._connected,
            running=self._running,
            reconnects=self._reconnects,
            last_error=self._last_error,
            published=self._published,
            publish_errors=self._publish_errors,
            outbox=len(self._outbox),
            received=self._received,
            malformed=self._malformed,
            epoch_resets=self._epoch_resets,
            gaps=self._gaps,
            topics=len(self._watches),
            lag=self._lag,
            last_read_age=age,
        )

    # -- connection state ----------------------------------------------------------

    def _lost(self, exc: BaseException) -> None:
        self._last_error = f"{type(exc).__name__}: {exc}"
        if self._connected:
            self._reconnects += 1
            logger.warning("Redis backplane: connection lost (%s); reconnecting", exc)
        self._set_down(self._last_error)
        self._wake_watcher.set()

    def _set_down(self, reason: str) -> None:
        self._connected = False
        self._generation += 1
        if self._up.is_set():
            self._up = trio.Event()
        for group in self._groups.values():
            if group.scope is not None:
                group.scope.cancel()
        # Waiting publishers would wait for a writer that cannot send.
        error = BackplaneUnavailableError(f"Redis backplane unavailable ({reason})")
        while self._outbox:
            self._fail(self._outbox.popleft(), error)
        self._outbox_space.unpark_all()

    def _fail(self, item: _Outgoing, error: BaseException) -> None:
        self._publish_errors += 1
        item.error = error
        if item.done is not None:
            item.done.set()

    async def _backoff(self, attempt: int) -> None:
        delay = min(self.reconnect_max_delay, self.reconnect_delay * 2 ** min(attempt, 30))
        await trio.sleep(delay * random.uniform(0.5, 1.5))

    async def _watcher(self) -> None:
        """Connect, recover after losses, and establish new topics."""
        attempt = 0
        async with trio.open_nursery() as readers:
            while True:
                self._wake_watcher = trio.Event()
                try:
                    if not self._connected:
                        await self._connect()
                        await self._recover(list(self._watches.values()))
                        self._connected = True
                        self._up.set()
                        attempt = 0
                        logger.info("Redis backplane: connected to %s", self.url)
                    if self._unready:
                        await self._establish(readers)
                except self._errors as exc:
                    self._lost(exc)
                    await self._backoff(attempt)
                    attempt += 1
                    continue
                await self._wake_watcher.wait()

    async def _connect(self) -> None:
        client = self._client
        if self._tag_script is None:
            self._tag_script = client.register_script(_XADD_TAGGED)
            self._ensure_script = client.register_script(_ENSURE_EPOCH)
            self._epoch_script = client.register_script(_NEW_EPOCH)
        await client.ping()

    async def _establish(self, readers: trio.Nursery) -> None:
        """Learn the epoch and newest id of topics not read yet."""
        watches, self._unready = self._unready, []
        try:
            results = []
            for watch in watches:
                record = await self._ensure_script(
                    keys=[watch.key, watch.epoch_key], args=[new_epoch()]
                )
                newest = await self._client.xrevrange(watch.key, count=1)
                results.append((watch, record, newest))
        except BaseException:
            self._unready[:0] = watches
            raise
        for watch, record, newest in results:
            watch.record = record
            watch.epoch = _parse_record(record)[0]
            watch.last = newest[0].identifier.decode() if newest else START
            for topic in self._topics(watch.name):
                if topic._last_id is None:
                    topic._last_id = watch.position
            watch.ready.set()
            self._add_to_group(watch, readers)

    def _add_to_group(self, watch: _Watch, readers: trio.Nursery) -> None:
        group = self._groups.get(watch.slot)
        if group is None:
            group = self._groups[watch.slot] = _Group()
            readers.start_soon(self._reader, group)
        group.watches.append(watch)
        if group.scope is not None:
            group.scope.cancel()  # re-issue XREAD with the new stream

    async def _recover(self, watches: Iterable[_Watch]) -> None:
        """After a reconnect: detect data Redis lost, reset those topics."""
        for watch in watches:
            if not watch.ready.is_set():
                continue
            record = await self._client.get(watch.epoch_key)
            newest = await self._client.xrevrange(watch.key, count=1)
            last = newest[0].identifier.decode() if newest else START
            if record == watch.record and stream_order(last) >= stream_order(watch.last):
                continue  # intact: read on from watch.last
            if record is None or record == watch.record:
                # The key is gone, or the stream is behind what we delivered
                # (an older AOF): make the new epoch (once, for everyone).
                record = await self._epoch_script(
                    keys=[watch.key, watch.epoch_key],
                    args=[watch.record, new_epoch(), watch.last],
                )
            self._restart(watch, record)

    def _restart(self, watch: _Watch, record: bytes) -> None:
        """Follow the epoch *record*: reset the topic's subscribers."""
        epoch, start = _parse_record(record)
        logger.warning(
            "Redis backplane: topic %r lost data (epoch %s -> %s); sending reset",
            watch.name,
            watch.epoch,
            epoch,
        )
        self._epoch_resets += 1
        watch.record = record
        watch.epoch = epoch
        watch.last = start
        for topic in self._topics(watch.name):
            topic._restart(watch.position)

    def _topics(self, name: str) -> list[Topic]:
        found = []
        for broker in self._brokers:
            topic = broker.topics.get(name)
            if topic is not None and not topic.closed:
                found.append(topic)
        return found

    # -- reading -------------------------------------------------------------------

    async def _reader(self, group: _Group) -> None:
        block_ms = max(1, int(self.read_block * 1000))
        while True:
            await self._up.wait()
            streams = {w.key: w.last for w in group.watches}
            result = None
            with trio.CancelScope() as group.scope:
                try:
                    with trio.fail_after(self.read_block + 5):
                        result = await self._client.xread(
                            streams, count=self.read_count, block=block_ms
                        )
                except self._read_errors as exc:
                    self._lost(exc)
                    continue
            group.scope = None
            if not self._connected:
                continue  # read again from watch.last after recovery
            self._last_read = trio.current_time()
            if not result:
                continue
            generation = self._generation
            try:
                await self._check_gaps(result, streams)
            except self._errors as exc:
                self._lost(exc)
                continue
            await self._deliver(result, generation)

    async def _check_gaps(self, result: dict[bytes, Any], streams: dict[str, str]) -> None:
        """Reset topics whose stream was trimmed past what we had read.

        Trimming removes a stream's oldest entries first, so if the last
        entry we delivered is still there *after* the ``XREAD``, nothing
        after it was trimmed before the ``XREAD`` read on from it. If it is
        gone, the reader fell more than the stream's length behind and may
        have missed entries: its subscribers get the reset event rather than
        a silent gap.

        Only full reads need the check: streams trimmed by count keep at least
        ``stream_min_length >= read_count`` entries, all newer than a trimmed
        position, so a read that returned fewer than ``read_count`` entries
        cannot have skipped any. Age-trimmed streams are always checked.
        """
        checks = []
        for raw_key, entries in result.items():
            key = raw_key.decode()
            last = streams[key]
            if last == START:
                continue
            if len(entries) >= self.read_count or self._by_key(key).by_age:
                checks.append((key, last))
        if not checks:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            requests = [(key, pipe.xrange(key, last, last, count=1)) for key, last in checks]
        for key, request in requests:
            if not await request:
                watch = self._by_key(key)
                self._gaps += 1
                logger.warning(
                    "Redis backplane: the reader fell behind %s by more than its length; "
                    "sending reset",
                    key,
                )
                for topic in self._topics(watch.name):
                    topic._restart(watch.position)

    async def _deliver(self, result: dict[bytes, Any], generation: int) -> None:
        now_ms = time.time() * 1000
        for key, entries in result.items():
            watch = self._by_key(key.decode())
            for entry in entries:
                if generation != self._generation:
                    return  # the connection was lost meanwhile: re-read after recovery
                stream_id = entry.identifier.decode()
                fields = entry.field_values
                tagged = fields.get(b"epoch")
                if tagged is not None and tagged != watch.record:
                    self._restart(watch, tagged)
                watch.last = stream_id
                self._received += 1
                event = event_from_entry(watch.epoch, stream_id, fields)
                if event is None:
                    self._malformed += 1
                    logger.warning(
                        "Redis backplane: skipped malformed entry %s in %s", stream_id, watch.key
                    )
                    continue
                self._lag = max(0.0, now_ms - stream_order(stream_id)[0]) / 1000
                for topic in self._topics(watch.name):
                    if topic._policy is OverflowPolicy.BLOCK:
                        await topic.deliver(event)
                    else:
                        topic.deliver_nowait(event)
            # Up to read_count entries of a topic go out in one synchronous
            # burst, like a publisher publishing them without awaiting: then
            # let the subscribers' writers run.
            await trio.lowlevel.checkpoint()

    def _by_key(self, key: str) -> _Watch:
        prefix_len = len(self.key_prefix) + 1
        return self._watches[key[prefix_len:-1]]

    # -- writing -------------------------------------------------------------------

    async def _writer(self) -> None:
        outbox = self._outbox
        while True:
            await self._wake_writer.wait()
            self._wake_writer = trio.Event()
            while outbox:
                batch = [outbox.popleft() for _ in range(min(len(outbox), self.max_batch))]
                self._outbox_space.unpark_all()
                try:
                    await self._send(batch)
                except self._errors as exc:
                    error = BackplaneUnavailableError(
                        f"Redis backplane: connection lost while publishing ({exc}); "
                        "the event may or may not have been published"
                    )
                    for item in batch:
                        if item.result is None:
                            self._fail(item, error)
                    self._lost(exc)

    async def _send(self, batch: list[_Outgoing]) -> None:
        by_slot: dict[int, list[_Outgoing]] = {}
        for item in batch:
            slot = key_slot(stream_key(self.key_prefix, item.topic.name)) if self.cluster else 0
            by_slot.setdefault(slot, []).append(item)
        for items in by_slot.values():
            await self._send_pipeline(items)

    async def _send_pipeline(self, items: list[_Outgoing]) -> None:
        prefix = self.key_prefix
        tagged: set[str] = set()
        requests = []
        async with self._client.pipeline(transaction=False) as pipe:
            for item in items:
                topic = item.topic
                name = topic.name
                strategy, threshold = self._trim(topic)
                key = stream_key(prefix, name)
                if name not in tagged:
                    tagged.add(name)
                    request = self._tag_script(
                        keys=[key, epoch_key(prefix, name)],
                        args=[new_epoch(), strategy, threshold, *item.fields],
                        client=pipe,
                    )
                    requests.append((item, True, request))
                else:
                    request = pipe.xadd(
                        key,
                        dict(zip(item.fields[::2], item.fields[1::2], strict=True)),
                        trim_strategy=_token(strategy),
                        trim_operator=_approx(),
                        threshold=threshold,
                    )
                    requests.append((item, False, request))
        epochs: dict[str, str] = {}
        for item, is_tagged, request in requests:
            reply = await request
            if is_tagged:
                epochs[item.topic.name] = _parse_record(reply[0])[0]
                stream_id = reply[1].decode()
            else:
                stream_id = reply.decode()
            item.result = f"{epochs[item.topic.name]}-{stream_id}"
            self._published += 1
            if item.done is not None:
                item.done.set()

    def _trim(self, topic: Topic) -> tuple[str, str]:
        options = topic.options
        if options.history_max_age is not None:
            cutoff_ms = int((time.time() - options.history_max_age) * 1000)
            return "MINID", str(max(cutoff_ms, 0))
        return "MAXLEN", str(max(options.history_size, self.stream_min_length))


def _cluster_client(url: str, retry_policy: Any) -> Any:
    """A RedisCluster from ``redis[s]://[user:password@]host:port``."""
    from urllib.parse import unquote, urlsplit

    import coredis
    from coredis.connection import TCPLocation

    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError(f"expected a redis:// or rediss:// URL, got {url!r}")
    return coredis.RedisCluster(
        startup_nodes=[TCPLocation(parts.hostname, parts.port or 6379)],
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        ssl=parts.scheme == "rediss",
        decode_responses=False,
        retry_policy=retry_policy,
    )


def _approx() -> Any:
    import coredis

    return coredis.PureToken.APPROXIMATELY


def _token(strategy: str) -> Any:
    import coredis

    return coredis.PureToken.MINID if strategy == "MINID" else coredis.PureToken.MAXLEN
