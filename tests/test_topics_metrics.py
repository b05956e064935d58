"""Topic statistics, Prometheus exposition, and resource leaks."""

from __future__ import annotations

import contextlib
import gc
import sys
import tracemalloc
import weakref

import pytest
import trio
from brokers import make_broker
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from trio_sse._event import Event
from trio_sse._metrics import METRICS_CONTENT_TYPE, BrokerCollector, broker_metrics_text
from trio_sse._options import TopicOptions, TopicStats


async def test_topic_and_broker_stats() -> None:
    broker = make_broker(TopicOptions(buffer_size=2, history_size=3))
    topic = broker.topic("t")
    assert topic.stats() == TopicStats("t", 0, 0, 0, 0, 0, 0, 0, 0, 0)
    async with topic.subscribe() as slow, topic.subscribe() as lagging:
        topic.publish_nowait(Event("1"))
        assert (topic.stats().max_lag, lagging.queued) == (1, 1)
        topic.publish_nowait(Event("2"))
        assert len(await lagging.receive_batch()) == 2
        topic.publish_nowait(Event("3"))  # slow overflows: evicted
        assert slow.evicted
        assert slow.queued == 0
        topic.publish_nowait(Event("4"))
        async with topic.subscribe("garbage"), topic.subscribe("2"):
            stats = topic.stats()
    assert stats == TopicStats(
        name="t",
        subscribers=3,
        published=4,
        delivered=6,
        dropped=0,
        evicted=1,
        replayed=2,
        resets=1,
        history_size=3,
        max_lag=2,
    )
    assert broker.stats() == {"t": topic.stats()}
    assert topic.stats().subscribers == 0
    with pytest.raises(AttributeError):
        stats.published = 0  # type: ignore[misc]


async def test_metrics_text() -> None:
    broker = make_broker()
    async with broker.subscribe("prices"), broker.subscribe_many(["prices", 'we"ird']):
        broker.publish_nowait("prices", Event("1"))
        broker.publish_nowait("prices", Event("2"))
        text = broker_metrics_text(broker)
    assert METRICS_CONTENT_TYPE.startswith("text/plain; version=0.0.4")
    samples = {
        (sample.name, sample.labels["topic"]): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }
    assert samples[("trio_sse_topic_subscribers", "prices")] == 2
    assert samples[("trio_sse_topic_subscribers", 'we"ird')] == 1
    assert samples[("trio_sse_topic_published_total", "prices")] == 2
    assert samples[("trio_sse_topic_delivered_total", "prices")] == 4
    assert samples[("trio_sse_topic_max_subscriber_lag", "prices")] == 2
    assert samples[("trio_sse_topic_history_size", "prices")] == 2
    for name in ("dropped", "evicted", "replayed", "resets"):
        assert samples[(f"trio_sse_topic_{name}_total", "prices")] == 0


async def test_collector_in_a_registry() -> None:
    broker = make_broker()
    broker.publish_nowait("a", Event("x"))
    registry = CollectorRegistry()
    collector = BrokerCollector(broker, namespace="app")
    registry.register(collector)
    assert b'app_topic_published_total{topic="a"} 1.0' in generate_latest(registry)
    assert registry.get_sample_value("app_topic_published_total", {"topic": "a"}) == 1
    with pytest.raises(ValueError, match="Duplicated"):
        registry.register(BrokerCollector(broker, namespace="app"))
    assert b"app_topic" in broker_metrics_text(broker, namespace="app")


async def test_missing_prometheus_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(sys.modules):
        if name == "prometheus_client" or name.startswith("prometheus_client."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ImportError, match=r"trio-sse\[prometheus\]"):
        broker_metrics_text(make_broker())
    with pytest.raises(ImportError, match=r"pip install"):
        BrokerCollector(make_broker())


# -- leaks ---------------------------------------------------------------------


async def test_ten_thousand_subscribe_cycles_leave_nothing_behind() -> None:
    broker = make_broker(TopicOptions(buffer_size=4, history_size=10))
    topic = broker.topic("t")
    tasks_before = trio.lowlevel.current_statistics().tasks_living
    refs: list[weakref.ref[object]] = []

    async def cycle(i: int) -> None:
        kind = i % 4
        if kind == 0:
            async with topic.subscribe() as sub:
                topic.publish_nowait(Event("x"))
                await sub.receive()
        elif kind == 1:
            last = int(topic.last_event_id or "1")
            async with topic.subscribe(str(max(1, last - 3))) as sub:
                with contextlib.suppress(trio.WouldBlock):
                    sub.receive_nowait()
        elif kind == 2:
            with trio.CancelScope() as scope:
                async with broker.subscribe_many(["t", "u"]) as sub:
                    scope.cancel()
                    await sub.receive()
        else:
            async with topic.subscribe() as sub:
                for _ in range(5):  # overflow: evicted
                    topic.publish_nowait(Event("y"))
        if i % 1000 == 0:
            refs.append(weakref.ref(sub))
            refs.append(weakref.ref(sub._queue))

    for i in range(200):  # warm up caches and interned objects
        await cycle(i)
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for i in range(10_000):
            await cycle(i)
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    stats = broker.stats()
    assert stats["t"].subscribers == 0
    assert stats["u"].subscribers == 0
    assert not topic._subscribers
    assert stats["t"].history_size == 10
    assert trio.lowlevel.current_statistics().tasks_living == tasks_before  # no task leaked
    assert all(ref() is None for ref in refs)  # subscriptions and channels freed
    # Growth is bounded (history of 10 events, counters): far below 10,000 cycles' worth.
    assert after - before < 64 * 1024, after - before
