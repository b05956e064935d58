"""RedisBackplane against a real redis-server: delivery, ids, resume.

Several backplane + broker pairs in one test stand for several processes
(separate connections, readers and topics). Faults are in
test_redis_faults.py, real worker processes in test_redis_processes.py.
"""

from __future__ import annotations

import re

import pytest
import trio
import trio.testing
from backplanes import publish_retrying, receive_n, start_node, stream_ids, wait_connected
from brokers import Ticks, start_direct_writers
from redis_servers import RedisServer

from trio_sse import (
    BackplaneUnavailableError,
    Event,
    RedisBackplane,
    TopicOptions,
)

ID = re.compile(r"[0-9a-f]{8}-[0-9]+-[0-9]+")


async def test_a_publish_reaches_subscribers_in_every_process(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    with trio.fail_after(10):
        _, a = await start_node(nursery, redis_server.url)
        _, b = await start_node(nursery, redis_server.url)
        async with a.subscribe("t") as sub_a, b.subscribe("t") as sub_b:
            published = await a.publish("t", Event("hello", event="greeting"))
            assert published.id is not None
            assert ID.fullmatch(published.id)
            got_a, got_b = await sub_a.receive(), await sub_b.receive()
    assert got_a == got_b == published
    assert published.data == "hello"
    assert published.event == "greeting"


async def test_every_process_sees_one_order_with_increasing_ids(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    n = 200
    with trio.fail_after(20):
        _, a = await start_node(nursery, redis_server.url, options=TopicOptions(buffer_size=1000))
        _, b = await start_node(nursery, redis_server.url, options=TopicOptions(buffer_size=1000))
        async with a.subscribe("t") as sub_a, b.subscribe("t") as sub_b:
            async with trio.open_nursery() as publishers:
                for broker, tag in ((a, "a"), (b, "b")):

                    async def publish(broker=broker, tag=tag) -> None:
                        for i in range(n // 2):
                            await broker.publish("t", Event(f"{tag}{i}"))

                    publishers.start_soon(publish)
            seen_a = await receive_n(sub_a, n)
            seen_b = await receive_n(sub_b, n)
    assert seen_a == seen_b
    order = [tuple(map(int, s.split("-"))) for s in stream_ids(seen_a)]
    assert order == sorted(order)
    assert len(set(order)) == n
    # Each publisher's own events keep their order.
    for tag in "ab":
        mine = [e.data for e in seen_a if e.data and e.data.startswith(tag)]
        assert mine == [f"{tag}{i}" for i in range(n // 2)]


async def test_publish_nowait_queues_without_an_id_and_bounds_the_outbox(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    with trio.fail_after(10):
        backplane, broker = await start_node(nursery, redis_server.url, outbox_size=3)
        async with broker.subscribe("t") as sub:
            for i in range(3):
                queued = broker.publish_nowait("t", Event(f"e{i}"))
                assert queued.id is None
                assert queued.data == f"e{i}"
            with pytest.raises(trio.WouldBlock):
                broker.publish_nowait("t", Event("one too many"))
            assert backplane.stats().outbox == 3
            assert [e.data for e in await receive_n(sub, 3)] == ["e0", "e1", "e2"]
        assert backplane.stats().published == 3


async def test_events_with_ids_or_without_content_are_refused(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    with trio.fail_after(10):
        _, broker = await start_node(nursery, redis_server.url)
        with pytest.raises(ValueError, match="assigns ids"):
            await broker.publish("t", Event("x", id="mine"))
        with pytest.raises(ValueError, match="assigns ids"):
            broker.publish_nowait("t", Event("x", id="mine"))
        with pytest.raises(ValueError, match="needs data"):
            await broker.publish("t", Event())


async def test_resume_on_another_process_replays_exactly_the_missed_events(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    with trio.fail_after(10):
        _, a = await start_node(nursery, redis_server.url)
        async with a.subscribe("t") as sub:
            published = [await a.publish("t", Event(f"e{i}")) for i in range(10)]
            seen = await receive_n(sub, 4)
        assert seen == published[:4]
        # A process started later has none of these in its local history.
        _, c = await start_node(nursery, redis_server.url)
        async with c.subscribe("t", seen[-1].id) as resumed:
            assert resumed.replayed == 6
            assert not resumed.reset
            replay = await receive_n(resumed, 6)
            live = await a.publish("t", Event("live"))
            assert await resumed.receive() == live
    assert replay == published[4:]


async def test_hand_off_from_redis_history_to_live_has_no_gap_or_duplicate(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    """Subscribe with an old id while another process publishes non-stop."""
    options = TopicOptions(buffer_size=1000, history_size=1000)
    with trio.fail_after(20):
        _, a = await start_node(nursery, redis_server.url, options=options)
        first = await a.publish("t", Event("first"))
        stop = trio.Event()

        async def publish_forever() -> None:
            i = 0
            while not stop.is_set():
                await a.publish("t", Event(f"p{i}"))
                i += 1

        nursery.start_soon(publish_forever)
        await trio.sleep(0.05)
        got: list[Event] = []
        for _ in range(5):  # several fresh processes, each joining mid-flight
            _, c = await start_node(nursery, redis_server.url, options=options)
            async with c.subscribe("t", first.id) as sub:
                got = await receive_n(sub, 150)
            ids = stream_ids(got)
            assert len(set(ids)) == len(ids)
            # Exactly the stream's entries after `first`, in order.
            assert first.id is not None
            start = first.id.split("-", 1)[1]
            entries = redis_server.cli("XRANGE", "trio-sse:{t}", "(" + start, "+", "COUNT", "150")
            expected = [line for line in entries.splitlines() if re.fullmatch(r"\d+-\d+", line)]
            assert ids == expected
        stop.set()


async def test_unknown_trimmed_and_too_old_ids_get_the_reset_event(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    options = TopicOptions(history_size=5)
    with trio.fail_after(10):
        _, a = await start_node(
            nursery, redis_server.url, options=options, read_count=8, stream_min_length=8
        )
        published = [await a.publish("t", Event(f"e{i}")) for i in range(300)]
        _, c = await start_node(
            nursery, redis_server.url, options=options, read_count=8, stream_min_length=8
        )
        newest = published[-1].id
        for bad in (
            published[0].id,  # trimmed from the stream
            published[-7].id,  # in the stream, but 6 events > history_size ago
            "0badc0de-1-0",  # another epoch
            "not-an-id",
        ):
            async with c.subscribe("t", bad) as sub:
                reset = await sub.receive()
                assert sub.reset
                assert (reset.event, reset.data, reset.id) == ("reset", "t", newest)
        async with c.subscribe("t", published[-6].id) as sub:
            assert await receive_n(sub, 5) == published[-5:]


async def test_an_id_trimmed_from_the_stream_gets_the_reset_event(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    """Trimmed by age (MINID): few events follow the id, yet it is gone."""
    options = TopicOptions(history_size=10_000, history_max_age=0.5)
    with trio.fail_after(10):
        _, a = await start_node(nursery, redis_server.url, options=options)
        old = [await a.publish("t", Event(f"old{i}")) for i in range(300)]
        await trio.sleep(0.6)
        new = [await a.publish("t", Event(f"new{i}")) for i in range(5)]
        # MINID ~ removed the whole 100-entry nodes that had aged out.
        assert int(redis_server.cli("XLEN", "trio-sse:{t}")) == 5
        _, c = await start_node(nursery, redis_server.url, options=options)
        async with c.subscribe("t", old[-1].id) as sub:
            reset = await sub.receive()
            assert sub.reset
            assert reset.event == "reset"
            assert reset.id == new[-1].id
        async with c.subscribe("t", new[0].id) as sub:
            assert await receive_n(sub, 4) == new[1:]


async def test_resume_from_before_the_first_event(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    with trio.fail_after(10):
        _, a = await start_node(nursery, redis_server.url)
        async with a.subscribe("t") as sub:
            start = sub.cursor  # "<epoch>-0-0": the stream is empty
            assert start is not None
            assert start.endswith("-0-0")
        events = [await a.publish("t", Event(f"e{i}")) for i in range(3)]
        _, c = await start_node(nursery, redis_server.url)
        async with c.subscribe("t", start) as sub:
            assert await receive_n(sub, 3) == events


async def test_composite_cursors_resume_every_topic_on_another_process(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    with trio.fail_after(10):
        _, a = await start_node(nursery, redis_server.url, topics=["x", "y"])
        async with a.subscribe_many(["x", "y"]) as sub:
            for i in range(3):
                await a.publish("x", Event(f"x{i}"))
                await a.publish("y", Event(f"y{i}"))
            seen = await receive_n(sub, 2)
        assert [e.data for e in seen] == ["x0", "y0"]
        cursor = seen[-1].id
        _, c = await start_node(nursery, redis_server.url, topics=["x", "y"])
        async with c.subscribe_many(["x", "y"], cursor) as resumed:
            replay = [e.data or "" for e in await receive_n(resumed, 4)]
            # Each topic in order; across topics, by publish time to the
            # millisecond (two streams have no common order within one).
            assert [d for d in replay if d[0] == "x"] == ["x1", "x2"]
            assert [d for d in replay if d[0] == "y"] == ["y1", "y2"]
            await a.publish("y", Event("live"))
            live = await resumed.receive()
        # The last cursor resumes both topics exactly where the stream stands.
        async with a.subscribe_many(["x", "y"], live.id) as again:
            await a.publish("x", Event("after"))
            assert (await again.receive()).data == "after"


async def test_any_producer_can_publish_with_xadd(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    with trio.fail_after(10):
        backplane, broker = await start_node(nursery, redis_server.url)
        async with broker.subscribe("t") as sub:
            redis_server.cli(
                "XADD",
                "trio-sse:{t}",
                "*",
                "data",
                "line 1\nline 2",
                "event",
                "news",
                "retry",
                "1500",
            )
            redis_server.cli("XADD", "trio-sse:{t}", "*", "data", "bad", "retry", "soon")
            redis_server.cli("XADD", "trio-sse:{t}", "*", "other", "field")
            redis_server.cli("XADD", "trio-sse:{t}", "*", "comment", "just a comment")
            first, second = await receive_n(sub, 2)
    assert (first.data, first.event, first.retry) == ("line 1\nline 2", "news", 1500)
    assert first.encode().startswith(b"event: news\nid: ")
    assert second.comment == "just a comment"
    assert second.data is None
    assert backplane.stats().malformed == 2


async def test_publishing_while_redis_is_down_fails_at_once_and_writes_nothing(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    with trio.fail_after(15):
        backplane, broker = await start_node(nursery, redis_server.url)
        async with broker.subscribe("t") as sub:
            await broker.publish("t", Event("before"))
            assert (await sub.receive()).data == "before"
            redis_server.kill()
            # The reader notices within read_block; a publish fails then too.
            await wait_connected(backplane, False)
            with pytest.raises(BackplaneUnavailableError):
                await broker.publish("t", Event("lost?"))
            with pytest.raises(BackplaneUnavailableError, match="nothing was published"):
                broker.publish_nowait("t", Event("never"))
            stats = backplane.stats()
            assert not stats.connected
            assert stats.last_error
            assert stats.reconnects == 1
            await trio.to_thread.run_sync(redis_server.start)
            after = await publish_retrying(broker, "t", Event("after"))
            # The subscription stayed open and sees what follows, nothing else.
            assert await sub.receive() == after
        assert "lost?" not in redis_server.cli("XRANGE", "trio-sse:{t}", "-", "+")


async def test_settings_are_validated() -> None:
    for kwargs in (
        {"outbox_size": 0},
        {"max_batch": -1},
        {"read_count": 1.5},
        {"read_block": 0},
        {"reconnect_delay": -1},
        {"retry_after": True},
        {"key_prefix": "a{b"},
        {"read_count": 100, "stream_min_length": 10},
    ):
        with pytest.raises(ValueError, match="must be"):
            RedisBackplane(**kwargs)  # type: ignore[arg-type]


async def test_not_running_backplane_refuses_to_publish() -> None:
    from trio_sse import Broker

    broker = Broker(backplane=RedisBackplane("redis://127.0.0.1:1"))
    with pytest.raises(BackplaneUnavailableError, match="not running"):
        await broker.publish("t", Event("x"))
    assert repr(broker.backplane).startswith("<RedisBackplane 'redis://127.0.0.1:1' disconnected")


async def test_a_client_ahead_of_this_process_is_not_reset(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    """It comes from a process whose reader already delivered an id ours has not.

    The XADD below blocks the event loop, so our reader cannot have delivered
    the entry when the client resumes from it: the subscription waits for it.
    """
    with trio.fail_after(20):
        _, a = await start_node(nursery, redis_server.url)
        _, b = await start_node(nursery, redis_server.url)
        epoch = (b.topic("t").last_event_id or "").split("-")[0]
        for i in range(10):
            stream_id = redis_server.cli("XADD", "trio-sse:{t}", "*", "data", f"x{i}").strip()
            async with b.subscribe("t", f"{epoch}-{stream_id}") as sub:
                assert not sub.reset
                following = await a.publish("t", Event(f"y{i}"))
                assert await sub.receive() == following  # no reset, no repeat of x


async def test_a_forged_id_from_the_future_is_reset_after_a_bounded_wait(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    with trio.fail_after(10):
        _, b = await start_node(nursery, redis_server.url, read_block=0.2)
        epoch = (b.topic("t").last_event_id or "").split("-")[0]
        start = trio.current_time()
        async with b.subscribe("t", f"{epoch}-99999999999999-0") as sub:
            assert (await sub.receive()).event == "reset"
        assert trio.current_time() - start < 2


async def test_entries_over_max_entry_size_are_refused_and_skipped(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    with trio.fail_after(10):
        backplane, broker = await start_node(nursery, redis_server.url, max_entry_size=1000)
        async with broker.subscribe("t") as sub:
            with pytest.raises(ValueError, match="max_entry_size"):
                await broker.publish("t", Event("x" * 1000))
            with pytest.raises(ValueError, match="max_entry_size"):
                broker.publish_nowait("t", Event("x" * 1000))
            redis_server.cli("XADD", "trio-sse:{t}", "*", "data", "y" * 2000)
            fits = await broker.publish("t", Event("x" * 900))
            assert await sub.receive() == fits
        assert backplane.stats().malformed == 1


async def test_the_reader_slices_a_large_fan_out(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    # An event read from Redis for more than fanout_slice subscribers goes out
    # in slices, as a local publish() does: other tasks run between them.
    with trio.fail_after(30):
        _, node = await start_node(nursery, redis_server.url, options=TopicOptions(fanout_slice=50))
        topic = node.topic("t")
        ticks = Ticks()
        received: list[list[str]] = [[] for _ in range(500)]
        async with trio.open_nursery() as inner:
            await start_direct_writers(inner, topic, ticks, received)
            inner.start_soon(ticks.run)
            for name in "abc":
                await node.publish("t", Event(name))
            while not all(len(got) == 3 for got in received):
                await trio.sleep(0.01)
            # 1,500 deliveries without slices; a task waits at most two slices.
            assert ticks.longest <= 100
            inner.cancel_scope.cancel()
    assert all(got == ["a", "b", "c"] for got in received)
