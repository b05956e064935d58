"""Hostile HTTP/2 peers: bad frames, floods, rapid reset, header compression bombs.

Each attack must end only the attacker's connection (``GOAWAY`` with the
reason's code), log no error, keep memory bounded, and leave a well-behaved
client on another connection untouched. Each flood limit is a ``Config``
setting, tested at its edge.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import h2.errors
import h2.settings
import hpack
import pytest
import trio
from h2_peers import Certs, H2Peer, TLSServer, start_tls_server
from hyperframe.frame import ContinuationFrame, HeadersFrame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_sse import App, Event, EventStream, Request
from trio_sse._h2_connection import H2ServerConnection
from trio_sse._h2_stream import H2Stream

ErrorCodes = h2.errors.ErrorCodes
GUARD = 10


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return Certs.make(tmp_path)


@pytest.fixture
def no_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The server logs nothing at ERROR (no traceback, no internal error)."""
    caplog.set_level(logging.INFO, logger="trio_sse")
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


def make_app() -> tuple[App, dict[str, int]]:
    app = App()
    counts = {"started": 0}

    @app.get("/")
    async def index(request: Request) -> str:
        return "ok\n"

    @app.stream("/ticks")
    async def ticks(request: Request, stream: EventStream) -> None:
        counts["started"] += 1
        for i in range(10_000):
            await stream.send(Event(str(i)))
            await trio.sleep(0.02)

    return app, counts


async def bystander(server: TLSServer, certs: Certs) -> H2Peer:
    """A polite client with an open stream, on its own connection."""
    peer = await H2Peer.connect(server.port, certs)
    sid = peer.request("/ticks")
    peer.auto_grant.add(sid)
    await peer.flush()
    await peer.receive_until(lambda: sid in peer.data)
    return peer


async def still_served(peer: H2Peer) -> None:
    """The bystander's stream still flows and a new request on it is answered."""
    (sid,) = peer.data
    before = len(peer.data[sid])
    await peer.receive_until(lambda: len(peer.data[sid]) > before)
    new = peer.request("/")
    await peer.flush()
    await peer.receive_until(lambda: new in peer.ended)
    assert bytes(peer.data[new]) == b"ok\n"
    await peer.aclose()


async def goaway_code(peer: H2Peer) -> int:
    """The error code of the GOAWAY the server ended the connection with."""
    await peer.receive_until(lambda: peer.goaway is not None)
    assert peer.goaway is not None
    code = int(peer.goaway.error_code or 0)
    await peer.aclose()
    return code


async def test_settings_flood(nursery: trio.Nursery, certs: Certs, no_errors: None) -> None:
    app, _ = make_app()
    server = await start_tls_server(nursery, app, certs, h2_max_control_frames=20)
    with trio.fail_after(GUARD):
        polite = await bystander(server, certs)
        # At the limit: served.
        peer = await H2Peer.connect(server.port, certs)
        for _ in range(18):  # + our initial SETTINGS and its ack = 20 control frames at most
            peer.conn.update_settings({h2.settings.SettingCodes.MAX_FRAME_SIZE: 16384})
        await peer.flush()
        sid = peer.request("/")
        await peer.flush()
        await peer.receive_until(lambda: sid in peer.ended)
        assert peer.goaway is None
        await peer.aclose()
        # Over it: GOAWAY(ENHANCE_YOUR_CALM).
        peer = await H2Peer.connect(server.port, certs)
        for _ in range(1000):
            peer.conn.update_settings({h2.settings.SettingCodes.MAX_FRAME_SIZE: 16384})
        await peer.flush()
        assert await goaway_code(peer) == ErrorCodes.ENHANCE_YOUR_CALM
        await still_served(polite)
        # Counted for metrics (the refusals of App.refusals).
        assert app.refusals["h2_flood"] == 1


async def test_ping_flood_without_reading(
    nursery: trio.Nursery, certs: Certs, no_errors: None
) -> None:
    app, _ = make_app()
    server = await start_tls_server(nursery, app, certs)
    with trio.fail_after(GUARD):
        polite = await bystander(server, certs)
        peer = await H2Peer.connect(server.port, certs)
        for i in range(5000):
            peer.conn.ping(i.to_bytes(8, "big"))
        # Sent in one burst and never read: the acknowledgements cannot pile up.
        await peer.flush()
        assert await goaway_code(peer) == ErrorCodes.ENHANCE_YOUR_CALM
        await still_served(polite)


async def test_rapid_reset(nursery: trio.Nursery, certs: Certs, no_errors: None) -> None:
    app, counts = make_app()
    server = await start_tls_server(nursery, app, certs, h2_max_resets=50)
    with trio.fail_after(GUARD):
        polite = await bystander(server, certs)
        started = counts["started"]
        peer = await H2Peer.connect(server.port, certs)
        for _ in range(2000):
            sid = peer.request("/ticks")
            peer.conn.reset_stream(sid, ErrorCodes.CANCEL)
        await peer.flush()
        assert await goaway_code(peer) == ErrorCodes.ENHANCE_YOUR_CALM
        # Handlers started: bounded by the reset limit, not by the attacker.
        assert counts["started"] - started <= 50 + 1
        await still_served(polite)


async def test_resets_under_the_limit_are_fine(
    nursery: trio.Nursery, certs: Certs, no_errors: None
) -> None:
    app, _ = make_app()
    server = await start_tls_server(nursery, app, certs, h2_max_resets=50)
    with trio.fail_after(GUARD):
        peer = await H2Peer.connect(server.port, certs)
        for _ in range(40):
            sid = peer.request("/ticks")
            peer.conn.reset_stream(sid, ErrorCodes.CANCEL)
        last = peer.request("/")
        await peer.flush()
        await peer.receive_until(lambda: last in peer.ended)
        assert peer.goaway is None
        await peer.aclose()


def hpack_bomb() -> bytes:
    """A 5 KB header block that decodes to 4 MB: one big entry, referenced 1000 times."""
    block = hpack.Encoder().encode(
        [
            (b":method", b"GET"),
            (b":path", b"/"),
            (b":scheme", b"https"),
            (b":authority", b"127.0.0.1"),
            (b"x-bomb", b"a" * 4000),
        ]
    )
    return block + b"\xbe" * 1000  # 0xbe: indexed field 62, the newest dynamic entry


async def test_hpack_bomb(nursery: trio.Nursery, certs: Certs, no_errors: None) -> None:
    app, _ = make_app()
    server = await start_tls_server(nursery, app, certs)
    with trio.fail_after(GUARD):
        polite = await bystander(server, certs)
        peer = await H2Peer.connect(server.port, certs)
        frame = HeadersFrame(1, data=hpack_bomb(), flags=["END_HEADERS", "END_STREAM"])
        await peer.send_raw(frame.serialize())
        assert await goaway_code(peer) in (ErrorCodes.ENHANCE_YOUR_CALM, ErrorCodes.PROTOCOL_ERROR)
        await still_served(polite)


async def test_header_list_over_max_header_size(
    nursery: trio.Nursery, certs: Certs, no_errors: None
) -> None:
    app, _ = make_app()
    server = await start_tls_server(nursery, app, certs, max_header_size=2048)
    with trio.fail_after(GUARD):
        peer = await H2Peer.connect(server.port, certs)
        await peer.receive_until(lambda: peer.conn.remote_settings.max_header_list_size == 2048)
        peer.conn.send_headers(
            1,
            [
                (b":method", b"GET"),
                (b":path", b"/"),
                (b":scheme", b"https"),
                (b":authority", b"x"),
                (b"x-big", b"b" * 3000),
            ],
            end_stream=True,
        )
        await peer.flush()
        assert await goaway_code(peer) != ErrorCodes.NO_ERROR


async def test_continuation_flood(nursery: trio.Nursery, certs: Certs, no_errors: None) -> None:
    app, _ = make_app()
    server = await start_tls_server(nursery, app, certs)
    with trio.fail_after(GUARD):
        polite = await bystander(server, certs)
        peer = await H2Peer.connect(server.port, certs)
        data = HeadersFrame(1, data=b"\x82").serialize()  # no END_HEADERS
        data += b"".join(ContinuationFrame(1, data=b"\x00" * 16000).serialize() for _ in range(200))
        # The server may close while we are still sending: fine.
        with trio.move_on_after(5), contextlib.suppress(trio.BrokenResourceError):
            await peer.send_raw(data)
        assert await goaway_code(peer) == ErrorCodes.PROTOCOL_ERROR
        await still_served(polite)


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param(b"\x00\x00\x08\x06\x00\x00\x00\x00\x01" + b"\x00" * 8, id="ping-on-a-stream"),
        pytest.param(b"\x00\x00\x04\x08\x00\x00\x00\x00\x00\x7f\xff\xff\xff", id="window-overflow"),
        pytest.param(b"\x00\x00\x05\x00\x00\x00\x00\x00\x00hello", id="data-on-stream-0"),
        pytest.param(b"\x00\x40\x01\x00\x00\x00\x00\x00\x01" + b"x" * 16385, id="frame-too-large"),
        pytest.param(b"\x00\x00\x01\x01\x05\x00\x00\x00\x02\x82", id="even-stream-id"),
        pytest.param(b"\x00\x00\x03\x04\x00\x00\x00\x00\x00abc", id="settings-bad-length"),
    ],
)
async def test_bad_frames(
    nursery: trio.Nursery, certs: Certs, no_errors: None, frames: bytes
) -> None:
    app, _ = make_app()
    server = await start_tls_server(nursery, app, certs)
    with trio.fail_after(GUARD):
        peer = await H2Peer.connect(server.port, certs)
        await peer.send_raw(frames)
        assert await goaway_code(peer) != ErrorCodes.NO_ERROR
        assert app.refusals["h2_protocol_error"] == 1
        ok = await H2Peer.connect(server.port, certs)
        sid = ok.request("/")
        await ok.flush()
        await ok.receive_until(lambda: sid in ok.ended)
        await ok.aclose()


_CERTS: list[Certs] = []


def shared_certs() -> Certs:
    """One set of certificates for every Hypothesis example."""
    if not _CERTS:
        _CERTS.append(Certs.make(Path(tempfile.mkdtemp(prefix="trio-sse-h2-"))))
    return _CERTS[0]


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(garbage=st.binary(min_size=1, max_size=300))
async def test_arbitrary_bytes_after_the_preface(no_errors: None, garbage: bytes) -> None:
    certs = shared_certs()
    app, _ = make_app()
    async with trio.open_nursery() as nursery:
        server = await start_tls_server(nursery, app, certs)
        with trio.fail_after(GUARD):
            peer = await H2Peer.connect(server.port, certs)
            await peer.send_raw(garbage)
            with trio.move_on_after(0.1):
                await peer.receive_until(lambda: peer.closed)
            await peer.aclose()
            ok = await H2Peer.connect(server.port, certs)
            sid = ok.request("/")
            await ok.flush()
            await ok.receive_until(lambda: sid in ok.ended)
            await ok.aclose()
        nursery.cancel_scope.cancel()


frame_strategy = st.builds(
    lambda kind, flags, sid, payload: (
        len(payload).to_bytes(3, "big") + bytes([kind, flags]) + sid.to_bytes(4, "big") + payload
    ),
    kind=st.integers(0, 11),  # the ten frame types, and unknown ones
    flags=st.integers(0, 255),
    sid=st.sampled_from([0, 1, 2, 3, 5, 2**31 - 1]),
    payload=st.binary(max_size=40),
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(frames=st.lists(frame_strategy, min_size=1, max_size=8))
async def test_arbitrary_frames(no_errors: None, frames: list[bytes]) -> None:
    """Well-delimited frames of any type, flags, stream and payload: no crash, no hang."""
    certs = shared_certs()
    app, _ = make_app()
    async with trio.open_nursery() as nursery:
        server = await start_tls_server(nursery, app, certs, close_linger=0.05)
        with trio.fail_after(GUARD):
            peer = await H2Peer.connect(server.port, certs)
            with contextlib.suppress(trio.BrokenResourceError):
                await peer.send_raw(b"".join(frames))
            # Whatever the frames did, a request on the connection (if it is
            # still open) is answered, or the connection is ended.
            with contextlib.suppress(Exception):
                sid = peer.request("/")
                await peer.flush()
            with trio.move_on_after(0.5), contextlib.suppress(Exception):
                await peer.receive_until(lambda: sid in peer.ended)
            await peer.aclose()
            ok = await H2Peer.connect(server.port, certs)
            sid = ok.request("/")
            await ok.flush()
            await ok.receive_until(lambda: sid in ok.ended)
            await ok.aclose()
        nursery.cancel_scope.cancel()


async def test_window_update_flood_is_cheap(
    nursery: trio.Nursery, certs: Certs, no_errors: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tiny connection-level WINDOW_UPDATEs wake the blocked streams once per read."""
    app = App()

    @app.stream("/big")
    async def big(request: Request, stream: EventStream) -> None:
        for _ in range(1000):
            await stream.send(Event("b" * 10_000))

    wakes = 0
    original = H2Stream.wake

    def counting(self: H2Stream) -> None:
        nonlocal wakes
        wakes += 1
        original(self)

    monkeypatch.setattr(H2Stream, "wake", counting)
    server = await start_tls_server(nursery, app, certs, write_timeout=5.0)
    with trio.fail_after(GUARD):
        peer = await H2Peer.connect(server.port, certs, window=2**31 - 1)
        sids = [peer.request("/big") for _ in range(50)]
        await peer.flush()
        # The connection's 64 KiB window runs out: every stream blocks on it.
        await peer.receive_until(lambda: sum(len(peer.data.get(s, b"")) for s in sids) >= 65_535)
        (conn,) = server.server.connections
        assert isinstance(conn, H2ServerConnection)
        while len(conn.blocked_window) < 50:
            await trio.sleep(0.01)
        wakes = 0
        for _ in range(2000):
            peer.conn.increment_flow_control_window(1)
        await peer.flush()  # 26 KB of WINDOW_UPDATE frames: a few reads on the server
        await trio.sleep(0.5)
        # Per read, not per frame: far fewer than 2000 x 50 wake-ups.
        assert 0 < wakes < 50 * 100, wakes
        await peer.aclose()
