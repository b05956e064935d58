"""The smallest trio-sse app: one event stream, and a page that shows it."""

from __future__ import annotations

import time

import trio

from trio_sse import App, Event, EventStream, HTMLResponse, Request, run

app = App()


@app.stream("/clock")
async def clock(request: Request, stream: EventStream) -> None:
    """Send the time every second until the client goes away."""
    while True:
        await stream.send(Event(time.strftime("%H:%M:%S")))
        await trio.sleep(1)


@app.get("/")
async def index(request: Request) -> HTMLResponse:
    """A page whose EventSource follows /clock (and reconnects by itself)."""
    return HTMLResponse(
        "<p id=now>…</p><script>new EventSource('/clock').onmessage = "
        "(e) => { document.getElementById('now').textContent = e.data }</script>"
    )


if __name__ == "__main__":
    run(app, port=8000)  # Ctrl-C ends every stream cleanly, with a `retry:` hint
