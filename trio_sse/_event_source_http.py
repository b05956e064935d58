"""One connection of the EventSource client, over httpx.

Strategy: what :class:`~trio_sse.EventSource` needs from HTTP, with no state
of its own. The request is the one a browser sends (``Accept:
text/event-stream``, ``Cache-Control: no-cache``, ``Last-Event-ID``, header
values as UTF-8 bytes); the response is an event stream only with status 200
and ``Content-Type: text/event-stream`` (WHATWG HTML: anything else "fail[s]
the connection"); a refused response's error carries an excerpt of its body,
read for a bounded size and time; and a response is closed so that httpx's
chain of body generators ends at once instead of being left to the garbage
collector.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Final

import httpx
import trio

__all__ = ["close_response", "excerpt", "is_event_stream", "request_headers"]

#: How much of a refused response's body an error carries, in bytes, and
#: how long to wait for it, in seconds (a slow body must not hang the error).
_EXCERPT: Final = 1024
_EXCERPT_WAIT: Final = 1.0

#: Bound on the chunks read from a closed response's buffers (see close_response).
_DRAIN_LIMIT: Final = 10_000


def request_headers(extra: Mapping[bytes, bytes], last_event_id: str) -> dict[bytes, bytes]:
    """The request headers of a (re)connection, *extra* (lower-case names) included."""
    # As bytes: header values are sent as UTF-8, as browsers send
    # Last-Event-ID (httpx would encode a str as ASCII).
    headers = {
        b"accept": b"text/event-stream",
        b"cache-control": b"no-cache",
        **extra,
    }
    if last_event_id:
        headers[b"last-event-id"] = last_event_id.encode()
    return headers


def is_event_stream(response: httpx.Response) -> bool:
    """Whether *response* is an event stream: status 200, ``text/event-stream``."""
    media_type = response.headers.get("content-type", "")
    return (
        response.status_code == 200
        and media_type.partition(";")[0].strip().lower() == "text/event-stream"
    )


async def excerpt(response: httpx.Response, stall: float) -> bytes:
    """Up to the first 1024 bytes of *response*'s body, then close it.

    Waits at most a second (less if the read-stall deadline *stall* is
    shorter): a slow body must not hang the error that quotes it.
    """
    body = b""
    chunks = response.aiter_bytes()
    with trio.move_on_after(min(stall, _EXCERPT_WAIT)):
        try:
            while len(body) < _EXCERPT:
                body += await anext(chunks)
        except (StopAsyncIteration, httpx.HTTPError):
            pass
    await close_response(response, chunks)
    return body[:_EXCERPT]


async def close_response(response: httpx.Response, chunks: AsyncIterator[bytes] | None) -> None:
    """Close *response* and end its body iterator *chunks* (shielded)."""
    # Close the response, then end its body iterator. httpx and httpcore read
    # the body through a chain of async generators; closing the outermost one
    # would leave the inner ones to the garbage collector (trio warns about
    # each). So the chain is run once more in a cancelled scope: the first
    # checkpoint, in the innermost generator, raises Cancelled, which ends
    # every generator of the chain on its way out. (Without the cancelled
    # scope, the read could wait: an HTTP/2 stream's does, for the server.)
    with trio.CancelScope(shield=True):
        await response.aclose()
        if chunks is not None:
            with trio.CancelScope() as drain, contextlib.suppress(Exception):
                drain.cancel()
                for _ in range(_DRAIN_LIMIT):
                    await anext(chunks)
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
