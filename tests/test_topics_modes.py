"""A subscription's delivery mode: explicit, the same in every topic, set in one place."""

from __future__ import annotations

import ast
from pathlib import Path

import trio
import trio.testing
from brokers import make_broker

import trio_sse
from trio_sse._broker import Broker
from trio_sse._delivery import Mode
from trio_sse._event import Event
from trio_sse._options import TopicOptions
from trio_sse._subscription import Subscription

BLOCK = TopicOptions(buffer_size=1, overflow="block", block_deadline=50)


def assert_mode(broker: Broker, sub: Subscription, mode: Mode) -> None:
    """Check *mode* and that every topic's fan-out entry matches it."""
    assert sub._mode is mode
    entries = [topic._subscribers.get(sub) for topic in sub._topics]
    if mode is Mode.DETACHED:
        assert entries == [None] * len(entries)
        return
    expected = {
        Mode.QUEUE: sub._send_nowait,
        Mode.FULL: sub._full,
        Mode.DIRECT: sub._direct,
    }[mode]
    assert entries == [expected] * len(entries)
    # The block backlog is non-empty exactly while FULL.
    assert bool(sub._backlog) == (mode is Mode.FULL)


async def test_queue_after_entering_detached_after_leaving() -> None:
    broker = make_broker()
    sub = broker.subscribe_many(["a", "b"])
    assert sub._mode is Mode.DETACHED
    async with sub:
        assert_mode(broker, sub, Mode.QUEUE)
    assert_mode(broker, sub, Mode.DETACHED)


async def test_full_while_a_block_backlog_waits_then_queue_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = make_broker(BLOCK)
    async with broker.subscribe_many(["a", "b"]) as sub, trio.open_nursery() as nursery:
        broker.publish_nowait("a", Event("a1"))
        assert_mode(broker, sub, Mode.QUEUE)
        nursery.start_soon(broker.publish, "b", Event("b1"))  # waits in the backlog
        await trio.testing.wait_all_tasks_blocked()
        assert_mode(broker, sub, Mode.FULL)
        # A publish on the other topic queues behind the backlog, in order.
        nursery.start_soon(broker.publish, "a", Event("a2"))
        await trio.testing.wait_all_tasks_blocked()
        assert_mode(broker, sub, Mode.FULL)
        assert sub.receive_nowait().data == "a1"  # b1 moves into the channel
        assert_mode(broker, sub, Mode.FULL)
        assert sub.receive_nowait().data == "b1"  # a2 moves: backlog empty
        assert_mode(broker, sub, Mode.QUEUE)
        assert sub.receive_nowait().data == "a2"
    assert not sub.evicted


async def test_eviction_from_full_detaches_everywhere(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = make_broker(BLOCK)
    async with broker.subscribe_many(["a", "b"]) as sub:
        broker.publish_nowait("a", Event("a1"))
        with trio.move_on_after(1):
            await broker.publish("b", Event("b1"))  # cancelled: evicts
        assert sub.evicted
        assert_mode(broker, sub, Mode.DETACHED)


async def test_direct_while_the_writer_is_idle_queue_when_the_sink_refuses() -> None:
    broker = make_broker()
    taken: list[Event] = []
    accept = True

    def sink(event: Event) -> bool:
        if accept:
            taken.append(event)
        return accept

    batches: list[list[Event]] = []
    async with broker.subscribe_many(["a", "b"]) as sub, trio.open_nursery() as nursery:
        sub._set_direct_sink(sink)

        async def writer() -> None:
            while batch := await sub.receive_batch():
                batches.append(batch)

        assert_mode(broker, sub, Mode.QUEUE)
        nursery.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        assert_mode(broker, sub, Mode.DIRECT)
        broker.publish_nowait("a", Event("a1"))  # taken by the sink
        assert_mode(broker, sub, Mode.DIRECT)
        accept = False
        broker.publish_nowait("b", Event("b1"))  # refused: the channel again
        assert_mode(broker, sub, Mode.QUEUE)
        broker.publish_nowait("a", Event("a2"))  # queued behind b1
        await trio.testing.wait_all_tasks_blocked()
        assert_mode(broker, sub, Mode.DIRECT)  # the writer is idle again
        broker.close()
    assert [e.data for e in taken] == ["a1"]
    assert [[e.data for e in b] for b in batches] == [["b1", "a2"]]
    assert_mode(broker, sub, Mode.DETACHED)


async def test_closing_one_topic_detaches_from_all() -> None:
    broker = make_broker()
    async with broker.subscribe_many(["a", "b"]) as sub:
        topic_b = broker.topics["b"]
        broker.topics["a"].close()
        assert sub.end_reason == "closed"
        assert sub not in topic_b._subscribers
        assert sub._mode is Mode.DETACHED


def test_only_set_mode_writes_the_fan_out_entries() -> None:
    """Every write to a topic's ``_subscribers`` is in ``Delivery._set_mode``."""
    package = Path(trio_sse.__file__).parent
    writers: list[str] = []
    for path in sorted(package.glob("*.py")):
        tree = ast.parse(path.read_text())
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                target = None
                if isinstance(node, ast.Assign | ast.AugAssign | ast.Delete):
                    targets = (
                        node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
                    )
                    target = next((t for t in targets if isinstance(t, ast.Subscript)), None)
                    target = target.value if target is not None else None
                elif (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in {"pop", "popitem", "clear", "update", "setdefault"}
                ):
                    target = node.func.value
                if isinstance(target, ast.Attribute) and target.attr == "_subscribers":
                    writers.append(f"{path.name}:{func.name}")
    assert sorted(set(writers)) == ["_delivery.py:_set_mode"]
