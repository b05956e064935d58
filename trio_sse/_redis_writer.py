"""The Redis backplane's writer: a bounded outbox flushed as pipelines.

Theory of operation: ``publish`` and ``publish_nowait`` append to one outbox
(bounded by ``outbox_size``) and wake one writer task, which takes up to
``max_batch`` queued events and sends them as one pipeline (one per cluster
slot): many publishers cost one round trip. The first entry of each topic in
a pipeline goes through a Lua script that reads, or creates, the topic's
epoch record and tags the entry with it; the others are plain ``XADD``.
When the connection is lost, every queued event fails at once with
:class:`~trio_sse.BackplaneUnavailableError` (a down callback of the link):
nothing waits for a writer that cannot send.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any, Final, final

import trio

from ._backplane import new_epoch
from ._cursor import with_id
from ._errors import BackplaneUnavailableError
from ._event import Event
from ._redis_streams import epoch_key, fields_for, key_slot, parse_record, stream_key

if TYPE_CHECKING:
    from ._redis_link import Link
    from ._topic import Topic

__all__ = ["Writer"]


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
class Writer:
    """Publishes events of this process (see the module's theory of operation)."""

    def __init__(
        self,
        link: Link,
        *,
        key_prefix: str,
        cluster: bool,
        outbox_size: int,
        max_batch: int,
        stream_min_length: int,
        max_entry_size: int,
    ) -> None:
        self.link: Final = link
        self.max_entry_size: Final = max_entry_size
        self.key_prefix: Final = key_prefix
        self.cluster: Final = cluster
        self.outbox_size: Final = outbox_size
        self.max_batch: Final = max_batch
        self.stream_min_length: Final = stream_min_length
        self.outbox: deque[_Outgoing] = deque()
        self.published = 0
        self.errors = 0
        self._space = trio.lowlevel.ParkingLot()
        self._wake = trio.Event()
        link.on_down.append(self._fail_all)

    def publish_nowait(self, topic: Topic, event: Event) -> Event:
        """Queue *event*; see :meth:`RedisBackplane.publish_nowait`."""
        topic._check_open()
        fields = self._fields(event)
        self.link.check_connected()
        if len(self.outbox) >= self.outbox_size:
            raise trio.WouldBlock
        self.outbox.append(_Outgoing(topic, fields, None))
        self._wake.set()
        return event

    async def publish(self, topic: Topic, event: Event) -> Event:
        """Queue *event* and wait for its id; see :meth:`RedisBackplane.publish`."""
        await trio.lowlevel.checkpoint_if_cancelled()
        topic._check_open()
        fields = self._fields(event)
        while True:
            self.link.check_connected()
            if len(self.outbox) < self.outbox_size:
                break
            await self._space.park()
        done = trio.Event()
        item = _Outgoing(topic, fields, done)
        self.outbox.append(item)
        self._wake.set()
        await done.wait()
        if item.error is not None:
            raise item.error
        assert item.result is not None
        return with_id(event, item.result)

    def _fields(self, event: Event) -> list[str]:
        fields = fields_for(event)
        size = sum(len(field.encode("utf-8")) for field in fields)
        if size > self.max_entry_size:
            raise ValueError(
                f"event of {size} bytes is over RedisBackplane max_entry_size "
                f"({self.max_entry_size}): every reader would skip it"
            )
        return fields

    def _fail_all(self, reason: str) -> None:
        error = BackplaneUnavailableError(f"Redis backplane unavailable ({reason})")
        while self.outbox:
            self._fail(self.outbox.popleft(), error)
        self._space.unpark_all()

    def _fail(self, item: _Outgoing, error: BaseException) -> None:
        self.errors += 1
        item.error = error
        if item.done is not None:
            item.done.set()

    async def run(self) -> None:
        """Send whatever is queued, batch after batch, until cancelled."""
        outbox = self.outbox
        link = self.link
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while outbox:
                batch = [outbox.popleft() for _ in range(min(len(outbox), self.max_batch))]
                self._space.unpark_all()
                try:
                    with trio.fail_after(link.command_timeout):
                        await self._send(batch)
                except link.errors as exc:
                    error = BackplaneUnavailableError(
                        f"Redis backplane: connection lost while publishing ({exc}); "
                        "the event may or may not have been published"
                    )
                    for item in batch:
                        if item.result is None:
                            self._fail(item, error)
                    link.lost(exc)

    async def _send(self, batch: list[_Outgoing]) -> None:
        by_slot: dict[int, list[_Outgoing]] = {}
        for item in batch:
            slot = key_slot(stream_key(self.key_prefix, item.topic.name)) if self.cluster else 0
            by_slot.setdefault(slot, []).append(item)
        for items in by_slot.values():
            await self._send_pipeline(items)

    async def _send_pipeline(self, items: list[_Outgoing]) -> None:
        import coredis

        prefix = self.key_prefix
        tag_script = self.link.tag_script
        tagged: set[str] = set()
        requests = []
        # raise_on_error=False: a command Redis refuses (say WRONGTYPE, a key
        # that is not a stream) fails its own event, not the whole batch or
        # the writer task; each request raises its own error when awaited.
        async with self.link.client.pipeline(transaction=False, raise_on_error=False) as pipe:
            for item in items:
                topic = item.topic
                name = topic.name
                strategy, threshold = self._trim(topic)
                key = stream_key(prefix, name)
                if name not in tagged:
                    tagged.add(name)
                    request = tag_script(
                        keys=[key, epoch_key(prefix, name)],
                        args=[new_epoch(), strategy, threshold, *item.fields],
                        client=pipe,
                    )
                    requests.append((item, True, request))
                else:
                    token = coredis.PureToken
                    request = pipe.xadd(
                        key,
                        dict(zip(item.fields[::2], item.fields[1::2], strict=True)),
                        trim_strategy=token.MINID if strategy == "MINID" else token.MAXLEN,
                        trim_operator=token.APPROXIMATELY,
                        threshold=threshold,
                    )
                    requests.append((item, False, request))
        import coredis.exceptions

        epochs: dict[str, str] = {}
        for item, is_tagged, request in requests:
            try:
                reply: Any = await request
            except coredis.exceptions.ResponseError as exc:
                if isinstance(exc, self.link.errors):
                    raise  # READONLY, CLUSTERDOWN...: the connection's problem
                self._fail(item, BackplaneUnavailableError(f"Redis refused the event: {exc}"))
                continue
            if not is_tagged and item.topic.name not in epochs:
                # Its topic's first (tagging) command failed: so does this one's meaning.
                self._fail(item, BackplaneUnavailableError("Redis refused this topic's batch"))
                continue
            if is_tagged:
                epochs[item.topic.name] = parse_record(reply[0])[0]
                stream_id = reply[1].decode()
            else:
                stream_id = reply.decode()
            item.result = f"{epochs[item.topic.name]}-{stream_id}"
            self.published += 1
            if item.done is not None:
                item.done.set()

    def _trim(self, topic: Topic) -> tuple[str, str]:
        options = topic.options
        if options.history_max_age is not None:
            cutoff_ms = int((time.time() - options.history_max_age) * 1000)
            return "MINID", str(max(cutoff_ms, 0))
        return "MAXLEN", str(max(options.history_size, self.stream_min_length))
