"""trio-sse as users run several processes: ``trio-sse serve --workers N`` on Redis.

``bench_memory.py --workers N`` starts a private ``redis-server`` and
``python -m trio_sse serve trio_sse_workers_server:app --workers N``: one port,
N worker processes sharing its accept queue, one ``Broker`` topic on the
Redis Streams backplane (``BENCH_REDIS``) so that every worker's subscribers
get every event. Each worker runs a ticker at ``BENCH_RATE / N`` events per
second (``BENCH_WORKERS``), so a stream receives ``BENCH_RATE`` in all, as
with ``trio_sse_server.py``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import trio

import trio_sse
from trio_sse import App, Broker, Config, Event, RedisBackplane

sys.path.insert(0, str(Path(__file__).parent))
from _common import env_settings, payload

RATE, PADDING = env_settings()
WORKERS = int(os.environ.get("BENCH_WORKERS", "1"))

#: Trusted like trio_sse_server.py: holders connect from many 127.0.0.x. At
#: most 19,500 connections per worker: with max_refusing they stay under a
#: 20,000-descriptor limit. While seven holders open 100,000 streams on two
#: cores, a holder may send its request more than the default 10 s after the
#: accept (the server then closes the silent connection): 60 s here.
CONFIG = Config(max_connections=19_500, trusted_proxies="127.0.0.0/8, ::1", header_timeout=60)
app = App(config=CONFIG)
backplane = RedisBackplane(os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379"))
app.background(backplane.run)
broker = Broker(backplane=backplane)
topic = broker.topic("ticker")
app.add_route("/sub", trio_sse.topic_stream(broker, ["ticker"]))


@app.background
async def ticker() -> None:
    """This worker's share of the ticks."""
    pad = "x" * PADDING
    period = WORKERS / RATE
    seq = 0
    deadline = trio.current_time()
    while True:
        deadline += period
        await trio.sleep_until(deadline)
        seq += 1
        await topic.publish(Event(data=payload(seq, pad)))
