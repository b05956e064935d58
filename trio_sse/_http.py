r"""Requests, responses and event streams: what a handler sees (no routing, no server).

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
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final, TypeAlias, final

import trio

from ._config import Config
from ._edge import json_depth_exceeds
from ._errors import SSEError
from ._event import Event

if TYPE_CHECKING:
    from ._app import App
    from ._websocket import WebSocket

__all__ = [
    "STREAM_HEADERS",
    "BodyReader",
    "EventStream",
    "HTMLResponse",
    "HTTPException",
    "Handler",
    "HeaderList",
    "Headers",
    "JSONResponse",
    "Lifespan",
    "PlainTextResponse",
    "Request",
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


@final
class Headers(Mapping[str, str]):
    """Immutable, case-insensitive view of request headers.

    ``headers["Last-Event-ID"]`` gives the last value of a header; use
    :meth:`getall` for repeated headers. Values are decoded as Latin-1, the
    way HTTP defines header bytes.
    """

    __slots__ = ("_list",)

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        self._list: list[tuple[str, str]] = [
            (name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in raw
        ]

    def __getitem__(self, key: str) -> str:
        key = key.lower()
        for name, value in reversed(self._list):
            if name == key:
                return value
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(name for name, _ in self._list))

    def __len__(self) -> int:
        return len({name for name, _ in self._list})

    def getall(self, key: str) -> list[str]:
        """Every value of header ``key``, in the order received."""
        key = key.lower()
        return [value for name, value in self._list if name == key]

    def raw(self) -> list[tuple[str, str]]:
        """All ``(name, value)`` pairs, names lower-cased, in the order received."""
        return list(self._list)

    def __repr__(self) -> str:
        return f"Headers({self._list!r})"


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

    def direct_sink(self) -> Callable[[Event], bool] | None:
        """A synchronous writer another task may call while this stream is idle.

        Used by topic streams: a topic calls the sink from the publisher's
        task, writing each event straight to an idle connection instead of
        waking the stream's task. The sink returns ``False`` when the
        connection is busy; the event then goes through the subscriber's
        bounded queue as usual. ``None`` (the default) when the transport
        cannot write synchronously.
        """
        return None


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


BodyReader: TypeAlias = Callable[[], Awaitable[bytes]]


async def _no_body() -> bytes:
    return b""


@final
class Request:
    """An HTTP request as a handler sees it.

    Attributes:
        method: ``"GET"``, ``"POST"``, ...
        path: the percent-decoded path, without :attr:`root_path`: the path
            the routes match.
        raw_path: the path as sent, without the query.
        root_path: the prefix the app is mounted at (ASGI ``root_path``,
            e.g. under a Starlette ``Mount``); ``""`` on the raw server.
        query_string: the raw query string.
        headers: case-insensitive :class:`Headers`.
        path_params: values captured by the route's ``{name}`` segments.
        client: the peer's ``(host, port)`` if known.
        http_version: ``"1.1"``, ``"1.0"`` or ``"2"``.
        app: the :class:`App` serving the request.
        config: the :class:`Config` the request is served with (the
            server's, which may differ from ``app.config``).

    """

    __slots__ = (
        "_body",
        "_body_reader",
        "_query",
        "app",
        "client",
        "config",
        "headers",
        "http_version",
        "method",
        "path",
        "path_params",
        "query_string",
        "raw_path",
        "root_path",
    )

    def __init__(
        self,
        method: str,
        target: bytes,
        headers: Headers,
        *,
        app: App,
        http_version: str = "1.1",
        client: tuple[str, int] | None = None,
        body_reader: BodyReader = _no_body,
        root_path: str = "",
        config: Config | None = None,
    ) -> None:
        self.method = method
        raw_path, _, query = target.partition(b"?")
        self.raw_path = raw_path
        self.root_path = root_path
        self.path = _strip_root(
            urllib.parse.unquote(raw_path.decode("latin-1"), errors="replace"), root_path
        )
        self.query_string = query
        self.headers = headers
        self.path_params: dict[str, str] = {}
        self.client = client
        self.http_version = http_version
        self.app = app
        self.config = config if config is not None else app.config
        self._body_reader = body_reader
        self._body: bytes | None = None
        self._query: dict[str, list[str]] | None = None

    @property
    def query(self) -> dict[str, list[str]]:
        """Query parameters, each name mapped to its values."""
        if self._query is None:
            self._query = urllib.parse.parse_qs(
                self.query_string.decode("latin-1"), keep_blank_values=True
            )
        return self._query

    def query_param(self, name: str, default: str | None = None) -> str | None:
        """The last value of query parameter ``name``, or ``default``."""
        values = self.query.get(name)
        return values[-1] if values else default

    @property
    def last_event_id(self) -> str | None:
        """The client's resume position.

        The ``Last-Event-ID`` header (sent by a reconnecting ``EventSource``),
        else the ``lastEventId`` query parameter (for clients that cannot set
        headers), else ``None``.
        """
        value = self.headers.get("last-event-id")
        if value is not None:
            return value
        return self.query_param("lastEventId")

    async def body(self) -> bytes:
        """Read the whole request body (bounded by ``Config.max_body_size``).

        Raises:
            HTTPException: 413 if the body is too large, 408 if it is too slow.

        """
        if self._body is None:
            self._body = await self._body_reader()
        return self._body

    async def text(self) -> str:
        """The body decoded as UTF-8 (400 if it is not)."""
        try:
            return (await self.body()).decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPException(400, "request body is not valid UTF-8") from None

    async def json(self) -> Any:
        """The body parsed as JSON.

        Raises:
            HTTPException: 400 if it is not JSON, or nests arrays and objects
                deeper than ``Config.max_json_depth``.

        """
        body = await self.body()
        limit = self.config.max_json_depth
        if json_depth_exceeds(body, limit):
            raise HTTPException(
                400, f"JSON body nested deeper than {limit} levels (Config.max_json_depth)"
            )
        try:
            return json.loads(body)
        except (ValueError, RecursionError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise HTTPException(400, f"request body is not valid JSON: {reason}") from None

    async def form(self) -> dict[str, str]:
        """The body parsed as ``application/x-www-form-urlencoded`` (last value wins)."""
        parsed = urllib.parse.parse_qs(await self.text(), keep_blank_values=True)
        return {k: v[-1] for k, v in parsed.items()}

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.raw_path.decode('latin-1')!r}>"


def _strip_root(path: str, root_path: str) -> str:
    """``path`` relative to ``root_path`` (as Starlette's ``get_route_path``).

    ASGI servers and routers put the full path in ``scope["path"]`` and the
    mount prefix in ``scope["root_path"]``; a path outside the prefix (a proxy
    already stripped it) is left as it is.
    """
    if not root_path or not path.startswith(root_path):
        return path
    rest = path[len(root_path) :]
    if not rest:
        return "/"
    return rest if rest.startswith("/") else path


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
