"""The trio-sse demo: a live clock and a small dashboard over one event stream.

Run it with ``trio-sse demo`` (or ``trio-sse serve trio_sse.demo:app``) and open
http://127.0.0.1:8000/. The page's ``EventSource`` receives named events:

* ``clock``: the server's time, every second;
* ``metrics``: a JSON snapshot of a few simulated gauges, every second.

Every event carries an id, so a reconnecting browser sends ``Last-Event-ID``
and the page shows where it resumed.
"""

from __future__ import annotations

import json
import math
import random
import time
from importlib import resources

import trio

from . import Event, EventStream, HTMLResponse, Request
from ._app import App

__all__ = ["app"]

app = App()


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


def metrics_snapshot(seq: int) -> dict[str, float]:
    """Simulated gauges: smooth waves with a little noise."""
    t = seq / 10
    return {
        "requests_per_s": round(800 + 300 * math.sin(t) + random.uniform(-40, 40), 1),
        "cpu_percent": round(45 + 25 * math.sin(t / 3 + 1) + random.uniform(-3, 3), 1),
        "queue_depth": max(0, round(12 + 10 * math.sin(t / 2) + random.uniform(-2, 2))),
    }


@app.stream("/events")
async def events(request: Request, stream: EventStream) -> None:
    """A clock and a metrics event every second, each with an id."""
    seq = 0
    if stream.last_event_id and stream.last_event_id.isdigit():
        seq = int(stream.last_event_id)
        await stream.send(Event(f"resumed after event {seq}", event="resumed"))
    while True:
        seq += 1
        now = time.time()
        await stream.send_many(
            [
                Event(time.strftime("%H:%M:%S", time.localtime(now)), event="clock"),
                Event(json.dumps(metrics_snapshot(seq)), event="metrics", id=str(seq)),
            ]
        )
        await trio.sleep(1 - (time.time() % 1))
