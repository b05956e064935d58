"""An App whose stream handlers report what they went through, for server tests.

``probe_app()`` returns the App and its :class:`Probe`: each stream handler
sets ``started`` when it runs, ``cancelled`` (with ``cancelled_at``, the trio
clock) when the server cancels it, and ``finished`` when it returns either way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from trio_sse import App, Config, Event, EventStream, Request


class Probe:
    """What the stream handlers of :func:`probe_app` went through."""

    def __init__(self) -> None:
        self.started = trio.Event()
        self.cancelled = trio.Event()
        self.finished = trio.Event()
        self.cancelled_at: float | None = None
        self.sent = 0  # events /firehose sent

    async def watch(self, body: Callable[[], Awaitable[None]]) -> None:
        """Run a handler's ``body``, recording its start, cancellation and end."""
        self.started.set()
        try:
            await body()
        except trio.Cancelled:
            self.cancelled_at = trio.current_time()
            self.cancelled.set()
            raise
        finally:
            self.finished.set()


def probe_app(
    config: Config | None = None, *, event_size: int = 1000, greet: bool = False
) -> tuple[App, Probe]:
    """Routes: ``/`` and ``POST /echo`` (plain), and the streams

    * ``/events``: two events, then the end;
    * ``/idle``: nothing (with ``greet``, one ``ready`` event first), forever;
    * ``/firehose``: events of ``event_size`` bytes as fast as it can write;
    * ``/ticks``: one event a second, ids 0, 1, 2...
    """
    app = App(config=config)
    probe = Probe()

    @app.get("/")
    async def index(request: Request) -> str:
        return "hello"

    @app.post("/echo")
    async def echo(request: Request) -> bytes:
        return await request.body()

    @app.stream("/events")
    async def events(request: Request, stream: EventStream) -> None:
        await stream.send(Event("one", id="1"))
        await stream.send(Event("two", event="x"))

    @app.stream("/idle")
    async def idle(request: Request, stream: EventStream) -> None:
        async def body() -> None:
            if greet:
                await stream.send("ready")
            await trio.sleep_forever()

        await probe.watch(body)

    @app.stream("/firehose")
    async def firehose(request: Request, stream: EventStream) -> None:
        big = Event("x" * event_size)

        async def body() -> None:
            while True:
                await stream.send(big)
                probe.sent += 1

        await probe.watch(body)

    @app.stream("/ticks")
    async def ticks(request: Request, stream: EventStream) -> None:
        async def body() -> None:
            n = 0
            while True:
                await stream.send(Event(str(n), id=str(n)))
                n += 1
                await trio.sleep(1)

        await probe.watch(body)

    return app, probe
