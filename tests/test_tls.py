"""TLS on the raw server: handshake deadline and slots, client certificates, settings.

ALPN's choice between HTTP/2 and HTTP/1.1 is tested in ``test_h2.py``.
"""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path

import httpx
import pytest
import trio
from h2_peers import Certs, start_tls_server

from trio_sse import App, Config, Event, EventStream, Request
from trio_sse._cli import _build_config, _parser
from trio_sse._server import Server


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return Certs.make(tmp_path)


def make_app() -> App:
    app = App()

    @app.get("/")
    async def index(request: Request) -> str:
        return f"hello over HTTP/{request.http_version}\n"

    return app


def context(certs: Certs, cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=certs.ca)
    if cert:
        ctx.load_cert_chain(certs.client)
    return ctx


async def test_stalled_handshake_is_cut_at_header_timeout(
    nursery: trio.Nursery, certs: Certs
) -> None:
    app = make_app()
    server = await start_tls_server(nursery, app, certs, header_timeout=0.3)
    with trio.fail_after(5):
        tcp = await trio.open_tcp_stream("127.0.0.1", server.port)
        start = trio.current_time()
        # Closed (or reset: either way cut), no handshake ever sent.
        with contextlib.suppress(trio.BrokenResourceError):
            assert await tcp.receive_some(100) == b""
        assert 0.25 < trio.current_time() - start < 2
        await tcp.aclose()
        assert app.refusals["tls_handshake"] == 1


async def test_handshakes_in_flight_are_limited(nursery: trio.Nursery, certs: Certs) -> None:
    app = make_app()
    server = await start_tls_server(nursery, app, certs, header_timeout=1.0, max_handshakes=1)
    with trio.fail_after(10):
        async with httpx.AsyncClient(verify=context(certs)) as client:
            # Unhindered, a request is quick.
            start = trio.current_time()
            assert (await client.get(server.url + "/")).status_code == 200
            assert trio.current_time() - start < 0.8
        # A client that connects and stalls its handshake holds the one slot
        # until header_timeout cuts it; a new client waits for the slot.
        staller = await trio.open_tcp_stream("127.0.0.1", server.port)
        await trio.sleep(0.1)
        start = trio.current_time()
        async with httpx.AsyncClient(verify=context(certs)) as client:
            assert (await client.get(server.url + "/")).status_code == 200
        assert trio.current_time() - start > 0.7
        await staller.aclose()


@pytest.mark.parametrize("mode", ["required", "optional"])
async def test_client_certificates(nursery: trio.Nursery, certs: Certs, mode: str) -> None:
    app = make_app()
    server = await start_tls_server(nursery, app, certs, client_ca=str(certs.ca), client_cert=mode)
    with trio.fail_after(10):
        async with httpx.AsyncClient(http2=True, verify=context(certs, cert=True)) as client:
            r = await client.get(server.url + "/")
            assert (r.status_code, r.text) == (200, "hello over HTTP/2\n")
        async with httpx.AsyncClient(verify=context(certs)) as client:
            if mode == "optional":
                assert (await client.get(server.url + "/")).status_code == 200
            else:
                with pytest.raises(httpx.TransportError):
                    await client.get(server.url + "/")
                assert app.refusals["tls_handshake"] >= 1


def test_settings_are_checked(certs: Certs, tmp_path: Path) -> None:
    app = make_app()
    with pytest.raises(ValueError, match="cannot load the TLS certificate"):
        Server(app, Config(certfile=str(tmp_path / "missing.pem")))
    with pytest.raises(ValueError, match="cannot load the TLS certificate"):
        Server(app, Config(certfile=str(certs.ca)))  # a certificate without its key
    with pytest.raises(ValueError, match=r"need Config\.certfile"):
        Server(app, Config(keyfile=str(certs.server)))
    with pytest.raises(ValueError, match="client CA"):
        Server(app, Config(certfile=str(certs.server), client_ca=str(tmp_path / "none.pem")))
    with pytest.raises(ValueError, match=r"Config\.alpn"):
        Server(app, Config(certfile=str(certs.server), alpn="spdy/3"))
    with pytest.raises(ValueError, match="client_cert"):
        Config(client_cert="sometimes")
    for name in ("max_handshakes", "h2_max_concurrent_streams", "h2_max_buffer"):
        with pytest.raises(ValueError, match=name):
            Config(**{name: 0})  # type: ignore[arg-type]


def test_cli_options(certs: Certs) -> None:
    args = _parser().parse_args(
        [
            "serve",
            "m:app",
            "--certfile",
            str(certs.server),
            "--keyfile",
            str(certs.server),
            "--client-ca",
            str(certs.ca),
            "--client-cert",
            "optional",
            "--max-handshakes",
            "8",
            "--h2-max-concurrent-streams",
            "50",
        ]
    )
    cfg = _build_config(Config(), args)
    assert (cfg.certfile, cfg.keyfile, cfg.client_ca, cfg.client_cert) == (
        str(certs.server),
        str(certs.server),
        str(certs.ca),
        "optional",
    )
    assert (cfg.max_handshakes, cfg.h2_max_concurrent_streams) == (8, 50)


async def test_connection_limit_closes_without_a_plain_text_answer(
    nursery: trio.Nursery, certs: Certs
) -> None:
    app = make_app()
    server = await start_tls_server(nursery, app, certs, max_connections=1)
    with trio.fail_after(10):
        holder = await trio.open_tcp_stream("127.0.0.1", server.port)  # takes the one slot
        while not server.server.connections:
            await trio.sleep(0.01)
        extra = await trio.open_tcp_stream("127.0.0.1", server.port)
        # Closed at once: no "HTTP/1.1 503" bytes a TLS client would choke on.
        with contextlib.suppress(trio.BrokenResourceError):
            assert await extra.receive_some(100) == b""
        assert app.refusals["max_connections"] == 1
        await extra.aclose()
        await holder.aclose()


def test_cli_says_in_one_line_when_the_certificate_cannot_load(tmp_path: Path) -> None:
    args = _parser().parse_args(["serve", "m:app", "--certfile", str(tmp_path / "none.pem")])
    with pytest.raises(SystemExit, match="trio-sse: cannot load the TLS certificate"):
        _build_config(Config(), args)


async def test_http11_streams_over_tls_end_with_retry_at_shutdown(
    nursery: trio.Nursery, certs: Certs
) -> None:
    app = make_app()

    @app.stream("/s")
    async def s(request: Request, stream: EventStream) -> None:
        await stream.send(Event("hi"))
        await trio.sleep_forever()

    server = await start_tls_server(
        nursery, app, certs, stream_end_retry=300, stream_end_retry_jitter=0, alpn="http/1.1"
    )
    with trio.fail_after(10):
        tcp = await trio.open_tcp_stream("127.0.0.1", server.port)
        # https_compatible: like browsers, accept an end without close_notify.
        tls = trio.SSLStream(
            tcp, context(certs), server_hostname="127.0.0.1", https_compatible=True
        )
        await tls.send_all(b"GET /s HTTP/1.1\r\nhost: x\r\n\r\n")
        body = b""
        while b"data: hi" not in body:
            body += await tls.receive_some(65536)
        nursery.start_soon(server.shutdown)
        while chunk := await tls.receive_some(65536):
            body += chunk
        assert body.startswith(b"HTTP/1.1 200")
        assert body.endswith(b"retry: 300\n\n\r\n0\r\n\r\n")
        await tls.aclose()
