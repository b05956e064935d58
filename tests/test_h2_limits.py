"""HTTP/2 limits on the raw server: streams per connection and per client, deadlines, bodies.

Each limit is a ``Config`` setting; each test drives a real TLS connection
(a raw h2 peer, or httpx) to its edge.
"""

from __future__ import annotations

from pathlib import Path

import h2.errors
import h2.events
import pytest
import trio
from h2_peers import Certs, H2Peer, https_client, sample_app, start_tls_server


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return Certs.make(tmp_path)


async def test_idle_connection_closes_after_keep_alive(nursery: trio.Nursery, certs: Certs) -> None:
    app, _, _ = sample_app()
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
    app, _, counts = sample_app()
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
    app, _, _ = sample_app()
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
    app, _, _ = sample_app()
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
    app, _, counts = sample_app()
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
    app, _, counts = sample_app()
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
    app, _, _ = sample_app()
    server = await start_tls_server(nursery, app, certs, max_body_size=1000)
    with trio.fail_after(10):
        async with https_client(certs) as c:
            r = await c.post(server.url + "/echo", content=b"x" * 5000)
            assert (r.http_version, r.status_code) == ("HTTP/2", 413)
            r = await c.post(server.url + "/echo", content=b"y" * 1000)
            assert (r.status_code, r.content) == (200, b"y" * 1000)
            r = await c.head(server.url + "/")
            assert (r.status_code, r.content, r.headers["content-length"]) == (200, b"", "6")
