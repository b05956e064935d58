"""Issue 11, limits at the edge: per-client limits, refusals, keepalive, descriptors.

Real loopback sockets (every client is 127.0.0.1, so per-client limits bite;
``X-Forwarded-For`` makes other clients when the proxy is trusted).
"""

from __future__ import annotations

import logging
import resource
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from clients import Client
from servers import RunningServer, running, running_tcp

from trio_sse import App, Config, Event, EventStream, Request
from trio_sse._server import Server


def stream_app(config: Config) -> App:
    app = App(config=config)

    @app.get("/")
    async def index(request: Request) -> str:
        return "hello"

    @app.stream("/events")
    async def events(request: Request, stream: EventStream) -> None:
        await stream.send(Event("hi"))
        await trio.sleep_forever()

    return app


@asynccontextmanager
async def serving(config: Config) -> AsyncIterator[tuple[Server, int]]:
    async with running_tcp(stream_app(config), config) as (server, port, _):
        yield server, port


async def get(
    port: int, target: str, headers: Sequence[tuple[str, str]] = ()
) -> tuple[Client, bytes]:
    """Send a GET; return the connection and a whole reply (or a stream's first event)."""
    client = await Client.connect("127.0.0.1", port)
    await client.send_request("GET", target, headers)
    while not complete(bytes(client.raw)) and await client.receive_some():
        pass
    return client, bytes(client.raw)


def complete(raw: bytes) -> bool:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return False
    if b"text/event-stream" in head:
        return b"data: hi" in body
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


# -- finding 10: TCP keepalive ---------------------------------------------------


@pytest.mark.skipif(not hasattr(socket, "TCP_KEEPIDLE"), reason="Linux socket options")
async def test_accepted_sockets_get_tcp_keepalive() -> None:
    cfg = Config(tcp_keepalive_idle=42, tcp_keepalive_interval=7, tcp_keepalive_count=3)
    with trio.fail_after(5):
        async with serving(cfg) as (server, port):
            stream, _ = await get(port, "/events")
            conn = next(iter(server.connections))
            sock = conn.stream.socket  # type: ignore[attr-defined]
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 42
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 7
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
            await stream.aclose()
        async with serving(Config(tcp_keepalive_idle=None)) as (server, port):
            stream, _ = await get(port, "/events")
            sock = next(iter(server.connections)).stream.socket  # type: ignore[attr-defined]
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
            await stream.aclose()


# -- finding 1: per-client and global limits -------------------------------------


async def test_connections_per_client_get_429_with_retry_after() -> None:
    cfg = Config(max_connections_per_client=2, retry_after=7, trusted_proxies="")
    with trio.fail_after(5):
        async with serving(cfg) as (server, port):
            held = [(await get(port, "/events"))[0] for _ in range(2)]
            stream, raw = await get(port, "/")
            assert raw.startswith(b"HTTP/1.1 429 Too Many Requests\r\n"), raw
            assert b"retry-after: 7\r\n" in raw
            await stream.aclose()
            assert server.limits.refusals["max_connections_per_client"] == 1
            assert server.limits.connections_of("127.0.0.1") == 2
            await held.pop().aclose()
            while server.limits.connections_of("127.0.0.1") == 2:
                await trio.sleep(0.01)
            stream, raw = await get(port, "/")
            assert raw.startswith(b"HTTP/1.1 200"), raw
            await stream.aclose()
            for s in held:
                await s.aclose()


async def test_streams_per_client_get_429_and_plain_requests_go_on() -> None:
    cfg = Config(max_streams_per_client=2, retry_after=3, trusted_proxies="")
    with trio.fail_after(5):
        async with serving(cfg) as (server, port):
            held = [(await get(port, "/events"))[0] for _ in range(2)]
            stream, raw = await get(port, "/events")
            assert raw.startswith(b"HTTP/1.1 429 Too Many Requests\r\n"), raw
            assert b"retry-after: 3\r\n" in raw
            await stream.aclose()
            stream, raw = await get(port, "/")
            assert raw.startswith(b"HTTP/1.1 200"), raw
            await stream.aclose()
            assert server.limits.refusals["max_streams_per_client"] == 1
            await held.pop().aclose()
            while server.limits.streams_of("127.0.0.1") == 2:
                await trio.sleep(0.01)
            stream, raw = await get(port, "/events")
            assert b"data: hi" in raw
            for s in [*held, stream]:
                await s.aclose()


async def test_forwarded_client_is_believed_only_from_trusted_proxies() -> None:
    trusted = Config(
        max_streams_per_client=1,
        trusted_proxies="10.0.0.0/8, 127.0.0.1",
        client_ip_header="X-Forwarded-For",
        max_connections_per_client=1,  # a trusted proxy is exempt
    )
    with trio.fail_after(5):
        async with serving(trusted) as (server, port):
            a, raw = await get(port, "/events", [("x-forwarded-for", "192.0.2.1")])
            assert b"data: hi" in raw
            # The client wrote the left part itself; 10.1.2.3 is a trusted hop.
            b, raw = await get(
                port, "/events", [("x-forwarded-for", "192.0.2.9, 192.0.2.1, 10.1.2.3")]
            )
            assert raw.startswith(b"HTTP/1.1 429"), raw
            c, raw = await get(port, "/events", [("x-forwarded-for", "192.0.2.2")])
            assert b"data: hi" in raw
            assert server.limits.streams_of("192.0.2.1") == 1
            assert server.limits.streams_of("192.0.2.2") == 1
            for s in (a, b, c):
                await s.aclose()
        untrusted = Config(max_streams_per_client=1, trusted_proxies="")
        async with serving(untrusted) as (server, port):
            a, raw = await get(port, "/events", [("x-forwarded-for", "192.0.2.1")])
            b, raw = await get(port, "/events", [("x-forwarded-for", "192.0.2.2")])
            assert raw.startswith(b"HTTP/1.1 429"), raw
            for s in (a, b):
                await s.aclose()


def test_client_ip_header_needs_trusted_proxies() -> None:
    with pytest.raises(ValueError, match="trusted_proxies"):
        Config(client_ip_header="x-forwarded-for", trusted_proxies="")
    with pytest.raises(ValueError, match="not an IP address"):
        Config(trusted_proxies="proxy.example")


async def test_streams_per_client_on_either_server(serve_app: object) -> None:
    app = stream_app(Config(max_streams_per_client=1, heartbeat_interval=None, trusted_proxies=""))
    server: RunningServer = await serve_app(app)  # type: ignore[operator]
    with trio.fail_after(5):
        first = await server.request("GET", "/events")
        assert first.status == 200
        second = await server.request("GET", "/events")
        assert second.status == 429
        assert second.headers["retry-after"] == "1"
        await second.aclose()
        await first.aclose()


async def test_global_limit_is_503_and_counted() -> None:
    cfg = Config(max_connections=1, retry_after=2)
    with trio.fail_after(5):
        async with serving(cfg) as (server, port):
            held, _ = await get(port, "/events")
            stream, raw = await get(port, "/")
            assert raw.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), raw
            assert b"retry-after: 2\r\n" in raw
            await stream.aclose()
            assert server.limits.refusals["max_connections"] == 1
            await held.aclose()


async def test_connect_flood_gets_503_not_resets() -> None:
    """Far more refused connections than the refusal pool: each still reads a 503."""
    cfg = Config(max_connections=1, max_refusing=4, close_linger=0.5)
    outcomes: dict[str, int] = {"503": 0, "reset": 0, "other": 0}

    async def client(port: int) -> None:
        try:
            async with await Client.connect("127.0.0.1", port) as stream:
                await stream.send_raw(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                raw = await stream.wait_closed()  # a reset reads as b""
        except (trio.BrokenResourceError, OSError):
            raw = b""
        if not raw:
            outcomes["reset"] += 1
            return
        outcomes["503" if raw.startswith(b"HTTP/1.1 503") else "other"] += 1

    with trio.fail_after(10):
        async with serving(cfg) as (server, port):
            held, _ = await get(port, "/events")
            async with trio.open_nursery() as nursery:
                for _ in range(200):
                    nursery.start_soon(client, port)
            await held.aclose()
            assert server.limits.refusals["refusal_not_awaited"] > 0
    assert outcomes["503"] == 200, outcomes


async def test_descriptor_limit_is_raised_or_warned_about(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_sse.limits")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:  # pragma: no cover - make the hard limit finite
        hard = max(soft, 4096)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        # Room under the hard limit: the soft limit is raised, no warning.
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        with trio.fail_after(5):
            async with running(App(), Config(max_connections=min(400, hard - 300))):
                pass
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == min(400, hard - 300) + 256 + 32
        assert "raised the file-descriptor limit" in caplog.text
        assert "exceeds" not in caplog.text
        caplog.clear()
        # Beyond the hard limit: raised as far as it goes, and a warning.
        with trio.fail_after(5):
            async with running(App(), Config(max_connections=hard)):
                pass
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
        assert "exceeds this process' file-descriptor limit" in caplog.text
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_refusals_are_served_as_metrics() -> None:
    from trio_sse import Broker, metrics_endpoint

    cfg = Config(max_streams_per_client=1, trusted_proxies="")
    with trio.fail_after(5):
        async with serving(cfg) as (server, port):
            server.app.add_route("/metrics", metrics_endpoint(Broker()))
            held, _ = await get(port, "/events")
            refused, raw = await get(port, "/events")
            assert raw.startswith(b"HTTP/1.1 429"), raw
            metrics, raw = await get(port, "/metrics")
            for s in (held, refused, metrics):
                await s.aclose()
    assert server.app.refusals["max_streams_per_client"] == 1
    assert b'trio_sse_refusals_total{reason="max_streams_per_client"} 1.0' in raw, raw
    assert b'trio_sse_refusals_total{reason="max_connections"} 0.0' in raw


async def test_loopback_is_a_trusted_proxy_by_default() -> None:
    """A local proxy carries many clients: by default it is not limited per client."""
    cfg = Config(max_streams_per_client=1, max_connections_per_client=1)
    with trio.fail_after(5):
        async with serving(cfg) as (server, port):
            held = [await get(port, "/events") for _ in range(3)]
            assert all(b"data: hi" in raw for _, raw in held)
            assert server.app.refusals["max_streams_per_client"] == 0
            for s, _ in held:
                await s.aclose()


def test_edge_limits_are_command_line_options() -> None:
    from trio_sse._cli import _build_config, _parser

    args = _parser().parse_args(
        [
            "demo",
            "--trusted-proxies",
            "10.0.0.0/8",
            "--client-ip-header",
            "x-forwarded-for",
            "--max-streams-per-client",
            "4",
            "--tcp-keepalive-idle",
            "none",
            "--max-json-depth",
            "8",
        ]
    )
    cfg = _build_config(Config(), args)
    assert cfg.trusted_proxies == "10.0.0.0/8"
    assert cfg.client_ip_header == "x-forwarded-for"
    assert cfg.max_streams_per_client == 4
    assert cfg.tcp_keepalive_idle is None
    assert cfg.max_json_depth == 8
    with pytest.raises(SystemExit, match="not an IP address"):
        _build_config(Config(), _parser().parse_args(["demo", "--trusted-proxies", "nope"]))


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"trusted_proxies": 1}, TypeError, "trusted_proxies must be a str"),
        ({"client_ip_header": None}, TypeError, "client_ip_header must be a str"),
        ({"max_json_depth": 0}, ValueError, "max_json_depth"),
        ({"max_event_id_length": 1.5}, TypeError, "max_event_id_length must be an int"),
        ({"max_retry": -1}, ValueError, "max_retry"),
        ({"max_refusing": 0}, ValueError, "max_refusing"),
        ({"idle_slice": 0}, ValueError, "idle_slice"),
        ({"idle_slice": 2.5}, TypeError, "idle_slice must be an int"),
        ({"tcp_keepalive_idle": 0}, ValueError, "tcp_keepalive_idle"),
        ({"max_streams_per_client": None}, ValueError, "max_streams_per_client"),
    ],
)
def test_new_settings_are_validated(
    changes: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Config(**changes)  # type: ignore[arg-type]
    assert Config(tcp_keepalive_idle=None).tcp_keepalive_idle is None


def test_client_key_from_forwarded_headers() -> None:
    from trio_sse import ClientLimits, Headers

    limits = ClientLimits(
        Config(trusted_proxies="10.0.0.0/8", client_ip_header="forwarded", max_streams_per_client=1)
    )

    def key(peer: str, value: str) -> str | None:
        return limits.client_key(peer, Headers([(b"forwarded", value.encode())]))

    assert key("10.0.0.1", 'for="[2001:db8::1]:4711";proto=https, for=10.2.3.4') == "2001:db8::1"
    assert key("10.0.0.1", "for=192.0.2.60;by=10.0.0.1") == "192.0.2.60"
    assert key("10.0.0.1", "for=192.0.2.1:80, for=192.0.2.2") == "192.0.2.2"
    assert key("192.0.2.9", "for=192.0.2.60") == "192.0.2.9"  # not a trusted proxy
    xff = ClientLimits(Config(trusted_proxies="10.0.0.0/8", client_ip_header="x-forwarded-for"))
    headers = Headers(
        [(b"x-forwarded-for", b"1.1.1.1"), (b"x-forwarded-for", b"192.0.2.7:5, 10.9.9.9")]
    )
    assert xff.client_key("10.0.0.1", headers) == "192.0.2.7"
    assert xff.client_key("10.0.0.1", Headers([])) == "10.0.0.1"
    assert ClientLimits(Config()).client_key("127.0.0.1", Headers([])) is None
