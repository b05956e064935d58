"""trio-sse with a chosen backplane: the scale-out benchmark's server.

The same ticker and ``GET /sub`` route as ``trio_sse_server.py`` (same
payload, ``data: <CLOCK_MONOTONIC ns> <seq> <padding>``), on trio-sse's raw
server, with the topic on the in-process backplane (``--backplane local``) or
on Redis Streams (``--backplane redis --redis-url URL``). With Redis, several
processes share the topic: start one with ``--publish`` (the only ticker) and
others with ``--no-publish``; each process's subscribers get every event
through its own reader loop, the publishing process's too.

With Redis, a tick publishes with ``publish_nowait``. A tick that Redis cannot
take (outbox full: ``trio.WouldBlock``; Redis down:
``BackplaneUnavailableError``) is skipped and counted, and its sequence
number is not used, so a gap seen by the load generator is an event that was
accepted and then lost. Counters go to stdout once a second (the harness
writes them to the server's log file).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path

import trio

import trio_sse
from trio_sse import App, Broker, Config, Event, TopicOptions, serve

sys.path.insert(0, str(Path(__file__).parent))
from _common import payload

#: 10,000 clients plus the harness's probe must fit under max_connections.
CONFIG = Config(max_connections=20_000)


def parse_args() -> argparse.Namespace:
    """Host, port, rate, padding, and the backplane."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("BENCH_PORT", "8000")))
    parser.add_argument("--rate", type=float, default=10.0, help="events/s")
    parser.add_argument("--padding", type=int, default=64, help="bytes of padding per event")
    parser.add_argument("--backplane", choices=["local", "redis"], default="local")
    parser.add_argument(
        "--overflow",
        choices=["evict", "drop_oldest", "block"],
        default="evict",
        help="the topic's overflow policy",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    parser.add_argument(
        "--publish",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the ticker in this process (one process of a group only)",
    )
    return parser.parse_args()


def build(args: argparse.Namespace) -> tuple[App, trio_sse.Topic]:
    """The app: ``GET /sub`` on the ``ticker`` topic, and the ticker if ``--publish``."""
    app = App(config=CONFIG)
    options = TopicOptions(overflow=args.overflow)
    if args.backplane == "redis":
        backplane = trio_sse.RedisBackplane(args.redis_url)
        broker = Broker(options, backplane=backplane)
        app.background(backplane.run)
        app.background(functools.partial(report, backplane))
    else:
        broker = Broker(options)
    topic = broker.topic("ticker")
    app.add_route("/sub", trio_sse.topic_stream(broker, ["ticker"]))
    if args.publish:
        app.background(functools.partial(ticker, topic, args.rate, args.padding))
    return app, topic


skipped = {"would_block": 0, "unavailable": 0}


async def ticker(topic: trio_sse.Topic, rate: float, padding: int) -> None:
    """Publish one event per period; late ticks go out at once (saturation)."""
    pad = "x" * padding
    period = 1.0 / rate
    seq = 0
    deadline = trio.current_time()
    while True:
        deadline += period
        await trio.sleep_until(deadline)
        try:
            topic.publish_nowait(Event(data=payload(seq + 1, pad)))
        except trio.WouldBlock:
            skipped["would_block"] += 1
            continue
        except trio_sse.BackplaneUnavailableError:
            skipped["unavailable"] += 1
            continue
        seq += 1


async def report(backplane: trio_sse.RedisBackplane) -> None:
    """Print the backplane's counters once a second (to the log file)."""
    while True:
        await trio.sleep(1)
        st = backplane.stats()
        print(
            f"stats connected={st.connected} published={st.published} "
            f"received={st.received} reconnects={st.reconnects} "
            f"publish_errors={st.publish_errors} outbox={st.outbox} gaps={st.gaps} "
            f"epoch_resets={st.epoch_resets} skipped={skipped}",
            flush=True,
        )


def main() -> None:
    args = parse_args()
    app, _ = build(args)
    trio.run(functools.partial(serve, app, args.host, args.port, config=CONFIG))


if __name__ == "__main__":
    main()
