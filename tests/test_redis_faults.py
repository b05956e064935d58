"""RedisBackplane under faults on a real redis-server: kill -9, data loss, lag.

Every test ends by comparing what each subscriber received with what the
stream holds (XRANGE): every event exactly once and in order, or an explicit
reset event where Redis lost data.
"""

from __future__ import annotations

import re

import pytest
import trio
from backplanes import publish_retrying, receive_n, start_node, stream_ids, wait_connected
from redis_servers import RedisServer

from trio_sse import BackplaneUnavailableError, Event, Subscription, TopicOptions

BIG = TopicOptions(buffer_size=2000, history_size=2000)


def stream_content(server: RedisServer, key: str = "trio-sse:{t}") -> list[str]:
    """The ids of every entry in *key*, oldest first."""
    lines = server.cli("XRANGE", key, "-", "+").splitlines()
    return [line for line in lines if re.fullmatch(r"\d+-\d+", line)]


async def drain_until(sub: Subscription, n: int) -> list[Event]:
    return await receive_n(sub, n)


async def test_kill_9_and_restart_with_aof_loses_and_repeats_nothing(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    n = 300
    with trio.fail_after(30):
        backplane_a, a = await start_node(nursery, redis_server.url, options=BIG)
        _, b = await start_node(nursery, redis_server.url, options=BIG)
        async with a.subscribe("t") as sub_a, b.subscribe("t") as sub_b:

            async def publish_all() -> None:
                for i in range(n):
                    await publish_retrying(a, "t", Event(f"e{i}"))
                    await trio.sleep(0.002)

            async def crash() -> None:
                await trio.sleep(0.2)
                redis_server.kill()  # SIGKILL, mid-stream
                await trio.sleep(0.3)
                await trio.to_thread.run_sync(redis_server.start)

            async with trio.open_nursery() as chaos:
                chaos.start_soon(publish_all)
                chaos.start_soon(crash)
            await wait_connected(backplane_a)
            expected = stream_content(redis_server)
            assert len(expected) >= n  # retries after an ambiguous failure may add one
            got_a = await receive_n(sub_a, len(expected))
            got_b = await receive_n(sub_b, len(expected))
            assert backplane_a.stats().reconnects == 1
            # Nothing more is queued: no duplicate arrives after the stream's end.
            await trio.sleep(0.1)
            assert sub_a.queued == sub_b.queued == 0
    assert stream_ids(got_a) == stream_ids(got_b) == expected
    assert all(e.event != "reset" for e in got_a + got_b)
    assert len({e.id for e in got_a}) == len(expected)


async def test_restart_without_data_sends_reset_and_a_new_epoch(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    with trio.fail_after(20):
        backplane_a, a = await start_node(nursery, redis_server.url, options=BIG)
        _, b = await start_node(nursery, redis_server.url, options=BIG)
        async with a.subscribe("t") as sub_a, b.subscribe("t") as sub_b:
            before = [await a.publish("t", Event(f"old{i}")) for i in range(5)]
            assert await receive_n(sub_a, 5) == await receive_n(sub_b, 5) == before
            await trio.to_thread.run_sync(lambda: redis_server.restart(keep_data=False))
            after = await publish_retrying(a, "t", Event("new"))
            resets = [await sub_a.receive(), await sub_b.receive()]
            news = [await sub_a.receive(), await sub_b.receive()]
        assert [r.event for r in resets] == ["reset", "reset"]
        assert resets[0].id == resets[1].id  # both processes agree on the new epoch
        assert news == [after, after]
        old_epoch = before[0].id.split("-")[0]  # type: ignore[union-attr]
        assert after.id is not None
        assert not after.id.startswith(old_epoch)
        assert backplane_a.stats().epoch_resets == 1
        # A browser that comes back with an id of the lost epoch gets a reset.
        async with b.subscribe("t", before[-1].id) as resumed:
            assert (await resumed.receive()).event == "reset"
        # One that comes back with the reset's id resumes from the new epoch.
        async with b.subscribe("t", resets[0].id) as resumed:
            assert await resumed.receive() == after


async def test_a_flushed_stream_is_noticed_through_the_epoch_tag(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    """FLUSHALL while every process stays connected: no reconnect happens."""
    with trio.fail_after(10):
        backplane, broker = await start_node(nursery, redis_server.url, options=BIG)
        async with broker.subscribe("t") as sub:
            await broker.publish("t", Event("old"))
            await sub.receive()
            redis_server.cli("FLUSHALL")
            new = await broker.publish("t", Event("new"))
            reset, event = await receive_n(sub, 2)
        assert reset.event == "reset"
        assert event == new
        assert backplane.stats().reconnects == 0
        assert backplane.stats().epoch_resets == 1


# Appends 200 entries and trims the stream to 40 in one atomic step, so a
# reader blocked in XREAD wakes up to find its position trimmed away.
_BURST = """
for i = 1, 200 do redis.call('XADD', KEYS[1], '*', 'data', 'burst' .. i) end
redis.call('XTRIM', KEYS[1], 'MAXLEN', 40)
return 1
"""


async def test_a_reader_that_falls_a_streams_length_behind_resets_instead_of_skipping(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    with trio.fail_after(10):
        backplane, broker = await start_node(
            nursery, redis_server.url, options=BIG, read_count=8, stream_min_length=8
        )
        async with broker.subscribe("t") as sub:
            await broker.publish("t", Event("before"))
            assert (await sub.receive()).data == "before"
            redis_server.cli("EVAL", _BURST, "1", "trio-sse:{t}")
            reset = await sub.receive()
            rest = await receive_n(sub, 40)
        assert reset.event == "reset"
        assert [e.data for e in rest] == [f"burst{i}" for i in range(161, 201)]
        assert backplane.stats().gaps == 1


async def test_a_reader_that_keeps_up_never_checks_or_resets(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    """The same burst without trimming: all 200 arrive, no reset."""
    with trio.fail_after(10):
        backplane, broker = await start_node(
            nursery, redis_server.url, options=BIG, read_count=8, stream_min_length=8
        )
        async with broker.subscribe("t") as sub:
            await broker.publish("t", Event("before"))
            await sub.receive()
            script = _BURST.replace("redis.call('XTRIM', KEYS[1], 'MAXLEN', 40)", "")
            redis_server.cli("EVAL", script, "1", "trio-sse:{t}")
            rest = await receive_n(sub, 200)
        assert [e.data for e in rest] == [f"burst{i}" for i in range(1, 201)]
        assert backplane.stats().gaps == 0


async def test_data_lost_while_disconnected_is_found_on_reconnect(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    """Redis comes back with its epoch key but an older stream (a lost AOF tail).

    Only the reconnect check can see this: no new epoch tag will arrive.
    """
    with trio.fail_after(15):
        backplane, broker = await start_node(
            nursery, redis_server.url, options=BIG, reconnect_delay=1.0
        )
        async with broker.subscribe("t") as sub:
            first = await broker.publish("t", Event("kept"))
            assert first.id is not None
            epoch = first.id.split("-")[0]
            await broker.publish("t", Event("lost"))
            await receive_n(sub, 2)
            record = redis_server.cli("GET", "trio-sse:{t}:epoch")
            assert record.startswith(epoch + " ")
            await trio.to_thread.run_sync(lambda: redis_server.restart(keep_data=False))
            # Before the backplane reconnects (>= 0.5 s): the state after losing
            # the tail of the stream, as an older AOF would leave it.
            redis_server.cli("SET", "trio-sse:{t}:epoch", record)
            kept_id = first.id.split("-", 1)[1]
            redis_server.cli("XADD", "trio-sse:{t}", kept_id, "data", "kept")
            reset = await sub.receive()
            redis_server.cli("XADD", "trio-sse:{t}", "*", "data", "next")
            event = await sub.receive()
        assert reset.event == "reset"
        assert reset.id is not None
        assert not reset.id.startswith(epoch)
        assert event.data == "next"
        assert event.id is not None
        assert event.id.startswith(reset.id.split("-")[0])
        assert backplane.stats().epoch_resets == 1


async def test_data_lost_with_only_other_producers_is_found_on_reconnect(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    with trio.fail_after(15):
        _, broker = await start_node(nursery, redis_server.url, options=BIG)
        async with broker.subscribe("t") as sub:
            await broker.publish("t", Event("old"))
            await sub.receive()
            await trio.to_thread.run_sync(lambda: redis_server.restart(keep_data=False))
            reset = await sub.receive()
            redis_server.cli("XADD", "trio-sse:{t}", "*", "data", "from redis-cli")
            event = await sub.receive()
        assert reset.event == "reset"
        assert event.data == "from redis-cli"


async def test_falling_behind_again_is_counted_but_not_logged_again(
    redis_server: RedisServer, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(10):
        backplane, broker = await start_node(
            nursery, redis_server.url, options=BIG, read_count=8, stream_min_length=8
        )
        async with broker.subscribe("t") as sub:
            for round in range(3):
                await broker.publish("t", Event(f"before{round}"))
                while (await sub.receive()).data != f"before{round}":
                    pass
                redis_server.cli("EVAL", _BURST, "1", "trio-sse:{t}")
                while (await sub.receive()).data != "burst200":
                    pass
        assert backplane.stats().gaps == 3
    warnings = [r for r in caplog.records if "fell behind" in r.getMessage()]
    assert len(warnings) == 1


async def test_a_frozen_redis_is_unavailable_not_healthy(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    """SIGSTOP: connections stay open, nothing answers. Publishing must not hang."""
    with trio.fail_after(20):
        backplane, broker = await start_node(
            nursery, redis_server.url, options=BIG, command_timeout=0.5, read_block=0.2
        )
        async with broker.subscribe("t") as sub:
            before = await broker.publish("t", Event("before"))
            assert await sub.receive() == before
            redis_server.freeze()
            try:
                start = trio.current_time()
                with pytest.raises(BackplaneUnavailableError):
                    await broker.publish("t", Event("frozen"))
                assert trio.current_time() - start < 3
                await wait_connected(backplane, False)
                assert backplane.stats().reconnects == 1
            finally:
                redis_server.thaw()
            await wait_connected(backplane)
            after = await broker.publish("t", Event("after"))
            got = [before]
            while got[-1] != after:
                got.append(await sub.receive())
        # The frozen publish failed for its caller, but Redis had it in its
        # socket buffer and wrote it when thawed (Redis does not say): the
        # subscriber sees exactly what the stream holds, once, in order.
        assert stream_ids(got) == stream_content(redis_server)
        assert [e.data for e in got] in (["before", "after"], ["before", "frozen", "after"])


async def test_a_key_that_is_not_a_stream_fails_visibly_and_recovers(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    """Another program SETs a topic's key: publishes to it fail, nothing crashes."""
    with trio.fail_after(20):
        backplane, broker = await start_node(
            nursery, redis_server.url, ["t", "u"], options=BIG, reconnect_max_delay=0.2
        )
        async with broker.subscribe("u") as sub:
            redis_server.cli("DEL", "trio-sse:{t}")
            redis_server.cli("SET", "trio-sse:{t}", "not a stream")
            with pytest.raises(BackplaneUnavailableError, match=r"WRONGTYPE|wrong kind"):
                await broker.publish("t", Event("refused"))
            # The reader's XREAD over both keys is refused too: visible, not fatal.
            await wait_connected(backplane, False)
            assert "wrong kind" in (backplane.stats().last_error or "")
            redis_server.cli("DEL", "trio-sse:{t}")
            await wait_connected(backplane)
            ok = await publish_retrying(broker, "u", Event("fine"))
            assert await sub.receive() == ok
