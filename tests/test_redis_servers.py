"""The real-Redis fixtures, and the coredis behaviour the Redis backplane relies on.

These tests pin down what coredis (on trio) does in the situations the
backplane must handle: a cancelled blocking XREAD, a server that is down,
keys of one XREAD or pipeline on different cluster slots.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import coredis
import coredis.exceptions
import pytest
import trio
from redis_servers import RedisCluster, RedisServer, free_port


async def test_set_get_with_coredis_and_cli(redis_server: RedisServer) -> None:
    with trio.fail_after(10):
        async with coredis.Redis(redis_server.host, redis_server.port, decode_responses=True) as r:
            assert await r.set("greeting", "hello")
            assert await r.get("greeting") == "hello"
    assert redis_server.cli("GET", "greeting") == "hello"
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}"
    assert (redis_server.dir / "redis.log").exists()


async def test_restart_keeps_an_xadded_entry_with_aof(redis_server: RedisServer) -> None:
    entry_id = redis_server.cli("XADD", "prices", "*", "data", "42")
    redis_server.restart()  # kill -9 right after the write: appendfsync always keeps it
    with trio.fail_after(10):
        async with coredis.Redis(redis_server.host, redis_server.port, decode_responses=True) as r:
            entries = await r.xrange("prices")
    assert [(e.identifier, dict(e.field_values)) for e in entries] == [(entry_id, {"data": "42"})]


async def test_restart_without_data_comes_back_empty(redis_server: RedisServer) -> None:
    port = redis_server.port
    redis_server.cli("XADD", "prices", "*", "data", "42")
    redis_server.restart(keep_data=False)
    assert redis_server.port == port
    assert redis_server.cli("EXISTS", "prices") == "0"


async def test_factory_servers_are_independent(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    durable = redis_server_factory()
    volatile = redis_server_factory(appendonly=False)
    assert durable.port != volatile.port
    durable.cli("SET", "k", "durable")
    volatile.cli("SET", "k", "volatile")
    durable.restart()
    volatile.restart()  # keeps its (absent) files: nothing was persisted
    assert durable.cli("GET", "k") == "durable"
    assert volatile.cli("GET", "k") == ""


def test_stop_ends_the_process_and_a_taken_port_is_reported() -> None:
    first = RedisServer(appendonly=False)
    first.start()
    try:
        clash = RedisServer(port=first.port)
        with pytest.raises(RuntimeError, match="Address already in use"):
            clash.start()
        clash.close()
    finally:
        first.close()
    assert not first.running
    with pytest.raises(RuntimeError):
        first.cli("PING")


async def test_cancelled_blocking_xread_leaves_the_client_usable(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(10):
        async with coredis.Redis(redis_server.host, redis_server.port, decode_responses=True) as r:
            start = trio.current_time()
            with trio.move_on_after(0.2) as scope:
                await r.xread({"prices": "$"}, block=5000)
            assert scope.cancelled_caught
            assert trio.current_time() - start < 2  # cancelled, not waited out
            assert await r.ping() == "PONG"
            entry_id = redis_server.cli("XADD", "prices", "*", "data", "1")
            result = await r.xread({"prices": "0-0"}, block=1000)
            assert result is not None
            assert [e.identifier for e in result["prices"]] == [entry_id]


async def test_command_while_server_down_raises_coredis_connection_error(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(20):
        async with coredis.Redis(redis_server.host, redis_server.port, decode_responses=True) as r:
            await r.set("k", "v")
            redis_server.kill()
            with pytest.raises(coredis.exceptions.ConnectionError) as info:
                await r.get("k")
            # coredis' own class, not the builtin ConnectionError (an OSError).
            assert not isinstance(info.value, OSError)
            redis_server.start()
            assert await r.get("k") == "v"  # the same client reconnects


async def test_server_killed_during_blocking_xread_raises_connection_error(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(20):
        async with coredis.Redis(redis_server.host, redis_server.port, decode_responses=True) as r:
            await r.ping()

            async def kill_soon() -> None:
                await trio.sleep(0.2)
                await trio.to_thread.run_sync(redis_server.kill)

            with pytest.raises(ExceptionGroup) as info:  # noqa: PT012 (our nursery groups it)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(kill_soon)
                    await r.xread({"prices": "$"}, block=5000)
            assert info.group_contains(coredis.exceptions.ConnectionError, depth=1)


async def test_exception_leaving_the_client_block_comes_out_grouped() -> None:
    # coredis' client context runs a nursery: whatever escapes it is wrapped.
    with trio.fail_after(10), pytest.raises(ExceptionGroup) as info:
        async with coredis.Redis("127.0.0.1", free_port()) as r:
            await r.ping()  # nothing listens there
    assert [type(e) for e in info.value.exceptions] == [coredis.exceptions.ConnectionError]


async def test_cluster_keys_on_different_nodes(redis_cluster: RedisCluster) -> None:
    assert redis_cluster.node_for_key("{a}x") != redis_cluster.node_for_key("{b}y")
    with trio.fail_after(10):
        async with coredis.RedisCluster(
            startup_nodes=redis_cluster.startup_nodes, decode_responses=True
        ) as r:
            await r.set("{a}x", "1")
            await r.set("{b}y", "2")
            assert (await r.get("{a}x"), await r.get("{b}y")) == ("1", "2")
    # Each key really lives on the master that owns its slot.
    assert redis_cluster.server_for_key("{a}x").cli("GET", "{a}x") == "1"
    assert redis_cluster.server_for_key("{b}y").cli("GET", "{b}y") == "2"


async def test_cluster_xread_over_several_slots_is_refused(redis_cluster: RedisCluster) -> None:
    a_id = redis_cluster.server_for_key("{a}s").cli("XADD", "{a}s", "*", "data", "A")
    b_id = redis_cluster.server_for_key("{b}s").cli("XADD", "{b}s", "*", "data", "B")
    with trio.fail_after(10):
        async with coredis.RedisCluster(
            startup_nodes=redis_cluster.startup_nodes, decode_responses=True
        ) as r:
            # Refused by the client before anything is sent: one XREAD per slot.
            with pytest.raises(coredis.exceptions.ClusterCrossSlotError):
                await r.xread({"{a}s": "0-0", "{b}s": "0-0"}, block=100)
            a = await r.xread({"{a}s": "0-0"}, block=100)
            b = await r.xread({"{b}s": "0-0"}, block=100)
    assert a is not None
    assert b is not None
    assert [e.identifier for e in a["{a}s"]] == [a_id]
    assert [e.identifier for e in b["{b}s"]] == [b_id]


async def test_cluster_pipeline_spans_nodes_but_not_transactions(
    redis_cluster: RedisCluster,
) -> None:
    with trio.fail_after(10):
        async with coredis.RedisCluster(
            startup_nodes=redis_cluster.startup_nodes, decode_responses=True
        ) as r:
            async with r.pipeline() as pipe:
                first = pipe.xadd("{a}p", {"data": "1"})
                second = pipe.xadd("{b}p", {"data": "2"})
                third = pipe.xadd("{a}p", {"data": "3"})
            ids = [await first, await second, await third]
            assert all(ids)
            a1, a2 = (tuple(map(int, str(i).split("-"))) for i in (ids[0], ids[2]))
            assert a1 < a2
            assert await r.xlen("{a}p") == 2
            assert await r.xlen("{b}p") == 1
            with pytest.raises(coredis.exceptions.ClusterTransactionError):  # noqa: PT012
                async with r.pipeline(transaction=True) as pipe:
                    pipe.set("{a}t", "1")
                    pipe.set("{b}t", "2")
            assert await r.exists(["{a}t", "{b}t"]) == 0


def test_cluster_nodes_and_startup_nodes(redis_cluster: RedisCluster) -> None:
    assert len(redis_cluster.nodes) == 3
    assert all(port < 55000 for _, port in redis_cluster.nodes)
    assert redis_cluster.startup_nodes == [{"host": h, "port": p} for h, p in redis_cluster.nodes]
    started = time.monotonic()
    assert all("cluster_state:ok" in s.cli("CLUSTER", "INFO") for s in redis_cluster.servers)
    assert time.monotonic() - started < 5
