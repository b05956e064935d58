r"""Responses and event streams: what a handler returns or writes to (no routing, no server).

Theory of operation: these are plain values and one small ABC. A server (the
raw h11 server, or the ASGI adapter) builds a :class:`Request` and turns what
the handler returns into bytes:

* an ordinary handler returns a :class:`Response` (or ``str``, ``bytes``,
  ``dict``/``list`` for JSON, ``None`` for 204; see :func:`to_response`);
* an event-stream handler gets an :class:`EventStream` and ``await``\\ s
  :meth:`EventStream.send` on it. The server owns the stream: it sends the
  headers before the handler runs, keeps the stream alive with heartbeats,
  and cancels the handler as soon as the client goes away.

The module sits below :mod:`trio_sse._app` (routes, lifespan, the ASGI entry
point) and below every transport, so that none of them imports the App at run
time: the package has no import cycle.
"""

from __future__ import annotations

import functools
import json
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final, TypeAlias, final

import trio

from ._errors import SSEError
from ._event import Event

if TYPE_CHECKING:
    from ._app import App
    from ._request import Request
    from ._websocket import WebSocket

__all__ = [
    "STREAM_HEADERS",
    "EventStream",
    "HTMLResponse",
    "HTTPException",
    "Handler",
    "HeaderList",
    "JSONResponse",
    "Lifespan",
    "PlainTextResponse",
    "Response",
    "ReturnValue",
    "StreamHandler",
    "StreamResponse",
    "WebSocketHandler",
    "status_phrase",
    "to_response",
]

HeaderList: TypeAlias = list[tuple[bytes, bytes]]
ReturnValue: TypeAlias = (
    "Response | StreamResponse | str | bytes | dict[str, Any] | list[Any] | None"
)
Handler: TypeAlias = Callable[["Request"], Awaitable[Any]]
StreamHandler: TypeAlias = Callable[["Request", "EventStream"], Awaitable[None]]
WebSocketHandler: TypeAlias = Callable[["Request", "WebSocket"], Awaitable[None]]
Lifespan: TypeAlias = Callable[["App"], AbstractAsyncContextManager[None]]

#: Headers every event stream carries. ``X-Accel-Buffering: no`` turns off
#: nginx's response buffering for this response only.
STREAM_HEADERS: Final[tuple[tuple[bytes, bytes], ...]] = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
)


class HTTPException(SSEError):
    """Raise from a handler to answer with an HTTP error.

    An :class:`~trio_sse.SSEError`, so that ``except SSEError`` catches every
    error trio-sse defines.

    Args:
        status: the status code.
        detail: the plain-text body (defaults to the status phrase).
        headers: extra response headers.

    """

    def __init__(
        self, status: int, detail: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        self.status = status
        self.detail = detail if detail is not None else (status_phrase(status) or "Error")
        self.headers = dict(headers or {})
        super().__init__(f"{status} {self.detail}")


class Response:
    """An ordinary (non-streaming) HTTP response.

    Args:
        body: the body; ``str`` is encoded as UTF-8.
        status: the status code.
        headers: extra headers.
        media_type: the ``Content-Type`` (a class default applies if ``None``).

    """

    media_type: str | None = None

    def __init__(
        self,
        body: bytes | str = b"",
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
    ) -> None:
        self.body = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        self.status = status
        self.headers = dict(headers or {})
        if media_type is not None:
            self.media_type = media_type

    def header_list(self) -> HeaderList:
        """The response headers as bytes pairs, with ``Content-Type`` if set."""
        out: HeaderList = []
        names = {k.lower() for k in self.headers}
        if self.media_type is not None and "content-type" not in names:
            out.append((b"content-type", self.media_type.encode("latin-1")))
        out.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items())
        return out


class PlainTextResponse(Response):
    """A ``text/plain`` response."""

    media_type = "text/plain; charset=utf-8"


class HTMLResponse(Response):
    """A ``text/html`` response."""

    media_type = "text/html; charset=utf-8"


class JSONResponse(Response):
    """A JSON response.

    Args:
        content: any value :func:`json.dumps` accepts.
        status: the status code.
        headers: extra headers.

    """

    media_type = "application/json"

    def __init__(
        self, content: Any, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(
            json.dumps(content, separators=(",", ":"), ensure_ascii=False), status, headers
        )


class EventStream(ABC):
    """What a stream handler sends events on; implemented by each server.

    The server has already sent the response headers when the handler gets
    this object. Sending returns once the bytes are handed to the transport.

    Cancellation:
        The handler is cancelled when the client disconnects, when a write
        stalls past ``Config.write_timeout``, when ``max_stream_lifetime``
        ends the stream, or when the server shuts down. The server then ends
        the stream; the handler need not (and cannot) send more.
    """

    last_event_id: str | None
    """The ``Last-Event-ID`` the client sent (header, or ``lastEventId`` query parameter)."""

    @abstractmethod
    async def send(self, event: Event | str) -> None:
        """Send one event (a ``str`` is sent as ``Event(data=...)``)."""

    @abstractmethod
    async def send_many(self, events: Sequence[Event]) -> None:
        """Send several events in one write."""


@final
class StreamResponse:
    """A response that streams server-sent events.

    Return it from an ordinary handler to stream after checking the request;
    :meth:`App.stream` builds it for you.

    Args:
        handler: ``async def handler(stream: EventStream) -> None``; the stream
            ends when it returns.
        status: the status code (200).
        headers: extra headers besides the event-stream ones.
        expires_at: end the stream at this Unix time (a credential's
            expiry), like ``Config.max_stream_lifetime`` does: the handler is
            cancelled and the final ``retry:`` event sent, so the client
            reconnects and authenticates again.

    """

    __slots__ = ("expires_at", "handler", "headers", "status")

    def __init__(
        self,
        handler: Callable[[EventStream], Awaitable[None]],
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        expires_at: float | None = None,
    ) -> None:
        self.handler = handler
        self.status = status
        self.headers = dict(headers or {})
        self.expires_at = expires_at

    def deadline(self, lifetime: float | None) -> float:
        """The trio deadline of the stream: ``lifetime`` or :attr:`expires_at`, the sooner."""
        now = trio.current_time()
        deadline = math.inf if lifetime is None else now + lifetime
        if self.expires_at is not None:
            deadline = min(deadline, now + self.expires_at - time.time())
        return deadline

    def header_list(self) -> HeaderList:
        """The event-stream headers plus any extra ones."""
        out = list(STREAM_HEADERS)
        out.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items())
        return out


def to_response(value: ReturnValue) -> Response | StreamResponse:
    """Turn a handler's return value into a response object."""
    if isinstance(value, Response | StreamResponse):
        return value
    if value is None:
        return Response(status=204)
    if isinstance(value, str):
        return PlainTextResponse(value)
    if isinstance(value, bytes | bytearray):
        return Response(bytes(value), media_type="application/octet-stream")
    if isinstance(value, dict | list):
        return JSONResponse(value)
    raise TypeError(
        f"handler returned {type(value).__name__}; return a Response, StreamResponse, "
        "str, bytes, dict, list or None"
    )


@functools.cache
def status_phrase(status: int) -> str:
    """The standard reason phrase of ``status`` (``""`` for an unknown code)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
