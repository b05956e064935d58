"""The trio-sse demo: the server's own live figures, a notifications feed, resume made visible.

Run it with ``trio-sse demo [--port N]`` (or ``trio-sse serve trio_sse.demo:app``,
or ``hypercorn --worker-class trio trio_sse.demo:app``) and open the page in
several tabs. Every tab holds one ``EventSource`` on ``/events``, a stream of
four topics of one :class:`~trio_sse.Broker`:

* ``clock``: the server's time, once per tick (event type ``clock``);
* ``metrics``: the server's *own* figures, measured each tick (type
  ``metrics``): open streams, events delivered per second, evictions, resets,
  each topic's subscriber lag, and the process's CPU (``getrusage``) and
  resident memory (``/proc/self/statm``);
* ``notifications``: what any tab publishes through the form (type
  ``notification``), via :func:`~trio_sse.publish_endpoint`;
* ``bulk``: bursts of padded events (type ``bulk``) that make a frozen tab
  fall behind, so that its eviction and resume can be watched.

Each event's id is a composite cursor of the four topics, so a tab that
reconnects sends ``Last-Event-ID`` and receives exactly what it missed from
the history; the page checks every topic's sequence numbers and shows gaps and
duplicates (there should be none), reconnections, evictions and ``reset``
events (after a server restart: ids carry a per-run epoch).

Authorization is shown, not bypassed: publishing (``POST /notify``), bursts
(``POST /burst``) and dropping every stream (``POST /drop``) need the demo's
token as ``Authorization: Bearer``. The token is random per run and printed
on the page, standing in for one a real app would hand out after a login.
``/stats`` serves the broker's counters as JSON and ``/metrics`` in Prometheus
format (``pip install -e '.[prometheus]'``; the nox ``demo`` session does).
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import secrets
import time
from importlib import resources
from typing import Any, Final, final

import trio

from ._app import App
from ._auth import bearer_token, secret_matches
from ._broker import Broker
from ._config import Config
from ._event import Event
from ._http import EventStream, HTMLResponse, HTTPException, StreamResponse
from ._options import TopicOptions
from ._request import Request
from ._routes import metrics_endpoint, publish_endpoint, topic_stream

__all__ = ["DemoOptions", "app", "broker", "make_app"]

#: The topics of ``/events``, in cursor order, and each one's event type.
TOPICS: Final = {"clock": "clock", "metrics": "metrics", "notifications": "notification"}
TOPICS_WITH_BULK: Final = (*TOPICS, "bulk")


@final
@dataclasses.dataclass(frozen=True, slots=True)
class DemoOptions:
    """Settings of the demo app (see :func:`make_app`).

    Args:
        tick_interval: seconds between clock and metrics events.
        retry_ms: the ``retry:`` sent first on every stream: how soon a
            browser reconnects after losing it.
        token: the token that authorizes publishing; ``None``: a random one.
        max_burst_count: the most events one ``POST /burst`` may publish.
        max_burst_size: the most padding bytes per burst event.
        burst_interval: seconds between the events of a burst (a burst of
            400 events of 32 KB is then about 16 MB/s).
        buffer_size: events queued per tab before it is evicted.
        history_size: events kept per topic for resuming tabs.
        history_max_age: seconds an event stays in the history.
    """

    tick_interval: float = 1.0
    retry_ms: int = 1000
    token: str | None = None
    max_burst_count: int = 1000
    max_burst_size: int = 32 * 1024
    burst_interval: float = 0.002
    buffer_size: int = 64
    history_size: int = 1000
    history_max_age: float = 120.0


def cpu_seconds() -> float:
    """User plus system CPU time this process has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_bytes() -> int:
    """Resident memory now (``/proc``), else the peak (``getrusage``)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if os.uname().sysname == "Darwin" else peak * 1024


@final
class Sampler:
    """Rates since the previous sample: CPU percent and events delivered per second."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._started = time.monotonic()
        self._last = (self._started, cpu_seconds(), self._delivered())

    def _delivered(self) -> int:
        return sum(s.delivered for s in self._broker.stats().values())

    def sample(self, open_streams: int) -> dict[str, Any]:
        """The server's figures as a JSON-ready dict."""
        now, cpu, delivered = time.monotonic(), cpu_seconds(), self._delivered()
        then, cpu_then, delivered_then = self._last
        self._last = (now, cpu, delivered)
        elapsed = max(now - then, 1e-6)
        stats = self._broker.stats()
        return {
            "open_streams": open_streams,
            "delivered_per_s": round((delivered - delivered_then) / elapsed, 1),
            "evicted": sum(s.evicted for s in stats.values()),
            "resets": sum(s.resets for s in stats.values()),
            "replayed": sum(s.replayed for s in stats.values()),
            "cpu_percent": round(100 * (cpu - cpu_then) / elapsed, 1),
            "rss_mb": round(rss_bytes() / 2**20, 1),
            "uptime_s": round(now - self._started),
            "topics": {
                name: {
                    "subscribers": s.subscribers,
                    "published": s.published,
                    "max_lag": s.max_lag,
                    "history": s.history_size,
                }
                for name, s in stats.items()
            },
        }


def _page(token: str) -> str:
    html = resources.files("trio_sse").joinpath("static/demo.html").read_text("utf-8")
    return html.replace("__DEMO_TOKEN__", token)


def make_app(options: DemoOptions | None = None, *, config: Config | None = None) -> App:
    """Build a demo app with its own broker (a fresh epoch: a new "server run").

    ``app.state`` holds ``broker``, ``token``, ``options``, ``streams`` (the
    cancel scopes of open ``/events`` streams) and ``tick_interval`` (read
    each tick, so tests may shorten it).
    """
    opts = options if options is not None else DemoOptions()
    topic_options = TopicOptions(
        buffer_size=opts.buffer_size,
        history_size=opts.history_size,
        history_max_age=opts.history_max_age,
        eviction_event=Event("too far behind: resuming from the history", event="evicted"),
    )
    demo_broker = Broker(topic_options, create_topics=False)
    for name in TOPICS_WITH_BULK:
        demo_broker.declare(name)
    token = opts.token if opts.token is not None else secrets.token_urlsafe(12)
    app = App(config=config if config is not None else Config(max_body_size=16 * 1024))
    app.state.broker = demo_broker
    app.state.token = token
    app.state.options = opts
    app.state.tick_interval = opts.tick_interval
    streams: set[trio.CancelScope] = set()
    app.state.streams = streams

    def authorized(request: Request, topic: str = "") -> bool:
        return secret_matches(bearer_token(request), token)

    def require_token(request: Request) -> None:
        if not authorized(request):
            raise HTTPException(403, "send the demo token as 'Authorization: Bearer TOKEN'")

    @app.get("/")
    async def index(request: Request) -> HTMLResponse:
        """The dashboard page."""
        return HTMLResponse(_page(token))

    @app.get("/healthz")
    async def healthz(request: Request) -> dict[str, str]:
        """Liveness probe for load balancers."""
        return {"status": "ok"}

    @app.get("/stats")
    async def stats(request: Request) -> dict[str, dict[str, object]]:
        """The broker's per-topic counters."""
        return {name: dataclasses.asdict(s) for name, s in demo_broker.stats().items()}

    topics_stream = topic_stream(demo_broker, TOPICS_WITH_BULK)

    @app.get("/events")
    async def events(request: Request) -> StreamResponse:
        """The four topics as one stream; ``POST /drop`` can end it."""
        inner = await topics_stream(request)

        async def run(stream: EventStream) -> None:
            with trio.CancelScope() as scope:
                streams.add(scope)
                try:
                    await stream.send(Event(retry=opts.retry_ms))
                    await inner.handler(stream)
                finally:
                    streams.discard(scope)

        return StreamResponse(run, headers=inner.headers, expires_at=inner.expires_at)

    @app.post("/drop")
    async def drop(request: Request) -> dict[str, int]:
        """End every open ``/events`` stream, as a crashing proxy would."""
        require_token(request)
        dropped = list(streams)
        for scope in dropped:
            scope.cancel()
        return {"dropped": len(dropped)}

    @app.post("/burst")
    async def burst(request: Request) -> dict[str, Any]:
        """Publish ``count`` bulk events of ``size`` bytes at once (JSON body)."""
        require_token(request)
        body = await request.json()
        if not isinstance(body, dict):
            raise HTTPException(400, 'send a JSON object: {"count": N, "size": BYTES}')
        count, size = body.get("count", 100), body.get("size", 1024)
        if type(count) is not int or not 1 <= count <= opts.max_burst_count:
            raise HTTPException(400, f"count must be an integer from 1 to {opts.max_burst_count}")
        if type(size) is not int or not 0 <= size <= opts.max_burst_size:
            raise HTTPException(400, f"size must be an integer from 0 to {opts.max_burst_size}")
        pad = "x" * size
        first = last = None
        for i in range(count):
            published = demo_broker.publish_nowait("bulk", Event(f"{i} {pad}", event="bulk"))
            first = first or published.id
            last = published.id
            # Paced: a tab that reads keeps up; one that stopped falls behind.
            await trio.sleep(opts.burst_interval)
        return {"count": count, "first": first, "last": last}

    notify = publish_endpoint(demo_broker, authorize=authorized, topic="notifications")

    @app.post("/notify")
    async def notify_route(request: Request) -> Any:
        """Publish a notification: JSON ``{"data": ..., "event": "notification"}``.

        Also a form or plain text (see :func:`~trio_sse.publish_endpoint`);
        ids stay the broker's, so every tab can check its sequence.
        """
        require_token(request)  # before the body is read, as publish_endpoint does
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        fields: Any = {}
        if kind == "application/json":
            fields = await request.json()
        elif kind == "application/x-www-form-urlencoded":
            fields = await request.form()
        if isinstance(fields, dict) and (
            set(fields) - {"data", "event"} or fields.get("event", "notification") != "notification"
        ):
            raise HTTPException(
                400, 'a notification has "data" and at most "event": "notification"'
            )
        return await notify(request)

    @app.background
    async def ticker() -> None:
        """Publish the clock and the server's figures once per tick, for every tab at once."""
        sampler = Sampler(demo_broker)
        while True:
            now = time.time()
            clock = time.strftime("%H:%M:%S", time.localtime(now))
            demo_broker.publish_nowait("clock", Event(clock, event="clock"))
            figures = sampler.sample(len(streams))
            demo_broker.publish_nowait(
                "metrics", Event(json.dumps(figures, separators=(",", ":")), event="metrics")
            )
            interval = app.state.tick_interval
            await trio.sleep(interval - (time.time() % interval))

    app.add_route("/metrics", metrics_endpoint(demo_broker))
    return app


app = make_app()
#: The broker of :data:`app`.
broker: Broker = app.state.broker
