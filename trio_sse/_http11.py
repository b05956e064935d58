"""HTTP/1.1 framing for the raw server: h11 state in, bytes out (sans-IO, no trio).

The connection task (``_connection.py``) owns the socket; this module owns
what h11 knows: whether a request head is acceptable, and the bytes of
response heads, bodies and stream ends. Nothing here waits or writes, so the
protocol can be read (and tested) apart from the I/O, as in hypercorn's split
between protocol events and the task that owns the socket.

Responses: h11 frames the head, the body of an ordinary response and the end
of a stream (the terminating chunk). Event chunks bypass h11 during a stream
(:meth:`Event.encode_chunk` frames them, cached, once for every connection);
h11's chunked writer keeps no byte count, so that is safe.
"""

from __future__ import annotations

import contextlib
import email.utils
import time
from typing import Final

import h11

from ._config import Config
from ._edge import request_head_error
from ._http import Response, StreamResponse, status_phrase

__all__ = [
    "LAST_CHUNK",
    "declared_length",
    "head_error",
    "next_cycle",
    "request_head_bytes",
    "response_bytes",
    "stream_head",
    "stream_tail",
]

LAST_CHUNK: Final = b"0\r\n\r\n"
_SERVER_HEADER: Final = (b"server", b"trio-sse")

_date_cache: tuple[int, bytes] = (0, b"")


def _date_header() -> tuple[bytes, bytes]:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, usegmt=True).encode("ascii"))
    return (b"date", _date_cache[1])


def head_error(event: h11.Request, config: Config) -> tuple[int, str] | None:
    """Why a request head must be refused (status, reason), or ``None``.

    Every refusal closes the connection: what follows such a head cannot be
    trusted (a smuggled request, say).
    """
    if event.http_version not in (b"1.1", b"1.0"):
        # h11 parses any HTTP/x.y request line; this server speaks 1.x.
        return 505, "HTTP/1.1 or HTTP/1.0 only"
    if len(event.headers) > config.max_header_count:
        return 431, f"more than {config.max_header_count} request headers"
    size = len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers)
    if size > config.max_header_size:
        return 431, f"request head over {config.max_header_size} bytes"
    refused = request_head_error(event.headers.raw_items())
    if refused is not None:
        return 400, refused
    return None


def declared_length(event: h11.Request) -> int:
    """The request's ``Content-Length`` (h11 validated it), 0 if none."""
    for name, value in event.headers:
        if name == b"content-length":
            return int(value)
    return 0


def _head(conn: h11.Connection, status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
    data = conn.send(
        h11.Response(
            status_code=status,
            headers=[_date_header(), _SERVER_HEADER, *headers],
            reason=status_phrase(status).encode("ascii"),
        )
    )
    assert data is not None
    return data


def response_bytes(conn: h11.Connection, response: Response, head_only: bool, close: bool) -> bytes:
    """A whole ordinary response: head, body (none for ``HEAD``), end."""
    headers = response.header_list()
    if response.status != 204:  # RFC 9110 8.6: never in a 204
        headers.append((b"content-length", b"%d" % len(response.body)))
    if close:
        headers.append((b"connection", b"close"))
    data = _head(conn, response.status, headers)
    if not head_only and response.body:
        body = conn.send(h11.Data(data=response.body))
        assert body is not None
        data += body
    end = conn.send(h11.EndOfMessage())
    assert end is not None
    return data + end


def stream_head(
    conn: h11.Connection, response: StreamResponse, chunked: bool, head_only: bool
) -> bytes:
    """The head of an event stream (and its end, for ``HEAD``)."""
    headers = response.header_list()
    if chunked:
        headers.append((b"transfer-encoding", b"chunked"))
    if not chunked or not head_only:
        # The connection closes after a stream: say so, or a keep-alive
        # client would send its next request into the closing socket.
        headers.append((b"connection", b"close"))
    data = _head(conn, response.status, headers)
    if head_only:
        end = conn.send(h11.EndOfMessage())
        assert end is not None
        data += end
    return data


def stream_tail(chunked: bool, final: bytes) -> bytes:
    """``final`` (the ``retry:`` event, or nothing) framed, then the terminating chunk."""
    if not chunked:
        return final
    if final:
        return b"%x\r\n%b\r\n%b" % (len(final), final, LAST_CHUNK)
    return LAST_CHUNK


def request_head_bytes(event: h11.Request) -> bytes:
    """A parsed request head as bytes again (for a library taking over the socket)."""
    head = b"%s %s HTTP/%s\r\n" % (event.method, event.target, event.http_version)
    head += b"".join(b"%s: %s\r\n" % (n, v) for n, v in event.headers.raw_items())
    return head + b"\r\n"


def next_cycle(conn: h11.Connection) -> bool:
    """Ready ``conn`` for the next request; ``False``: the connection must close.

    A handler may not have read the request body. A GET's (empty) body has
    already been parsed, so taking its end costs no I/O; a body that has not
    all arrived closes the connection.
    """
    if conn.their_state is h11.SEND_BODY:
        with contextlib.suppress(h11.RemoteProtocolError):
            while isinstance(conn.next_event(), h11.Data):
                pass
    if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
        conn.start_next_cycle()
        return True
    return False
