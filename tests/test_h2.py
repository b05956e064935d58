"""HTTP/2 over TLS on the raw server, with real clients: httpx, curl, and a raw h2 peer.

The lifecycle of an event stream must be the one HTTP/1.1 has (heartbeats,
stream lifetime and final ``retry:``, a reset cancelling the handler,
graceful shutdown), many streams sharing one connection.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import h2.errors
import h2.events
import httpx
import pytest
import trio
from h2_peers import Certs, H2Peer, https_client, sample_app, start_tls_server

from trio_sse import App, Event, Request


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return Certs.make(tmp_path)


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


async def test_httpx_http2_requests_and_a_stream(nursery: trio.Nursery, certs: Certs) -> None:
    app, broker, _ = sample_app()
    server = await start_tls_server(
        nursery, app, certs, max_stream_lifetime=1.0, stream_end_retry_jitter=0
    )
    with trio.fail_after(10):
        async with https_client(certs) as c:
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
    app, broker, _ = sample_app()
    # The lifetime ends the streams; 2 s made the test flaky on a loaded
    # machine (the first streams ended before the twentieth had opened).
    server = await start_tls_server(
        nursery, app, certs, max_stream_lifetime=6.0, stream_end_retry_jitter=0
    )
    got: dict[int, list[str]] = {}

    async def listen(c: httpx.AsyncClient, n: int) -> None:
        async with c.stream("GET", server.url + "/events/t") as r:
            got[n] = await data_lines(r)

    with trio.fail_after(30):
        async with https_client(certs) as c, trio.open_nursery() as inner:
            for n in range(20):
                inner.start_soon(listen, c, n)
            # The server's count, not the heads httpx has handed over: on a
            # loaded machine httpx sometimes hands one over only when other
            # streams end (the server had sent it at once).
            while broker.topic("t").stats().subscribers < 20:
                await trio.sleep(0.01)
            # One TCP connection carries them all.
            assert len(server.server.connections) == 1
            for i in range(5):
                broker.publish_nowait("t", Event(str(i)))
    assert got == {n: ["0", "1", "2", "3", "4"] for n in range(20)}


async def test_alpn_falls_back_to_http11(nursery: trio.Nursery, certs: Certs) -> None:
    app, _, _ = sample_app()
    server = await start_tls_server(nursery, app, certs)
    with trio.fail_after(10):
        async with https_client(certs, http2=False) as c:
            r = await c.get(server.url + "/")
            assert (r.http_version, r.text) == ("HTTP/1.1", "hello\n")


async def test_alpn_setting_offers_http11_only(nursery: trio.Nursery, certs: Certs) -> None:
    app, _, _ = sample_app()
    server = await start_tls_server(nursery, app, certs, alpn="http/1.1")
    with trio.fail_after(10):
        async with https_client(certs) as c:
            r = await c.get(server.url + "/")
            assert r.http_version == "HTTP/1.1"


async def test_curl_http2_stream(nursery: trio.Nursery, certs: Certs) -> None:
    curl = shutil.which("curl")
    assert curl is not None, "curl is missing: run `bash .ci/system-deps` (Debian package curl)"
    app, broker, _ = sample_app()
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
    app, _, counts = sample_app()
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
    app, _, counts = sample_app()
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
    app, _, counts = sample_app()
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
        # The streams ended first: h2-based clients (httpx) take no frame
        # after a GOAWAY, so a final retry: sent after it would be lost.
        assert peer.ended_before_goaway == set(sids)
        assert counts["cancelled"] == 3
        await peer.aclose()


async def test_goaway_waits_for_the_ping_after_the_ends_within_close_linger(
    nursery: trio.Nursery, certs: Certs
) -> None:
    app, _, _ = sample_app()
    server = await start_tls_server(nursery, app, certs, close_linger=2.0)
    with trio.fail_after(15):
        # A peer that reads (and so answers the PING) gets the GOAWAY at once.
        peer = await H2Peer.connect(server.port, certs)
        sid = peer.request("/slow")
        await peer.flush()
        await peer.receive_until(lambda: sid in peer.data)
        # A peer that stops reading gets it after close_linger.
        mute = await H2Peer.connect(server.port, certs)
        mute_sid = mute.request("/slow")
        await mute.flush()
        await mute.receive_until(lambda: mute_sid in mute.data)
        start = trio.current_time()
        async with trio.open_nursery() as inner:
            inner.start_soon(server.shutdown)
            await peer.receive_until(lambda: peer.goaway is not None)
            assert trio.current_time() - start < 1.0
            assert peer.ended_before_goaway == {sid}
            await peer.aclose()
        # The server waited for the mute peer's answer, then gave up.
        assert 2.0 <= trio.current_time() - start < 6.0
        await mute.receive_until(lambda: mute.closed)
        assert mute.goaway is not None
        assert mute.ended_before_goaway == {mute_sid}
        await mute.aclose()


async def test_httpx_http2_streams_end_cleanly_at_shutdown(
    nursery: trio.Nursery, certs: Certs
) -> None:
    app, broker, _ = sample_app()
    server = await start_tls_server(
        nursery, app, certs, stream_end_retry=700, stream_end_retry_jitter=0
    )
    bodies: list[bytes] = []

    async def listen(client: httpx.AsyncClient, task_status: trio.TaskStatus[None]) -> None:
        async with client.stream("GET", server.url + "/events/t") as r:
            assert r.http_version == "HTTP/2"
            task_status.started()
            body = b""
            async for chunk in r.aiter_raw():
                body += chunk
            bodies.append(body)

    with trio.fail_after(10):
        async with https_client(certs) as client, trio.open_nursery() as inner:
            # Two streams on the one connection.
            await inner.start(listen, client)
            await inner.start(listen, client)
            broker.publish_nowait("t", Event("e0"))
            await trio.sleep(0.1)
            await server.shutdown()
    assert len(bodies) == 2
    for body in bodies:
        assert b"data: e0\n\n" in body
        assert body.endswith(b"retry: 700\n\n")


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
