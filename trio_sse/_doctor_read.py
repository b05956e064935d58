"""The doctor's browser: one ``GET`` of an event stream, timed chunk by chunk.

Strategy: :func:`read_stream` sends what a browser's ``EventSource`` sends
(``Accept: text/event-stream``, ``Cache-Control: no-cache``, a browser's
``Accept-Encoding``, optionally ``Last-Event-ID``) over HTTP/1.1 with h11,
then records, on one clock started before connecting, when the response head
and each body chunk arrived and which events the chunks decode to (gzip and
deflate are inflated first; another encoding only counts arrivals). It stops
at the end of the body, at a clean or broken close (``ended``), after
``duration`` seconds, or, with ``first_event``, at the first event. It draws
no conclusions: :func:`trio_sse._doctor.diagnose` compares the
:class:`Read` with what the server says it sent. :func:`negotiated_h2`
asks, in a separate TLS handshake, whether browsers would get HTTP/2.
"""

from __future__ import annotations

import ssl
import zlib
from dataclasses import dataclass, field
from typing import final
from urllib.parse import urlsplit

import h11
import trio

from ._codec import Decoder

__all__ = ["Read", "negotiated_h2", "read_stream"]


@final
@dataclass(slots=True)
class Read:
    """What one request saw, on a clock started before connecting (seconds)."""

    status: int = 0
    http_version: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    head_at: float | None = None
    chunks: list[float] = field(default_factory=list)  # arrival of each body chunk
    events: list[tuple[float, str, str]] = field(default_factory=list)  # (at, type, data)
    ended: bool = False  # the server or a proxy ended the body
    retry_seen: bool = False


async def _open(url: str, context: ssl.SSLContext | None, alpn: list[str]) -> trio.abc.Stream:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    stream: trio.abc.Stream = await trio.open_tcp_stream(parts.hostname, port)
    if parts.scheme == "https":
        context = context or ssl.create_default_context()
        context.set_alpn_protocols(alpn)
        stream = trio.SSLStream(stream, context, server_hostname=parts.hostname)
    return stream


async def negotiated_h2(url: str, context: ssl.SSLContext | None) -> bool:
    """Whether the server would speak HTTP/2 to a browser (TLS with ALPN ``h2``)."""
    stream = await _open(url, context, ["h2", "http/1.1"])
    async with stream:
        if not isinstance(stream, trio.SSLStream):
            return False
        await stream.do_handshake()
        return bool(stream.selected_alpn_protocol() == "h2")


async def read_stream(
    url: str,
    duration: float,
    last_event_id: str | None,
    *,
    first_event: bool = False,
    context: ssl.SSLContext | None = None,
) -> Read:
    """GET *url* as a browser's ``EventSource`` would and time what arrives.

    Args:
        url: the stream's ``http://`` or ``https://`` URL.
        duration: seconds to read at most.
        last_event_id: sent as ``Last-Event-ID`` unless ``None``.
        first_event: stop at the first decoded event.
        context: for ``https`` (default: the system's certificate authorities).

    Raises:
        OSError: the server cannot be reached.
        ValueError: *url* is not an http(s) URL.
    """
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    read = Read()
    start = trio.current_time()
    stream = await _open(url, context, ["http/1.1"])
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        headers = [
            ("host", parts.netloc),
            ("accept", "text/event-stream"),
            ("cache-control", "no-cache"),
            ("accept-encoding", "gzip, deflate, br"),
            ("user-agent", "trio-sse-doctor"),
        ]
        if last_event_id is not None:
            headers.append(("last-event-id", last_event_id))
        await stream.send_all(conn.send(h11.Request(method="GET", target=target, headers=headers)))
        await stream.send_all(conn.send(h11.EndOfMessage()))
        decoder = Decoder()
        inflate: zlib._Decompress | None = None
        undecodable = False
        with trio.move_on_after(duration):
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    conn.receive_data(bytes(data))
                    if not data and conn.their_state is not h11.DONE:
                        read.ended = True
                        return read
                    continue
                now = trio.current_time() - start
                if isinstance(event, h11.Response):
                    read.status = event.status_code
                    read.http_version = event.http_version.decode()
                    read.headers = {k.decode(): v.decode() for k, v in event.headers}
                    read.head_at = now
                    encoding = read.headers.get("content-encoding", "identity")
                    if encoding in ("gzip", "x-gzip", "deflate"):
                        inflate = zlib.decompressobj(wbits=47)  # gzip or zlib header
                    elif encoding != "identity":
                        undecodable = True  # br, say: arrival times still count
                elif isinstance(event, h11.Data):
                    read.chunks.append(now)
                    body = bytes(event.data)
                    if inflate is not None:
                        body = inflate.decompress(body)
                    if b"\nretry:" in b"\n" + body:
                        read.retry_seen = True
                    if undecodable:
                        continue
                    for message in decoder.feed(body):
                        read.events.append((now, message.type, message.data))
                    if first_event and read.events:
                        return read
                else:  # EndOfMessage, ConnectionClosed
                    read.ended = True
                    return read
    return read
