"""The App the proxy tests serve with hypercorn (``tests/proxies.py``)."""

from __future__ import annotations

from trio_sse import App, Request

app = App()


@app.get("/hello")
async def hello(request: Request) -> str:
    return "hello"
