"""The trio EventSource client: :func:`open_event_source`, on httpx.

The public entry point and its settings; the machinery (reading, decoding,
reconnecting, backoff) and its theory of operation are in
``_event_source.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import trio

from ._codec import DEFAULT_MAX_EVENT_SIZE
from ._event_source import EventSource, OnOpen, OnReconnect, ReadyState

__all__ = ["EventSource", "OnOpen", "OnReconnect", "ReadyState", "open_event_source"]


@asynccontextmanager
async def open_event_source(
    url: str,
    *,
    client: httpx.AsyncClient | None = None,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    json: Any = None,
    content: bytes | None = None,
    last_event_id: str = "",
    reconnect: bool | None = None,
    retry: float = 3.0,
    max_backoff: float = 60.0,
    stable_after: float = 10.0,
    stall_timeout: float | None = None,
    max_reconnects: int | None = None,
    max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
    sentinel: str | None = None,
    on_open: OnOpen | None = None,
    on_reconnect: OnReconnect | None = None,
) -> AsyncIterator[EventSource]:
    """Open an event stream; yield an :class:`EventSource` to iterate.

    ::

        async with open_event_source("http://127.0.0.1:8000/clock") as source:
            async for event in source:
                print(event.type, event.data, event.last_event_id)

    The stream is opened before the block is entered, and reopened (with
    ``Last-Event-ID``) whenever it ends or breaks, until the block is left,
    :meth:`EventSource.close` is called, or an error is raised.

    Args:
        url: the stream's URL.
        client: an :class:`httpx.AsyncClient` to send requests with (auth,
            cookies, TLS, proxies, HTTP/2, ``base_url``); it is not closed.
            Give it ``timeout=httpx.Timeout(10, read=None)`` or similar: a
            read timeout shorter than the server's heartbeat interval would
            break every quiet stream (use ``stall_timeout`` instead). By
            default a client without timeouts is made and closed here.
        method: the request method; ``"POST"`` for LLM-style streams.
        headers: extra request headers (``Accept: text/event-stream``,
            ``Cache-Control: no-cache`` and ``Last-Event-ID`` are set here).
        json: a request body to send as JSON (or ``content``: raw bytes).
        content: a request body to send as is.
        last_event_id: the id to resume after, sent as ``Last-Event-ID``.
        reconnect: whether to send the request again after the stream ended
            or broke. Default: yes for idempotent methods (``GET``), no for
            the others (``POST``: RFC 9110 section 9.2.2), where the end of
            the response ends the iteration and a broken one raises
            :class:`~trio_sse.EventSourceConnectionError`.
        retry: the reconnection time in seconds until the server sets one
            with a ``retry`` field.
        max_backoff: cap, in seconds, of the exponential backoff on
            consecutive failures (never below the reconnection time).
        stable_after: a connection that stayed open this long (seconds),
            or delivered an event, resets the backoff.
        stall_timeout: reconnect when no byte arrived for this long
            (seconds; heartbeats count), also while waiting for the response
            headers. ``None`` (the default, as in browsers) waits forever;
            three times the server's heartbeat interval is a good value.
        max_reconnects: give up after this many consecutive failed or
            dropped connections (``None``: never).
        max_event_size: the :class:`~trio_sse.Decoder` bound, in bytes.
        sentinel: an event whose data equals this (e.g. ``"[DONE]"``) ends
            the stream; it is not yielded.
        on_open: called with the response each time the stream opens.
        on_reconnect: called with the error (``None`` if the stream ended
            cleanly) and the delay in seconds before each reconnection.

    Raises:
        EventSourceResponseError: a status other than 200 or 204, or a
            ``Content-Type`` other than ``text/event-stream``.
        EventSourceConnectionError: reconnecting is not allowed or
            ``max_reconnects`` was exceeded; ``__cause__`` says why.
        EventTooLargeError: an event exceeded ``max_event_size``.

    Resource handling:
        The response is closed when the block is left (also on
        cancellation); the client too, if it was made here.
    """
    own = client is None
    http = httpx.AsyncClient(timeout=None) if client is None else client
    try:
        source = EventSource(
            http,
            url,
            method=method,
            headers=headers,
            json=json,
            content=content,
            last_event_id=last_event_id,
            reconnect=reconnect,
            retry=retry,
            max_backoff=max_backoff,
            stable_after=stable_after,
            stall_timeout=stall_timeout,
            max_reconnects=max_reconnects,
            max_event_size=max_event_size,
            sentinel=sentinel,
            on_open=on_open,
            on_reconnect=on_reconnect,
        )
        try:
            while source.ready_state is ReadyState.CONNECTING and source.response is None:
                await source._connect()
            yield source
        finally:
            await source.aclose()
    finally:
        if own:
            with trio.CancelScope(shield=True):
                await http.aclose()
