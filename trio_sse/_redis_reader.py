"""The Redis backplane's reader: delivery, resume, and the data-loss checks.

Theory of operation
===================

Rule 1: before a topic is read, the watcher learns its epoch record and newest
stream id (its *boundary*, which becomes the local topic's newest id);
subscriptions wait for that (:meth:`Reader.wait_ready`).

Rule 2: one reader task per group of streams (all of them; with a cluster,
one group per hash slot, since one ``XREAD`` cannot span slots) reads from
the last id it delivered and hands each entry to the local topics, in stream
order, through :meth:`Topic.deliver_nowait` (``deliver`` under ``block``, and
for a topic with more than ``fanout_slice`` subscribers, whose pass it slices).

Rule 3: nothing is skipped silently. After a reconnect the watcher checks
each topic before anyone reads: the same epoch record and the stream at or
past the last delivered id means intact; otherwise a new epoch (made once,
by a Lua script, for every process) and a live reset event. An entry tagged
with another epoch record (a publisher found the epoch key gone) means the
same. A read that finds its last position trimmed away resets too.

Rule 4: resuming beyond the local history reads ``XRANGE`` from the client's
id (which must still be in the stream) to the boundary fixed when the
subscription registered: see :meth:`Reader.replay`.

The pieces: :mod:`._redis_watch` (what is known of each topic's stream),
:mod:`._redis_gaps` (Rule 3's check of a read against trimming),
:mod:`._redis_replay` (Rule 4's exact read).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final, final

import trio

from ._backplane import new_epoch
from ._event import Event
from ._options import OverflowPolicy
from ._redis_gaps import trimmed_keys, warn_gap
from ._redis_replay import read_range
from ._redis_streams import (
    START,
    event_from_entry,
    parse_record,
    split_id,
    stream_order,
)
from ._redis_watch import Group, Watch

if TYPE_CHECKING:
    from ._broker import Broker
    from ._redis_link import Link
    from ._topic import Topic

__all__ = ["Reader"]

logger = logging.getLogger("trio_sse.redis")


@final
class Reader:
    """Delivers every topic of the attached brokers (see the theory of operation)."""

    def __init__(
        self,
        link: Link,
        *,
        key_prefix: str,
        cluster: bool,
        read_count: int,
        read_block: float,
        max_entry_size: int,
    ) -> None:
        self.link: Final = link
        self.max_entry_size: Final = max_entry_size
        self.key_prefix: Final = key_prefix
        self.cluster: Final = cluster
        self.read_count: Final = read_count
        self.read_block: Final = read_block
        self.brokers: list[Broker] = []
        self.watches: dict[str, Watch] = {}
        self._unready: list[Watch] = []
        self._groups: dict[int, Group] = {}
        self.received = 0
        self.malformed = 0
        self.epoch_resets = 0
        self.gaps = 0
        self.lag: float | None = None
        self.last_read: float | None = None
        link.on_down.append(self._interrupt_reads)

    def _interrupt_reads(self, reason: str) -> None:
        for group in self._groups.values():
            if group.scope is not None:
                group.scope.cancel()

    # -- topics ------------------------------------------------------------------

    def topic_added(self, topic: Topic) -> None:
        """Read *topic*'s stream from now on."""
        watch = self.watches.get(topic.name)
        if watch is None:
            watch = self.watches[topic.name] = Watch(topic.name, self.key_prefix, self.cluster)
            self._unready.append(watch)
            self.link.wake_watcher.set()
        if topic.options.history_max_age is not None:
            watch.by_age = True
        if watch.ready.is_set() and topic._last_id is None:
            topic._last_id = watch.position

    def _topics(self, name: str) -> list[Topic]:
        found = []
        for broker in self.brokers:
            topic = broker.topics.get(name)
            if topic is not None and not topic.closed:
                found.append(topic)
        return found

    def _by_key(self, key: str) -> Watch:
        return self.watches[key[len(self.key_prefix) + 1 : -1]]

    # -- resume (RemoteHistory) --------------------------------------------------

    async def wait_ready(self, topic: Topic, position: str | None) -> None:
        """Wait until *topic*'s epoch and newest id are known (Rule 1).

        A client may come from a process whose reader is a little ahead of
        ours, with an id we have not delivered yet: resuming from it now
        would look like an id from the future (a reset). So wait until our
        reader reaches it, for at most ``read_block`` + 1 s (an id of this
        epoch that never existed must not hang the subscriber; it then gets
        the reset event).
        """
        watch = self.watches.get(topic.name)
        if watch is None:  # pragma: no cover - Broker calls topic_added first
            self.topic_added(topic)
            watch = self.watches[topic.name]
        await watch.ready.wait()
        if topic._last_id is None:
            topic._last_id = watch.position
        parts = None if position is None else split_id(position)
        if parts is None or parts[0] != watch.epoch:
            return
        target = stream_order(parts[1])
        with trio.move_on_after(self.read_block + 1):
            while stream_order(watch.last) < target and parts[0] == watch.epoch:
                await watch.moved.wait()

    def replayable(self, topic: Topic, event_id: str) -> bool:
        """Whether *event_id* belongs to the stream's current epoch."""
        parts = split_id(event_id)
        watch = self.watches.get(topic.name)
        return parts is not None and watch is not None and parts[0] == watch.epoch

    async def replay(self, topic: Topic, after: str, until: str) -> list[Event] | None:
        """The events after *after* up to *until*, or None for "reset" (Rule 4).

        None when *after* is no longer in the stream, or more than the topic's
        ``history_size`` events follow it (the local history's bound). Waits
        through Redis outages: the client's disconnect cancels it.
        """
        start, end = split_id(after), split_id(until)
        if start is None or end is None or start[0] != end[0]:
            return None
        first, last = start[1], end[1]
        if stream_order(first) > stream_order(last):
            return None
        if first == last:
            return []
        watch = self.watches[topic.name]
        link = self.link
        while True:
            await link.up.wait()
            try:
                limit = topic.options.history_size
                with trio.fail_after(link.command_timeout):
                    return await read_range(
                        self.link.client,
                        watch.key,
                        start[0],
                        first,
                        last,
                        limit=limit,
                        page_size=self.read_count,
                        max_entry_size=self.max_entry_size,
                    )
            except link.reader_errors as exc:
                link.lost(exc)

    # -- the watcher: connect, check, establish ------------------------------------

    async def run(self) -> None:
        """Connect, check topics after every loss, start new topics' reads."""
        link = self.link
        attempt = 0
        async with trio.open_nursery() as readers:
            while True:
                link.wake_watcher = trio.Event()
                try:
                    if not link.connected:
                        with trio.fail_after(link.command_timeout):
                            await link.connect()
                            await self._recover(list(self.watches.values()))
                        link.mark_up()
                        attempt = 0
                        logger.info("Redis backplane: connected")
                    if self._unready:
                        with trio.fail_after(link.command_timeout):
                            await self._establish(readers)
                except link.reader_errors as exc:
                    link.lost(exc)
                    await link.backoff(attempt)
                    attempt += 1
                    continue
                await link.wake_watcher.wait()

    async def _establish(self, readers: trio.Nursery) -> None:
        """Learn the epoch record and boundary of topics not read yet (Rule 1)."""
        watches, self._unready = self._unready, []
        link = self.link
        try:
            results = []
            for watch in watches:
                keys = [watch.key, watch.epoch_key]
                record = await link.ensure_script(keys=keys, args=[new_epoch()])
                newest = await link.client.xrevrange(watch.key, count=1)
                results.append((watch, record, newest))
        except BaseException:
            self._unready[:0] = watches
            raise
        for watch, record, newest in results:
            watch.record = record
            watch.epoch = parse_record(record)[0]
            watch.last = newest[0].identifier.decode() if newest else START
            for topic in self._topics(watch.name):
                if topic._last_id is None:
                    topic._last_id = watch.position
            watch.ready.set()
            group = self._groups.get(watch.slot)
            if group is None:
                group = self._groups[watch.slot] = Group()
                readers.start_soon(self._read, group)
            group.watches.append(watch)
            if group.scope is not None:
                group.scope.cancel()  # re-issue XREAD with the new stream

    async def _recover(self, watches: Iterable[Watch]) -> None:
        """After a reconnect: find data Redis lost, reset those topics (Rule 3)."""
        client = self.link.client
        for watch in watches:
            if not watch.ready.is_set():
                continue
            record = await client.get(watch.epoch_key)
            newest = await client.xrevrange(watch.key, count=1)
            last = newest[0].identifier.decode() if newest else START
            if record == watch.record and stream_order(last) >= stream_order(watch.last):
                continue  # intact: read on from watch.last
            if record is None or record == watch.record:
                # The key is gone, or the stream is behind what we delivered
                # (an older AOF): make the new epoch (once, for everyone).
                record = await self.link.epoch_script(
                    keys=[watch.key, watch.epoch_key],
                    args=[watch.record, new_epoch(), watch.last],
                )
            self._restart(watch, record)

    def _restart(self, watch: Watch, record: bytes) -> None:
        """Follow the epoch *record*: reset the topic's subscribers."""
        epoch, start = parse_record(record)
        logger.warning(
            "Redis backplane: topic %r lost data (epoch %s -> %s); sending reset",
            watch.name,
            watch.epoch,
            epoch,
        )
        self.epoch_resets += 1
        watch.record = record
        watch.epoch = epoch
        watch.last = start
        for topic in self._topics(watch.name):
            topic._restart(watch.position)

    # -- reading -------------------------------------------------------------------

    async def _read(self, group: Group) -> None:
        link = self.link
        block_ms = max(1, int(self.read_block * 1000))
        while True:
            await link.up.wait()
            streams = {w.key: w.last for w in group.watches}
            result = None
            with trio.CancelScope() as group.scope:
                try:
                    with trio.fail_after(self.read_block + link.command_timeout):
                        result = await link.client.xread(
                            streams, count=self.read_count, block=block_ms
                        )
                except link.reader_errors as exc:
                    link.lost(exc)
                    continue
            group.scope = None
            if not link.connected:
                continue  # read again from watch.last after recovery
            self.last_read = trio.current_time()
            if not result:
                continue
            generation = link.generation
            try:
                with trio.fail_after(link.command_timeout):
                    await self._check_gaps(result, streams)
            except link.reader_errors as exc:
                link.lost(exc)
                continue
            await self._deliver(result, generation)

    async def _check_gaps(self, result: dict[bytes, Any], streams: dict[str, str]) -> None:
        """Reset the topics whose stream was trimmed past what we had read (Rule 3)."""
        keys = await trimmed_keys(
            self.link.client,
            result,
            streams,
            read_count=self.read_count,
            by_age=lambda key: self._by_key(key).by_age,
        )
        for key in keys:
            watch = self._by_key(key)
            self.gaps += 1
            warn_gap(watch)
            for topic in self._topics(watch.name):
                topic._restart(watch.position)

    async def _deliver(self, result: dict[bytes, Any], generation: int) -> None:
        link = self.link
        now_ms = time.time() * 1000
        for key, entries in result.items():
            watch = self._by_key(key.decode())
            for entry in entries:
                if generation != link.generation:
                    return  # the connection was lost meanwhile: re-read after recovery
                stream_id = entry.identifier.decode()
                fields = entry.field_values
                tagged = fields.get(b"epoch")
                if tagged is not None and tagged != watch.record:
                    self._restart(watch, tagged)
                watch.last = stream_id
                self.received += 1
                event = event_from_entry(watch.epoch, stream_id, fields, self.max_entry_size)
                if event is None:
                    self.malformed += 1
                    logger.warning(
                        "Redis backplane: skipped malformed entry %s in %s", stream_id, watch.key
                    )
                    continue
                self.lag = max(0.0, now_ms - stream_order(stream_id)[0]) / 1000
                for topic in self._topics(watch.name):
                    # deliver() waits under block, and slices a large fan-out.
                    if (
                        topic._policy is OverflowPolicy.BLOCK
                        or len(topic._subscribers) > topic.options.fanout_slice
                    ):
                        await topic.deliver(event)
                    else:
                        topic.deliver_nowait(event)
            watch.moved.set()
            watch.moved = trio.Event()
            # Up to read_count entries of a topic go out in one synchronous
            # burst, like a publisher publishing them without awaiting: then
            # let the subscribers' writers run.
            await trio.lowlevel.checkpoint()
