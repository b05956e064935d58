"""The raw server's h11 side, sans-IO (``trio_sse/_http11.py``): heads in, bytes out.

No sockets and no trio: a request head is fed to a real ``h11.Connection``
and the bytes the module makes are parsed back by an h11 client.
"""

from __future__ import annotations

import h11
import pytest

from trio_sse import Config, Response
from trio_sse._http import StreamResponse
from trio_sse._http11 import (
    LAST_CHUNK,
    declared_length,
    head_error,
    response_bytes,
    stream_head,
    stream_tail,
)


async def _never(stream: object) -> None:
    raise AssertionError("not run")


def server_for(head: bytes) -> tuple[h11.Connection, h11.Request]:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head)
    event = conn.next_event()
    assert isinstance(event, h11.Request)
    return conn, event


def client_reading(method: bytes, data: bytes) -> list[object]:
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(data)
    events: list[object] = []
    while (event := client.next_event()) is not h11.NEED_DATA:
        events.append(event)
        if isinstance(event, h11.EndOfMessage):
            break
    return events


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", None),
        (b"GET / HTTP/1.0\r\n\r\n", None),
        (b"GET / HTTP/2.0\r\nhost: x\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\nhost: x\r\n" + b"a: b\r\n" * 5 + b"\r\n", 431),
        (b"GET /" + b"x" * 200 + b" HTTP/1.1\r\nhost: x\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nhost: x\r\nauthorization: a\r\nauthorization: b\r\n\r\n", 400),
    ],
)
def test_head_error(head: bytes, expected: int | None) -> None:
    _, event = server_for(head)
    refused = head_error(event, Config(max_header_count=4, max_header_size=150))
    assert (refused and refused[0]) == expected


def test_declared_length() -> None:
    _, event = server_for(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 12\r\n\r\n")
    assert declared_length(event) == 12
    _, event = server_for(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    assert declared_length(event) == 0


def test_response_bytes_round_trip() -> None:
    conn, _ = server_for(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    data = response_bytes(conn, Response("hello", headers={"x-a": "1"}), False, close=True)
    response, body, end = client_reading(b"GET", data)
    assert isinstance(response, h11.Response)
    headers = dict(response.headers)
    assert (response.status_code, headers[b"content-length"]) == (200, b"5")
    assert (headers[b"x-a"], headers[b"connection"], headers[b"server"]) == (
        b"1",
        b"close",
        b"trio-sse",
    )
    assert isinstance(body, h11.Data)
    assert body.data == b"hello"
    assert isinstance(end, h11.EndOfMessage)


def test_head_and_204_responses() -> None:
    conn, _ = server_for(b"HEAD / HTTP/1.1\r\nhost: x\r\n\r\n")
    data = response_bytes(conn, Response("hello"), True, close=False)
    assert data.endswith(b"\r\n\r\n")  # no body after the head
    assert b"content-length: 5" in data
    conn, _ = server_for(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    data = response_bytes(conn, Response(status=204), False, close=False)
    assert b"content-length" not in data.lower()
    assert b"connection" not in data.lower()


def test_stream_head_and_tail() -> None:
    stream = StreamResponse(_never)
    conn, _ = server_for(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    head = stream_head(conn, stream, chunked=True, head_only=False).lower()
    assert b"transfer-encoding: chunked" in head
    assert b"connection: close" in head
    assert b"content-type: text/event-stream" in head
    conn, _ = server_for(b"GET / HTTP/1.0\r\n\r\n")
    head = stream_head(conn, stream, chunked=False, head_only=False).lower()
    assert b"transfer-encoding" not in head
    assert b"connection: close" in head
    # HEAD on HTTP/1.1: the head and its end; the connection may stay open.
    conn, _ = server_for(b"HEAD / HTTP/1.1\r\nhost: x\r\n\r\n")
    head = stream_head(conn, stream, chunked=True, head_only=True).lower()
    assert b"connection: close" not in head
    assert conn.our_state is h11.DONE
    final = b"retry: 1000\n\n"
    assert stream_tail(True, final) == b"d\r\n" + final + b"\r\n" + LAST_CHUNK
    assert stream_tail(True, b"") == LAST_CHUNK
    assert stream_tail(False, final) == final
    assert stream_tail(False, b"") == b""
