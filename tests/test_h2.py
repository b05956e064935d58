"""HTTP/2 over TLS on the raw server, with real clients: httpx, curl, and a raw h2 peer.

The lifecycle of an event stream must be the one HTTP/1.1 has (heartbeats,
stream lifetime and final ``retry:``, a reset cancelling the handler,
graceful shutdown), many streams sharing one connection.
"""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path

import h2.errors
import h2.events
import httpx
import pytest
import trio
from h2_peers import Certs, H2Peer, start_tls_server

from trio_sse import App, Broker, Event, EventStream, Request, TopicOptions, topic_stream


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return Certs.make(tmp_path)


def make_app() -> tuple[App, Broker, dict[str, int]]:
    app = App()
    broker = Broker(TopicOptions(buffer_size=8))
    broker.topic("t")
    counts = {"started": 0, "cancelled": 0}
    app.add_route("/events/{topic}", topic_stream(broker))

    @app.get("/")
    async def index(request: object) -> str:
        return "hello\n"

    @app.post("/echo")
    async def echo(request: Request) -> bytes:
        return await request.body()

    @app.stream("/slow")
    async def slow(request: object, stream: EventStream) -> None:
        counts["started"] += 1
        try:
            await stream.send(Event("first"))
            await trio.sleep_forever()
        finally:
            counts["cancelled"] += 1

    return app, broker, counts


async def data_lines(response: httpx.Response) -> list[str]:
    """The ``data:`` values of a whole event stream (the server's lifetime limit ends it).

    Read to the end: leaving httpx's nested body iterators early makes them
    warn when garbage-collected.
    """
    body = b""
    async for chunk in response.aiter_raw():
        body += chunk
    assert body.endswith(b"retry: 1000\n\n"), body[-100:]
    return [line[6:] for line in body.decode().split("\n") if line.startswith("data:")]


def client(certs: Certs, http2: bool = True) -> httpx.AsyncClient:
    return httpx.AsyncClient(http2=http2, verify=ssl.create_default_context(cafile=certs.ca))


async def test_httpx_http2_requests_and_a_stream(nursery: trio.Nursery, certs: Certs) -> None:
    app, broker, _ = make_app()
    server = await start_tls_server(
        nursery, app, certs, max_stream_lifetime=1.0, stream_end_retry_jitter=0
    )
    with trio.fail_after(10):
        async with client(certs) as c:
            r = await c.get(server.url + "/")
            assert (r.http_version, r.status_code, r.text) == ("HTTP/2", 200, "hello\n")
            body = b"x" * 200_000  # over the 64 KiB receive window: acknowledged as read
            r = await c.post(server.url + "/echo", content=body)
            assert (r.status_code, r.content) == (200, body)
            r = await c.get(server.url + "/missing")
            assert r.status_code == 404
            async with c.stream("GET", server.url + "/events/t") as r:
                assert r.http_version == "HTTP/2"
                assert r.headers["content-type"].startswith("text/event-stream")
                for i in range(3):
                    broker.publish_nowait("t", Event(f"e{i}"))
                assert await data_lines(r) == ["e0", "e1", "e2"]


async def test_many_streams_share_one_connection(nursery: trio.Nursery, certs: Certs) -> None:
    app, broker, _ = make_app()
    server = await start_tls_server(
        nursery, app, certs, max_stream_lifetime=2.0, stream_end_retry_jitter=0
    )
    got: dict[int, list[str]] = {}

    async def listen(c: httpx.AsyncClient, n: int, ready: trio.Semaphore) -> None:
        async with c.stream("GET", server.url + "/events/t") as r:
            ready.release()
            got[n] = await data_lines(r)

    with trio.fail_after(15):
        async with client(certs) as c, trio.open_nursery() as inner:
            ready = trio.Semaphore(0, max_value=20)
            for n in range(20):
                inner.start_soon(listen, c, n, ready)
            for _ in range(20):
                await ready.acquire()
            while broker.topic("t").stats().subscribers < 20:
                await trio.sleep(0.01)
            # One TCP connection carries them all.
            assert len(server.server.connections) == 1
            for i in range(5):
                broker.publish_nowait("t", Event(str(i)))
    assert got == {n: ["0", "1", "2", "3", "4"] for n in range(20)}


async def test_alpn_falls_back_to_http11(nursery: trio.Nursery, certs: Certs) -> None:
    app, _, _ = make_app()
    server = await start_tls_server(nursery, app, certs)
    with trio.fail_after(10):
        async with client(certs, http2=False) as c:
            r = await c.get(server.url + "/")
            assert (r.http_version, r.text) == ("HTTP/1.1", "hello\n")


async def test_alpn_setting_offers_http11_only(nursery: trio.Nursery, certs: Certs) -> None:
    app, _, _ = make_app()
    server = await start_tls_server(nursery, app, certs, alpn="http/1.1")
    with trio.fail_after(10):
        async with client(certs) as c:
            r = await c.get(server.url + "/")
            assert r.http_version == "HTTP/1.1"


async def test_curl_http2_stream(nursery: trio.Nursery, certs: Certs) -> None:
    curl = shutil.which("curl")
    assert curl is not None, "curl is missing: run `bash .ci/system-deps` (Debian package curl)"
    app, broker, _ = make_app()
    server = await start_tls_server(nursery, app, certs, max_stream_lifetime=1.0)
    ticking = trio.CancelScope()

    async def tick() -> None:
        with ticking:
            for i in range(1000):
                broker.publish_nowait("t", Event(f"tick {i}"))
                await trio.sleep(0.05)

    nursery.start_soon(tick)
    with trio.fail_after(15):
        result = await trio.run_process(
            [curl, "-sSNi", "--http2", "--cacert", str(certs.ca), server.url + "/events/t"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    ticking.cancel()
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr
    assert out.startswith("HTTP/2 200"), out[:200]
    assert "data: tick" in out
    # max_stream_lifetime ended the stream properly: the final retry, END_STREAM.
    assert "\nretry: " in out


async def test_heartbeats_lifetime_and_final_retry(nursery: trio.Nursery, certs: Certs) -> None:
    app, _, counts = make_app()
    server = await start_tls_server(
        nursery,
        app,
        certs,
        heartbeat_interval=0.2,
        heartbeat_comment="hb",
        max_stream_lifetime=1.0,
        stream_end_retry=500,
        stream_end_retry_jitter=0,
    )
    with trio.fail_after(10):
        peer = await H2Peer.connect(server.port, certs)
        sid = peer.request("/slow")
        await peer.flush()
        await peer.receive_until(lambda: sid in peer.ended)
        text = bytes(peer.data[sid]).decode()
        assert text.startswith("data: first\n\n")
        assert text.count(": hb\n\n") >= 3
        assert text.endswith("retry: 500\n\n")
        assert counts == {"started": 1, "cancelled": 1}
        await peer.aclose()


async def test_reset_cancels_only_that_handler(nursery: trio.Nursery, certs: Certs) -> None:
    app, _, counts = make_app()
    server = await start_tls_server(nursery, app, certs)
    with trio.fail_after(10):
        peer = await H2Peer.connect(server.port, certs)
        first, second = peer.request("/slow"), peer.request("/slow")
        await peer.flush()
        await peer.receive_until(lambda: first in peer.data and second in peer.data)
        peer.conn.reset_stream(first, h2.errors.ErrorCodes.CANCEL)
        await peer.flush()
        while counts["cancelled"] < 1:
            await trio.sleep(0.01)
        await trio.sleep(0.1)
        assert counts == {"started": 2, "cancelled": 1}
        # The other stream and the connection go on.
        sid = peer.request("/")
        await peer.flush()
        await peer.receive_until(lambda: sid in peer.ended)
        assert bytes(peer.data[sid]) == b"hello\n"
        await peer.aclose()
        while counts["cancelled"] < 2:
            await trio.sleep(0.01)


async def test_graceful_shutdown_sends_goaway_and_final_retry(
    nursery: trio.Nursery, certs: Certs
) -> None:
    app, _, counts = make_app()
    server = await start_tls_server(
        nursery, app, certs, stream_end_retry=700, stream_end_retry_jitter=0
    )
    with trio.fail_after(10):
        peer = await H2Peer.connect(server.port, certs)
        sids = [peer.request("/slow") for _ in range(3)]
        await peer.flush()
        await peer.receive_until(lambda: all(s in peer.data for s in sids))
        async with trio.open_nursery() as inner:
            inner.start_soon(server.shutdown)
            await peer.receive_until(lambda: peer.closed)
        assert peer.goaway is not None
        assert peer.goaway.error_code == h2.errors.ErrorCodes.NO_ERROR
        assert peer.goaway.last_stream_id == max(sids)
        for sid in sids:
            assert sid in peer.ended
            assert bytes(peer.data[sid]).endswith(b"retry: 700\n\n")
        assert counts["cancelled"] == 3
        await peer.aclose()


async def test_idle_connection_closes_after_keep_alive(nursery: trio.Nursery, certs: Certs) -> None:
    app, _, _ = make_app()
    server = await start_tls_server(nursery, app, certs, keep_alive_timeout=0.3)
    with trio.fail_after(10):
        peer = await H2Peer.connect(server.port, certs)
        sid = peer.request("/")
        await peer.flush()
        await peer.receive_until(lambda: sid in peer.ended)
        start = trio.current_time()
        await peer.receive_until(lambda: peer.closed)
        assert peer.goaway is not None
        assert 0.2 < trio.current_time() - start < 3
        await peer.aclose()


async def test_too_many_concurrent_streams_are_refused(nursery: trio.Nursery, certs: Certs) -> None:
    app, _, counts = make_app()
    server = await start_tls_server(nursery, app, certs, h2_max_concurrent_streams=3)
    with trio.fail_after(10):
        peer = await H2Peer.connect(server.port, certs)
        await peer.receive_until(lambda: peer.conn.remote_settings.max_concurrent_streams == 3)
        sids = [peer.request("/slow") for _ in range(3)]
        await peer.flush()
        await peer.receive_until(lambda: all(s in peer.data for s in sids))
        # A reset stream counts until its handler has ended; the server's
        # limit holds even against a peer that ignores its own bookkeeping.
        peer.conn.reset_stream(sids[0])
        extra = peer.request("/slow")
        await peer.flush()
        await peer.receive_until(lambda: extra in peer.data or extra in peer.resets)
        if extra in peer.resets:
            assert peer.resets[extra] == h2.errors.ErrorCodes.REFUSED_STREAM
        assert counts["started"] - counts["cancelled"] <= 3
        await peer.aclose()


async def test_unread_body_of_a_stream_gives_the_window_back(
    nursery: trio.Nursery, certs: Certs
) -> None:
    app, _, _ = make_app()
    server = await start_tls_server(nursery, app, certs)
    with trio.fail_after(10):
        peer = await H2Peer.connect(server.port, certs)
        # An event stream whose request sends a body nobody reads: the whole
        # 64 KiB receive window of the connection.
        stream = peer.request("/slow", end=False)
        await peer.flush()
        await peer.receive_until(lambda: stream in peer.data)
        sent = 0
        while sent < 65_535:
            n = min(16_384, 65_535 - sent)
            peer.conn.send_data(stream, b"z" * n)
            sent += n
        await peer.flush()
        # A POST on the same connection still gets its body through: the
        # stream's unread bytes were acknowledged, not held.
        post = peer.request("/echo", end=False, method="POST")
        peer.auto_grant.add(post)
        await peer.flush()
        body = b"p" * 100_000
        sent = 0
        while sent < len(body):
            room = min(peer.conn.local_flow_control_window(post), 16_384, len(body) - sent)
            if room > 0:
                peer.conn.send_data(post, body[sent : sent + room])
                sent += room
                await peer.flush()
            else:
                await peer.receive()
        peer.conn.end_stream(post)
        await peer.flush()
        await peer.receive_until(lambda: post in peer.ended)
        assert bytes(peer.data[post]) == body
        await peer.aclose()


async def test_no_request_within_header_timeout(nursery: trio.Nursery, certs: Certs) -> None:
    app, _, _ = make_app()
    server = await start_tls_server(nursery, app, certs, header_timeout=0.5)
    with trio.fail_after(10):
        start = trio.current_time()
        peer = await H2Peer.connect(server.port, certs)  # handshake, SETTINGS, then nothing
        await peer.receive_until(lambda: peer.closed)
        assert peer.goaway is not None
        assert 0.4 < trio.current_time() - start < 3
        await peer.aclose()


async def test_streams_per_client_limit_holds_on_one_connection(
    nursery: trio.Nursery, certs: Certs
) -> None:
    app, _, counts = make_app()
    server = await start_tls_server(
        nursery, app, certs, max_streams_per_client=2, trusted_proxies=""
    )
    with trio.fail_after(10):
        peer = await H2Peer.connect(server.port, certs)
        first, second = peer.request("/slow"), peer.request("/slow")
        await peer.flush()
        await peer.receive_until(lambda: first in peer.data and second in peer.data)
        third = peer.request("/slow")
        await peer.flush()
        await peer.receive_until(lambda: third in peer.ended)
        status = next(
            dict(e.headers)[b":status"]
            for e in peer.events
            if isinstance(e, h2.events.ResponseReceived) and e.stream_id == third
        )
        assert status == b"429"
        assert counts["started"] == 2
        await peer.aclose()


async def test_a_burst_over_the_stream_limit_refuses_only_the_extra_streams(
    nursery: trio.Nursery, certs: Certs
) -> None:
    app, _, counts = make_app()
    server = await start_tls_server(nursery, app, certs, h2_max_concurrent_streams=3)
    with trio.fail_after(10):
        # Sent before the client has read the server's SETTINGS (RFC 9113
        # 5.1.2: a stream error, not a connection error).
        peer = await H2Peer.connect(server.port, certs)
        sids = [peer.request("/slow") for _ in range(5)]
        await peer.flush()
        await peer.receive_until(lambda: all(s in peer.data or s in peer.resets for s in sids))
        assert [s in peer.data for s in sids] == [True, True, True, False, False]
        assert peer.resets == {
            sids[3]: h2.errors.ErrorCodes.REFUSED_STREAM,
            sids[4]: h2.errors.ErrorCodes.REFUSED_STREAM,
        }
        assert peer.goaway is None
        assert counts["started"] == 3
        await peer.aclose()


async def test_body_limit_and_head_over_http2(nursery: trio.Nursery, certs: Certs) -> None:
    app, _, _ = make_app()
    server = await start_tls_server(nursery, app, certs, max_body_size=1000)
    with trio.fail_after(10):
        async with client(certs) as c:
            r = await c.post(server.url + "/echo", content=b"x" * 5000)
            assert (r.http_version, r.status_code) == ("HTTP/2", 413)
            r = await c.post(server.url + "/echo", content=b"y" * 1000)
            assert (r.status_code, r.content) == (200, b"y" * 1000)
            r = await c.head(server.url + "/")
            assert (r.status_code, r.content, r.headers["content-length"]) == (200, b"", "6")


async def test_split_cookie_fields_are_joined(nursery: trio.Nursery, certs: Certs) -> None:
    app = App()

    @app.get("/cookie")
    async def cookie(request: Request) -> str:
        return request.headers["cookie"]

    server = await start_tls_server(nursery, app, certs)
    with trio.fail_after(10):
        peer = await H2Peer.connect(server.port, certs)
        sid = peer.request("/cookie", extra=[(b"cookie", b"a=1"), (b"cookie", b"b=2")])
        await peer.flush()
        await peer.receive_until(lambda: sid in peer.ended)
        assert bytes(peer.data[sid]) == b"a=1; b=2"
        await peer.aclose()
