"""The fan-out server of ``benchmarks/bench_h2.py``: one topic, published at a fixed rate.

``--kind raw`` is trio-sse's own server on plain TCP (HTTP/1.1), ``raw-tls``
the same with TLS (ALPN: HTTP/2 or HTTP/1.1), ``hypercorn-tls`` the same App
under hypercorn's trio worker with TLS (HTTP/2). Every kind streams
``/events/t`` (a ``topic_stream``) and publishes ``--rate`` events a second of
``--size`` bytes of data, heartbeats off. Prints ``PORT <n>`` once listening.
"""

from __future__ import annotations

import argparse
import logging
import sys
from functools import partial

import trio

import trio_sse


def make_app(rate: float, size: int, config: trio_sse.Config) -> trio_sse.App:
    app = trio_sse.App(config=config)
    broker = trio_sse.Broker(trio_sse.TopicOptions(buffer_size=64, history_size=16))
    topic = broker.topic("t")
    app.add_route("/events/{topic}", trio_sse.topic_stream(broker))
    event = trio_sse.Event("x" * size)

    @app.background
    async def publish() -> None:
        # Ticks of 10 ms: rate/100 events each, so high rates stay smooth.
        per_tick = rate / 100
        owed = 0.0
        while True:
            owed += per_tick
            while owed >= 1:
                topic.publish_nowait(event)
                owed -= 1
            await trio.sleep(0.01)

    return app


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kind", choices=["raw", "raw-tls", "hypercorn-tls"], required=True)
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--cert", default="", help="PEM with the key and the chain")
    parser.add_argument("--max-streams", type=int, default=1000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    config = trio_sse.Config(
        heartbeat_interval=None,
        certfile=args.cert if args.kind == "raw-tls" else "",
        max_streams_per_client=100_000,
        max_connections_per_client=100_000,
        h2_max_concurrent_streams=args.max_streams,
        write_timeout=5.0,
    )
    app = make_app(args.rate, args.size, config)
    async with trio.open_nursery() as nursery:
        if args.kind.startswith("raw"):
            listeners = await nursery.start(partial(trio_sse.serve, app, "127.0.0.1", 0))
            port = listeners[0].socket.getsockname()[1]
        else:
            import hypercorn.config
            import hypercorn.trio

            hc = hypercorn.config.Config()
            hc.bind = ["127.0.0.1:0"]
            hc.certfile = hc.keyfile = args.cert
            hc.accesslog = None
            hc.h2_max_concurrent_streams = args.max_streams
            binds = await nursery.start(partial(hypercorn.trio.serve, app, hc))
            port = int(binds[0].rpartition(":")[2])
        print(f"PORT {port}", flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    try:
        trio.run(main)
    except KeyboardInterrupt:
        sys.exit(0)
