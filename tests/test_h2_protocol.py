"""The sans-IO HTTP/2 state (``_h2_protocol.py``) against an ``h2`` client, without sockets.

The client's own state machine checks every frame the server writes: DATA
beyond its window or over its frame size would be a protocol error there.
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest
from hyperframe.frame import DataFrame, Frame, GoAwayFrame

from trio_sse import Config
from trio_sse._h2_protocol import (
    CLOSED,
    END_BODY,
    PING_DATA,
    PONG,
    REQUEST,
    RESET,
    WINDOW,
    H2Protocol,
    response_headers,
)
from trio_sse._transport import PeerGone

GET = [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"https"), (b":authority", b"x")]


def pair(
    config: Config | None = None, window: int | None = None
) -> tuple[H2Protocol, h2.connection.H2Connection]:
    server = H2Protocol(config or Config())
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    if window is not None:
        client.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window}
        )
    client.initiate_connection()
    client.receive_data(bytes(server.out))
    server.out.clear()
    server.receive(client.data_to_send(), 0.0)
    client.receive_data(bytes(server.out))
    server.out.clear()
    return server, client


def open_stream(server: H2Protocol, client: h2.connection.H2Connection) -> int:
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, GET, end_stream=True)
    actions = server.receive(client.data_to_send(), 0.0)
    assert [(kind, s) for kind, s, _ in actions] == [(REQUEST, sid), (END_BODY, sid)]
    server.send_headers(sid, 200, [(b"content-type", b"text/event-stream")], False)
    return sid


def deliver(server: H2Protocol, client: h2.connection.H2Connection) -> list[h2.events.Event]:
    events = client.receive_data(bytes(server.out))
    server.out.clear()
    return events


def received(events: list[h2.events.Event], sid: int) -> bytes:
    return b"".join(
        e.data or b""
        for e in events
        if isinstance(e, h2.events.DataReceived) and e.stream_id == sid
    )


def test_data_frames_fill_the_window_exactly_and_no_more() -> None:
    server, client = pair()
    client.increment_flow_control_window(1_000_000)  # the stream's window is the limit
    server.receive(client.data_to_send(), 0.0)
    sid = open_stream(server, client)
    payload = memoryview(b"a" * 100_000)
    sent = server.send_data(sid, payload)
    assert sent == 65_535  # the default window
    assert server.send_data(sid, payload[sent:]) == 0
    assert server.window(sid) == 0
    events = deliver(server, client)  # the client's h2 checks window and frame sizes
    assert received(events, sid) == b"a" * 65_535
    # The client grants more: the rest goes, and an empty DATA frame with
    # END_STREAM (through h2) ends the stream in order.
    client.increment_flow_control_window(50_000, stream_id=sid)
    assert [k for k, _, _ in server.receive(client.data_to_send(), 0.0)] == [WINDOW]
    assert server.send_data(sid, payload[sent:]) == 100_000 - 65_535
    server.finish(sid, complete=True)
    events = deliver(server, client)
    assert received(events, sid) == b"a" * (100_000 - 65_535)
    assert any(isinstance(e, h2.events.StreamEnded) for e in events)


def test_frames_respect_the_peer_frame_size_and_the_buffer_bound() -> None:
    server, client = pair(Config(h2_max_buffer=30_000), window=1_000_000)
    client.increment_flow_control_window(1_000_000)
    server.receive(client.data_to_send(), 0.0)
    sid = open_stream(server, client)
    head = len(server.out)
    sent = server.send_data(sid, memoryview(b"b" * 100_000))
    # The HEADERS frame and each DATA frame's header count too.
    assert 30_000 - head - 9 * 2 - 16_384 < sent <= 30_000 - head - 9 * 2
    assert 0 <= server.room < 16_384
    events = deliver(server, client)
    assert received(events, sid) == b"b" * sent
    assert all(
        len(e.data or b"") <= 16_384 for e in events if isinstance(e, h2.events.DataReceived)
    )


def test_sending_on_a_reset_stream_is_peer_gone() -> None:
    server, client = pair()
    sid = open_stream(server, client)
    deliver(server, client)
    client.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
    assert [(k, s) for k, s, _ in server.receive(client.data_to_send(), 0.0)] == [(RESET, sid)]
    with pytest.raises(PeerGone):
        server.send_data(sid, memoryview(b"x"))
    server.finish(sid, complete=True)  # nothing: the stream is closed
    assert server.out == b""


@pytest.mark.parametrize("limit", [5, 20])
def test_control_frame_limit_per_second(limit: int) -> None:
    server, client = pair(Config(h2_max_control_frames=limit))
    # pair() sent the client's SETTINGS at t=0: one control frame already.
    for _ in range(limit - 1):
        client.ping(b"12345678")
    assert not [a for a in server.receive(client.data_to_send(), 0.5) if a[0] == CLOSED]
    # A second later the count starts again.
    for _ in range(limit):
        client.ping(b"12345678")
    assert not [a for a in server.receive(client.data_to_send(), 1.0) if a[0] == CLOSED]
    client.ping(b"12345678")
    (closed,) = [a for a in server.receive(client.data_to_send(), 1.5) if a[0] == CLOSED]
    assert "PING" in closed[2]
    events = deliver(server, client)
    (goaway,) = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM


def test_reset_limit_per_second() -> None:
    server, client = pair(Config(h2_max_resets=3))
    for i in range(4):
        sid = client.get_next_available_stream_id()
        client.send_headers(sid, GET, end_stream=True)
        client.reset_stream(sid)
        actions = server.receive(client.data_to_send(), 0.1 * i)
    assert actions[-1][0] == CLOSED
    assert "resets" in actions[-1][2]


def test_graceful_goaway_keeps_streams_sendable() -> None:
    server, client = pair()
    sid = open_stream(server, client)
    deliver(server, client)
    server.goaway()
    assert server.send_data(sid, memoryview(b"last")) == 4
    server.finish(sid, complete=True)
    frames = []
    data = memoryview(bytes(server.out))
    while data:
        frame, length = Frame.parse_frame_header(data[:9])
        frame.parse_body(data[9 : 9 + length])
        frames.append(frame)
        data = data[9 + length :]
    goaway, last, end = frames
    assert isinstance(goaway, GoAwayFrame)
    assert (goaway.error_code, goaway.last_stream_id) == (0, sid)
    assert isinstance(last, DataFrame)
    assert last.data == b"last"
    assert isinstance(end, DataFrame)
    assert "END_STREAM" in end.flags


def test_response_headers_drop_connection_specific_fields() -> None:
    headers = [(b"Content-Type", b"text/plain"), (b"Connection", b"close"), (b"x-a", b"1")]
    assert response_headers(204, headers) == [
        (b":status", b"204"),
        (b"content-type", b"text/plain"),
        (b"x-a", b"1"),
    ]


def test_priority_in_request_headers_is_not_a_control_frame() -> None:
    """Browsers put a priority in each request's HEADERS: 300 at once are no flood."""
    server, client = pair(Config(h2_max_control_frames=10, h2_max_concurrent_streams=1000))
    for _ in range(300):
        sid = client.get_next_available_stream_id()
        client.send_headers(sid, GET, end_stream=True, priority_weight=200, priority_depends_on=0)
    actions = server.receive(client.data_to_send(), 0.0)
    assert [kind for kind, _, _ in actions].count(REQUEST) == 300
    assert not [a for a in actions if a[0] == CLOSED]
    # A PRIORITY frame of its own still counts.
    for _ in range(10):
        client.prioritize(1, weight=100)
    (closed,) = [a for a in server.receive(client.data_to_send(), 0.1) if a[0] == CLOSED]
    assert "PRIORITY" in closed[2]


def test_the_peers_acknowledgement_of_our_ping_is_reported() -> None:
    server, client = pair()
    deliver(server, client)
    server.ping()
    [ping] = [e for e in deliver(server, client) if isinstance(e, h2.events.PingReceived)]
    assert ping.ping_data == PING_DATA
    # h2 acknowledges a PING by itself; the acknowledgement is one action.
    assert (PONG, 0, PING_DATA) in server.receive(client.data_to_send(), 0.0)
    client.ping(b"theirs!!")  # the peer's own PING: answered, not reported
    assert not [a for a in server.receive(client.data_to_send(), 0.0) if a[0] == PONG]
