"""The trio-sse demo: a live clock and a small dashboard on shared topics.

Run it with ``trio-sse demo`` (or ``trio-sse serve trio_sse.demo:app``) and open
http://127.0.0.1:8000/ in several tabs. One background ticker publishes to two
topics of a :class:`~trio_sse.Broker` every second:

* ``clock``: the server's time (event type ``clock``);
* ``metrics``: a JSON snapshot of a few simulated gauges (type ``metrics``).

Every tab subscribes to both topics over one ``EventSource`` (``/events``) and
sees the same events. Each event's id is a composite cursor of both topics, so
a tab that reconnects sends ``Last-Event-ID`` and receives exactly what it
missed from the topics' history. A tab too slow to keep up (a backgrounded tab
on a throttled device, say) is evicted with a ``retry:`` hint and resumes the
same way. ``/stats`` shows the broker's counters as JSON and ``/metrics`` in
Prometheus format (with ``trio-sse[prometheus]`` installed).
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from importlib import resources

import trio

from . import Event, HTMLResponse, Request
from ._app import App
from ._broker import Broker
from ._options import TopicOptions
from ._routes import metrics_endpoint, topic_stream

__all__ = ["app", "broker"]

#: The demo's topics: 64 queued events per tab, ten minutes of history.
broker = Broker(
    TopicOptions(
        buffer_size=64,
        history_size=600,
        history_max_age=600,
        eviction_event=Event(retry=1000, comment="evicted: too far behind; resume in 1 s"),
    ),
    create_topics=False,
)
broker.declare("clock")
broker.declare("metrics")

app = App()
#: Seconds between ticks (tests shorten it).
app.state.tick_interval = 1.0


def _page() -> str:
    return resources.files("trio_sse").joinpath("static/demo.html").read_text("utf-8")


@app.get("/")
async def index(request: Request) -> HTMLResponse:
    """The dashboard page."""
    return HTMLResponse(_page())


@app.get("/healthz")
async def healthz(request: Request) -> dict[str, str]:
    """Liveness probe for load balancers."""
    return {"status": "ok"}


@app.get("/stats")
async def stats(request: Request) -> dict[str, dict[str, object]]:
    """The broker's per-topic counters."""
    return {name: dataclasses.asdict(s) for name, s in broker.stats().items()}


def metrics_snapshot(seq: int) -> dict[str, float]:
    """Simulated gauges: smooth waves with a little noise."""
    t = seq / 10
    return {
        "requests_per_s": round(800 + 300 * math.sin(t) + random.uniform(-40, 40), 1),
        "cpu_percent": round(45 + 25 * math.sin(t / 3 + 1) + random.uniform(-3, 3), 1),
        "queue_depth": max(0, round(12 + 10 * math.sin(t / 2) + random.uniform(-2, 2))),
    }


@app.background
async def ticker() -> None:
    """Publish the clock and the gauges once per tick, for every tab at once."""
    seq = 0
    while True:
        seq += 1
        now = time.time()
        broker.publish_nowait(
            "clock", Event(time.strftime("%H:%M:%S", time.localtime(now)), event="clock")
        )
        broker.publish_nowait("metrics", Event(json.dumps(metrics_snapshot(seq)), event="metrics"))
        interval = app.state.tick_interval
        await trio.sleep(interval - (time.time() % interval))


app.add_route("/events", topic_stream(broker, ["clock", "metrics"]))
app.add_route("/metrics", metrics_endpoint(broker))
