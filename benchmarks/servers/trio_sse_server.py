"""trio-sse: the same ticker through a Broker topic, on the raw server or any ASGI server.

Run on trio-sse's raw h11 server with ``python trio_sse_server.py --port P``,
or under hypercorn with ``hypercorn --worker-class trio trio_sse_server:app``
(rate and padding then come from ``BENCH_RATE`` / ``BENCH_PADDING``).

The ticker publishes one :class:`~trio_sse.Event` per tick to the ``ticker``
topic; each ``GET /sub`` subscribes and forwards what it receives. The event's
wire bytes are encoded once, so the broadcast costs one encode per tick.
"""

from __future__ import annotations

import functools
import gc
import os
import sys
import time
from pathlib import Path
from typing import Any

import trio

import trio_sse
from trio_sse import App, Config, Event, serve

sys.path.insert(0, str(Path(__file__).parent))
from _common import env_settings, parse_args, payload

RATE, PADDING = env_settings()

#: 10,000 clients plus the harness's probe must fit under max_connections;
#: load generators connect from several 127.0.0.x source addresses
#: (``bench_memory.py``), all trusted like 127.0.0.1 (no per-client limits).
CONFIG = Config(max_connections=20_000, trusted_proxies="127.0.0.0/8, ::1")


def _broker_class() -> Any:
    """``trio_sse.Broker``, or the private module's while it is not re-exported."""
    broker = getattr(trio_sse, "Broker", None)
    if broker is None:
        try:
            from trio_sse._broker import Broker as broker
        except ImportError:
            return None
    return broker


def missing() -> str | None:
    """Why this server cannot run with the installed trio-sse, or ``None``."""
    if _broker_class() is None:
        return "trio_sse.Broker (topics) is not available yet"
    return None


def asgi_missing() -> str | None:
    """Why ``app`` cannot run under an ASGI server yet, or ``None``."""
    reason = missing()
    if reason:
        return reason
    if not callable(app):
        return "trio_sse.App is not ASGI-callable yet"
    return None


app = App(config=CONFIG)

if missing() is None:
    broker = _broker_class()()
    topic = broker.topic("ticker")

    # The framework's topic route: batches queued events into one write and,
    # while a connection keeps up, writes straight from the publisher's task.
    app.add_route("/sub", trio_sse.topic_stream(broker, ["ticker"]))

    @app.get("/gc")
    async def gc_probe(request: trio_sse.Request) -> dict[str, float]:
        """The tracked objects and the time of one full collection (``bench_memory.py --gc``)."""
        objects = len(gc.get_objects())
        started = time.perf_counter()
        gc.collect()
        return {"objects": objects, "full_collection_ms": (time.perf_counter() - started) * 1e3}

    @app.background
    async def ticker() -> None:
        pad = "x" * PADDING
        period = 1.0 / RATE
        seq = 0
        deadline = trio.current_time()
        while True:
            deadline += period
            await trio.sleep_until(deadline)
            seq += 1
            # publish(), not publish_nowait(): a large fan-out yields between
            # slices (TopicOptions.fanout_slice) instead of holding the loop.
            await topic.publish(Event(data=payload(seq, pad)))


#: ``bench_memory.py --release-every S``: every S seconds, the recipe of
#: docs/deploying.md (*Memory after many connects and disconnects*).
RELEASE_EVERY = float(os.environ.get("BENCH_RELEASE_EVERY", "0"))

if RELEASE_EVERY and missing() is None:
    #: How often the recipe ran, and its longest run (it holds the loop).
    releases = {"count": 0, "max_ms": 0.0}

    @app.background
    async def release_memory() -> None:
        while True:
            await trio.sleep(RELEASE_EVERY)
            started = time.perf_counter()
            gc.collect(1)
            gc.freeze()
            gc.collect()
            trio_sse.release_memory()
            took = (time.perf_counter() - started) * 1e3
            releases["count"] += 1
            releases["max_ms"] = max(releases["max_ms"], took)

    @app.get("/releases")
    async def release_probe(request: trio_sse.Request) -> dict[str, float]:
        """How often the memory recipe ran, and its longest run in ms."""
        return releases


def main() -> None:
    global RATE, PADDING
    args = parse_args(__doc__.splitlines()[0])
    RATE, PADDING = args.rate, args.padding
    reason = missing()
    if reason:
        sys.exit(f"trio_sse_server: {reason}")
    trio.run(functools.partial(serve, app, args.host, args.port, config=CONFIG))


if __name__ == "__main__":
    main()
