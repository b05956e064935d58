"""RedisBackplane on a real 3-master Redis Cluster: topics on different nodes."""

from __future__ import annotations

import trio
from backplanes import receive_n, start_node, unique_prefix
from redis_servers import RedisCluster

from trio_sse import Event, TopicOptions
from trio_sse._redis_streams import key_slot, stream_key


def topics_on_distinct_nodes(cluster: RedisCluster, prefix: str) -> list[str]:
    """Three topic names whose streams live on three different masters."""
    found: dict[tuple[str, int], str] = {}
    for i in range(1000):
        name = f"topic{i}"
        found.setdefault(cluster.node_for_key(stream_key(prefix, name)), name)
        if len(found) == 3:
            return sorted(found.values())
    raise AssertionError("no three topics on distinct nodes")


def per_topic(events: list[Event], name: str) -> list[str]:
    return [e.data or "" for e in events if (e.data or "").startswith(name + "/")]


def test_our_slot_function_agrees_with_redis(redis_cluster: RedisCluster) -> None:
    server = redis_cluster.servers[0]
    for key in ("trio-sse:{prices}", "plain", "a{b}c", "{}x", "x{}y{z}", "caf\u00e9"):
        assert key_slot(key) == int(server.cli("CLUSTER", "KEYSLOT", key)), key


async def test_topics_on_different_nodes_deliver_and_resume(
    redis_cluster: RedisCluster, nursery: trio.Nursery
) -> None:
    prefix = unique_prefix()
    names = topics_on_distinct_nodes(redis_cluster, prefix)
    host, port = redis_cluster.nodes[0]
    url = f"redis://{host}:{port}"
    options = TopicOptions(buffer_size=500)
    with trio.fail_after(20):
        _, a = await start_node(
            nursery, url, names, cluster=True, key_prefix=prefix, options=options
        )
        _, b = await start_node(
            nursery, url, names, cluster=True, key_prefix=prefix, options=options
        )
        async with a.subscribe_many(names) as sub_a, b.subscribe_many(names) as sub_b:
            published = []
            for i in range(10):
                for name in names:
                    published.append(await b.publish(name, Event(f"{name}/{i}")))
            # publish_nowait batches go out as one pipeline per slot.
            for name in names:
                a.publish_nowait(name, Event(f"{name}/batched"))
            got_a = await receive_n(sub_a, 33)
            got_b = await receive_n(sub_b, 33)
        # Each topic in its exact order, in both processes (topics on
        # different nodes have no common order).
        for name in names:
            expected = [f"{name}/{i}" for i in range(10)] + [f"{name}/batched"]
            assert per_topic(got_a, name) == per_topic(got_b, name) == expected
        # Resume a single topic and the composite cursor on a fresh process.
        _, c = await start_node(
            nursery, url, names, cluster=True, key_prefix=prefix, options=options
        )
        async with c.subscribe(names[1], published[1].id) as single:
            replay = await receive_n(single, 10)
        assert [e.data for e in replay] == [f"{names[1]}/{i}" for i in range(1, 10)] + [
            f"{names[1]}/batched"
        ]
        async with c.subscribe_many(names, got_a[14].id) as merged:
            rest = await receive_n(merged, 18)
        for name in names:
            assert per_topic(rest, name) == per_topic(got_a[15:], name)
