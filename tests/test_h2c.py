"""HTTP/2 without TLS by prior knowledge (``Config.h2c``), beside HTTP/1.1 on one port."""

from __future__ import annotations

import functools
import shutil

import httpx
import pytest
import trio

import trio_sse
from trio_sse import App, Config, Event, EventStream, Request


def make_app() -> App:
    app = App()

    @app.get("/")
    async def index(request: Request) -> str:
        return f"HTTP/{request.http_version}\n"

    @app.stream("/ticks")
    async def ticks(request: Request, stream: EventStream) -> None:
        for i in range(3):
            await stream.send(Event(str(i)))

    return app


async def start(nursery: trio.Nursery, config: Config) -> str:
    serve = functools.partial(trio_sse.serve, make_app(), "127.0.0.1", 0, config=config)
    listeners = await nursery.start(serve)
    return f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"


async def test_prior_knowledge_and_http11_on_one_port(nursery: trio.Nursery) -> None:
    url = await start(nursery, Config(h2c="prior-knowledge"))
    with trio.fail_after(10):
        async with httpx.AsyncClient(http1=False, http2=True) as client:  # prior knowledge
            r = await client.get(url + "/")
            assert (r.http_version, r.text) == ("HTTP/2", "HTTP/2\n")
            r = await client.get(url + "/ticks")
            assert r.text == "data: 0\n\ndata: 1\n\ndata: 2\n\n"
        async with httpx.AsyncClient() as client:
            r = await client.get(url + "/")
            assert (r.http_version, r.text) == ("HTTP/1.1", "HTTP/1.1\n")
        # A request head that arrives in pieces, the first one "P": still HTTP/1.1.
        tcp = await trio.open_tcp_stream("127.0.0.1", int(url.rpartition(":")[2]))
        for piece in (b"P", b"OST / HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"):
            await tcp.send_all(piece)
            await trio.sleep(0.05)
        assert (await tcp.receive_some(100)).startswith(b"HTTP/1.1 405")
        await tcp.aclose()


async def test_curl_http2_prior_knowledge(nursery: trio.Nursery) -> None:
    curl = shutil.which("curl")
    assert curl is not None, "curl is missing: run `bash .ci/system-deps` (Debian package curl)"
    url = await start(nursery, Config(h2c="prior-knowledge"))
    with trio.fail_after(10):
        result = await trio.run_process(
            [curl, "-sSi", "--http2-prior-knowledge", url + "/ticks"],
            capture_stdout=True,
            capture_stderr=True,
        )
    out = result.stdout.decode()
    assert out.startswith("HTTP/2 200")
    assert out.endswith("data: 0\n\ndata: 1\n\ndata: 2\n\n")


async def test_off_by_default(nursery: trio.Nursery) -> None:
    url = await start(nursery, Config())
    with trio.fail_after(10), pytest.raises(httpx.RemoteProtocolError):
        async with httpx.AsyncClient(http1=False, http2=True) as client:
            await client.get(url + "/")


async def test_silent_connection_is_closed_at_header_timeout(nursery: trio.Nursery) -> None:
    url = await start(nursery, Config(h2c="prior-knowledge", header_timeout=0.3))
    with trio.fail_after(5):
        tcp = await trio.open_tcp_stream("127.0.0.1", int(url.rpartition(":")[2]))
        start_time = trio.current_time()
        await tcp.send_all(b"PRI * HTTP")  # a prefix of the preface, then nothing
        assert await tcp.receive_some(100) == b""
        assert 0.25 < trio.current_time() - start_time < 2
        await tcp.aclose()


def test_setting_is_checked() -> None:
    with pytest.raises(ValueError, match="h2c"):
        Config(h2c="upgrade")
