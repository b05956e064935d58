"""Randomized check of topics against an executable model.

Hypothesis generates a script: publish on a topic, subscribe (to one topic or
to both, fresh, resuming from where an earlier subscriber stopped, or from an
arbitrary string), receive some events (one by one or in batches), leave.
One ``trio.run`` executes the script against a real broker while a plain
Python model predicts every event each subscriber must receive:

* its replay (the history after its resume point) or an explicit reset
  event, then
* every event published while it was subscribed, in publish order, with the
  policy applied to its bounded queue: ``evict`` (and ``block`` under
  ``publish_nowait``) ends the stream with the final event; ``drop_oldest``
  discards the oldest queued event.

The script runs in one task, which is as general as concurrency gets here:
publishing and subscribing have no checkpoints inside (see the module header
of ``trio_sse._topic``), so any interleaving of concurrent tasks is one of
these scripts. Receiving compares exact ``Event`` values, ids included, so
resume cursors are checked too.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field

import trio
from brokers import make_broker
from hypothesis import event, given
from hypothesis import strategies as st

from trio_sse._delivery import Mode
from trio_sse._event import Event
from trio_sse._options import TopicOptions
from trio_sse._subscription import Subscription

TOPICS = ("a", "b")
KINDS = {"a": ("a",), "b": ("b",), "ab": ("a", "b")}
FINAL = Event(comment="bye", retry=100)
RAW_CURSORS = ["", "0", "1", "3", "9", "zzz", "a:", "a:1", "a:999", "a:1,a:2", ":1", "b:2,a:1"]
RAW_CURSORS += ["c:1,a:2", "a:2,b:", "b:1", "a:1,b:1", "a:b:c", "a:,b:"]
_SAFE = re.compile(r"[A-Za-z0-9_.\-]*")


@dataclass
class ModelTopic:
    history_size: int
    ids: list[str] = field(default_factory=list)
    history: deque[tuple[str, str, int]] = field(default_factory=deque)  # id, data, gseq
    trimmed: bool = False
    evicted: int = 0
    dropped: int = 0

    @property
    def last_id(self) -> str | None:
        return self.ids[-1] if self.ids else None

    def after(self, position: str) -> list[tuple[str, str, int]] | None:
        if position == self.last_id:
            return []
        if position == "":
            return None if self.trimmed else list(self.history)
        history_ids = [h[0] for h in self.history]
        if position not in history_ids:
            return None
        return list(self.history)[history_ids.index(position) + 1 :]


@dataclass
class ModelSub:
    kind: str
    topics: tuple[str, ...]
    merged: bool
    pending: deque[Event] = field(default_factory=deque)
    queue: deque[tuple[str, str, str]] = field(default_factory=deque)  # topic, id, data
    positions: dict[str, str] = field(default_factory=dict)
    start: str | None = None
    last_id: str | None = None
    ended: bool = False
    evicted: bool = False
    final_given: bool = False
    reset: bool = False
    replayed: int = 0
    dropped: int = 0
    left: bool = False

    def cursor(self) -> str:
        return ",".join(f"{t}:{self.positions[t]}" for t in self.topics)

    def convert(self, topic: str, event_id: str, data: str) -> Event:
        if not self.merged:
            return Event(data, id=event_id)
        self.positions[topic] = event_id
        return Event(data, id=self.cursor())

    def resume_point(self) -> str | None:
        return self.last_id if self.last_id is not None else self.start

    def take(self) -> Event | type[trio.EndOfChannel] | None:
        """Next event; None means "would block"."""
        if self.pending:
            return self.pending.popleft()
        if not self.ended:
            if not self.queue:
                return None
            return self.convert(*self.queue.popleft())
        if not self.final_given:
            self.final_given = True
            return FINAL
        return trio.EndOfChannel

    def can_take(self) -> bool:
        return bool(self.pending) or self.ended or bool(self.queue)

    def take_batch(self, n: int) -> list[Event]:
        batch: list[Event] = []
        if self.pending:
            while self.pending and len(batch) < n:
                batch.append(self.pending.popleft())
            while not self.ended and self.queue and len(batch) < n:
                batch.append(self.convert(*self.queue.popleft()))
            return batch
        if not self.ended:
            while self.queue and len(batch) < n:
                batch.append(self.convert(*self.queue.popleft()))
            return batch
        if not self.final_given:
            self.final_given = True
            return [FINAL]
        return []


def model_parse(cursor: str) -> dict[str, str] | None:
    positions: dict[str, str] = {}
    for item in cursor.split(","):
        name, sep, position = item.partition(":")
        if not sep or not name or name in positions:
            return None
        if not _SAFE.fullmatch(name) or not _SAFE.fullmatch(position):
            return None
        positions[name] = position
    return positions


class Model:
    def __init__(self, policy: str, buffer_size: int, history_size: int) -> None:
        self.policy = policy
        self.buffer_size = buffer_size
        self.topics = {t: ModelTopic(history_size) for t in TOPICS}
        self.subs: list[ModelSub] = []
        self.gseq = 0

    def publish(self, name: str) -> tuple[str, str]:
        topic = self.topics[name]
        self.gseq += 1
        event_id = str(len(topic.ids) + 1)
        data = f"{name}{event_id}"
        topic.ids.append(event_id)
        if topic.history_size:
            topic.history.append((event_id, data, self.gseq))
            if len(topic.history) > topic.history_size:
                topic.history.popleft()
                topic.trimmed = True
        else:
            topic.trimmed = True
        for sub in self.subs:
            if sub.left or sub.ended or name not in sub.topics:
                continue
            if len(sub.queue) < self.buffer_size:
                sub.queue.append((name, event_id, data))
            elif self.policy == "drop_oldest":
                dropped_topic = sub.queue.popleft()[0]
                self.topics[dropped_topic].dropped += 1
                sub.dropped += 1
                sub.queue.append((name, event_id, data))
            else:  # evict, and block under publish_nowait
                sub.ended = sub.evicted = True
                sub.queue.clear()
                sub.pending.clear()
                topic.evicted += 1
        return event_id, data

    def reset_event(self, sub: ModelSub, name: str) -> Event:
        sub.reset = True
        if sub.merged:
            return Event(event="reset", data=name, id=sub.cursor())
        return Event(event="reset", data=name, id=self.topics[name].last_id)

    def subscribe(self, kind: str, cursor: str | None) -> ModelSub:
        names = KINDS[kind]
        sub = ModelSub(kind, names, merged=len(names) > 1)
        self.subs.append(sub)
        cursor = cursor or None
        if not sub.merged:
            topic = self.topics[names[0]]
            if cursor is None:
                sub.start = topic.last_id
                return sub
            replay = topic.after(cursor)
            if replay is None:
                sub.pending.append(self.reset_event(sub, names[0]))
                sub.start = topic.last_id
                return sub
            sub.replayed = len(replay)
            sub.pending.extend(Event(data, id=i) for i, data, _ in replay)
            sub.start = replay[-1][0] if replay else cursor
            return sub
        parsed = model_parse(cursor) if cursor is not None else {}
        resets: list[str] = []
        replays: list[tuple[int, str, str, str]] = []
        for name in names:
            topic = self.topics[name]
            position = None if parsed is None else parsed.get(name)
            replay = None if parsed is None else ([] if position is None else topic.after(position))
            if replay is None:
                resets.append(name)
                position = None
            sub.replayed += len(replay or [])
            replays.extend((g, name, i, data) for i, data, g in replay or [])
            sub.positions[name] = position if position is not None else (topic.last_id or "")
        sub.start = sub.cursor()
        for name in resets:
            sub.pending.append(self.reset_event(sub, name))
        for _, name, event_id, data in sorted(replays):
            sub.pending.append(sub.convert(name, event_id, data))
        return sub


publish = st.tuples(st.just("pub"), st.sampled_from(TOPICS), st.integers(1, 4))
subscribe = st.tuples(
    st.just("sub"),
    st.sampled_from(sorted(KINDS)),
    st.one_of(st.none(), st.sampled_from(RAW_CURSORS)),
)
resume = st.tuples(st.just("resume"), st.integers(0, 30))
receive = st.tuples(st.just("recv"), st.integers(0, 30), st.integers(1, 4), st.booleans())
leave = st.tuples(st.just("leave"), st.integers(0, 30))
# Bursts of publishes against small buffers, so that queues overflow often;
# scripts open with subscriptions, so that most steps have someone to serve.
steps = st.one_of(publish, subscribe, resume, publish, receive, receive, resume, leave)
scripts = st.tuples(
    st.lists(subscribe, min_size=1, max_size=3), st.lists(steps, min_size=8, max_size=40)
).map(lambda parts: parts[0] + parts[1])


async def run_script(
    policy: str, buffer_size: int, history_size: int, script: list[tuple[object, ...]]
) -> set[str]:
    options = TopicOptions(
        buffer_size=buffer_size,
        overflow=policy,  # type: ignore[arg-type]
        history_size=history_size,
        eviction_event=FINAL,
    )
    broker = make_broker(options)
    model = Model(policy, buffer_size, history_size)
    real: list[Subscription] = []

    def open_indexes() -> list[int]:
        return [i for i, m in enumerate(model.subs) if not m.left]

    def check_one(i: int) -> object:
        expected = model.subs[i].take()
        try:
            got: object = real[i].receive_nowait()
        except trio.WouldBlock:
            got = None
        except trio.EndOfChannel:
            got = trio.EndOfChannel
        assert got == expected, (i, model.subs[i])
        if isinstance(got, Event) and got.id is not None:
            model.subs[i].last_id = got.id
        return got

    async def enter(kind: str, cursor: str | None) -> None:
        names = KINDS[kind]
        if len(names) == 1:
            sub = broker.subscribe(names[0], cursor)
        else:
            sub = broker.subscribe_many(names, cursor)
        await sub.__aenter__()
        real.append(sub)
        expected = model.subscribe(kind, cursor)
        assert sub.cursor == expected.start
        assert (sub.reset, sub.replayed) == (expected.reset, expected.replayed)

    for step in script:
        match step:
            case ("pub", str(name), int(count)):
                for _ in range(count):
                    event_id, data = model.publish(name)
                    assert broker.publish_nowait(name, Event(data)) == Event(data, id=event_id)
            case ("sub", str(kind), cursor):
                assert cursor is None or isinstance(cursor, str)
                await enter(kind, cursor)
            case ("resume", int(k)) if model.subs:
                old = model.subs[k % len(model.subs)]
                await enter(old.kind, old.resume_point())
            case ("recv", int(k), int(n), bool(batch)) if open_indexes():
                i = open_indexes()[k % len(open_indexes())]
                if not batch:
                    for _ in range(n):
                        check_one(i)
                elif model.subs[i].can_take():
                    expected = model.subs[i].take_batch(n)
                    got = await real[i].receive_batch(n)
                    assert got == expected, (i, model.subs[i])
                    ids = [e.id for e in got if e.id is not None]
                    if ids:
                        model.subs[i].last_id = ids[-1]
            case ("leave", int(k)) if open_indexes():
                i = open_indexes()[k % len(open_indexes())]
                await real[i].__aexit__(None, None, None)
                model.subs[i].left = True
            case _:
                pass
        for i, m in enumerate(model.subs):
            assert real[i].evicted == m.evicted
            assert real[i].dropped == m.dropped
            # Ended or left: in no topic; else every topic holds its channel
            # (one task and publish_nowait only: never FULL or DIRECT).
            entries = [topic._subscribers.get(real[i]) for topic in real[i]._topics]
            if m.left or m.ended:
                assert real[i]._mode is Mode.DETACHED
                assert entries == [None] * len(entries)
            else:
                assert real[i]._mode is Mode.QUEUE
                assert entries == [real[i]._send_nowait] * len(entries)

    stats = broker.stats()
    for name, topic in model.topics.items():
        if name not in stats:
            continue  # never used
        active = [m for m in model.subs if not m.left and not m.ended and name in m.topics]
        assert stats[name].subscribers == len(active)
        assert stats[name].published == len(topic.ids)
        assert stats[name].evicted == topic.evicted
        assert stats[name].dropped == topic.dropped
        assert stats[name].history_size == len(topic.history)
    # Everything still queued arrives, then each subscription leaves.
    for i in open_indexes():
        while check_one(i) not in (None, trio.EndOfChannel):
            pass
        await real[i].__aexit__(None, None, None)
    # Which interesting cases the script reached (--hypothesis-show-statistics).
    reached: set[str] = set()
    for m in model.subs:
        for name, happened in [
            ("merged", m.merged),
            ("evicted", m.evicted),
            ("final event received", m.final_given),
            ("dropped", m.dropped > 0),
            ("reset", m.reset),
            ("replayed", m.replayed > 0),
            ("merged replay", m.merged and m.replayed > 0),
        ]:
            if happened:
                reached.add(name)
    assert all(s.subscribers == 0 for s in broker.stats().values())
    return reached


@given(
    policy=st.sampled_from(["evict", "drop_oldest", "block"]),
    buffer_size=st.integers(1, 3),
    history_size=st.integers(0, 4),
    script=scripts,
)
def test_topics_follow_the_model(
    policy: str, buffer_size: int, history_size: int, script: list[tuple[object, ...]]
) -> None:
    for name in sorted(trio.run(run_script, policy, buffer_size, history_size, script)):
        event(name)
