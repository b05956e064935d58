r"""The application: routes, requests, responses and event streams.

Theory of operation: an :class:`App` is a plain routing table plus a lifespan.
It never touches sockets. A server (the raw h11 server in ``_server.py``, or an
ASGI server) turns bytes into a :class:`Request`, asks :meth:`App.resolve` for
the route, awaits the handler, and turns what it returns into bytes:

* an ordinary handler returns a :class:`Response` (or ``str``, ``bytes``,
  ``dict``/``list`` for JSON, ``None`` for 204);
* an event-stream handler gets an :class:`EventStream` and ``await``\\ s
  :meth:`EventStream.send` on it. The server owns the stream: it sends the
  headers before the handler runs, keeps the stream alive with heartbeats,
  and cancels the handler as soon as the client goes away.

One mechanism serves both styles of stream route: :meth:`App.stream` is sugar
for a route returning :class:`StreamResponse`, which is also what a handler
returns when it must check something (authorization, say) before deciding to
stream.
"""

from __future__ import annotations

import functools
import json
import math
import re
import time
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from http import HTTPStatus
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Final, TypeAlias, final

import trio

from ._config import Config
from ._edge import json_depth_exceeds
from ._errors import SSEError, unwrap_groups
from ._event import Event
from ._limits import REFUSAL_REASONS

if TYPE_CHECKING:
    from ._asgi import Receive, Scope, Send
    from ._cors import CORS
    from ._websocket import WebSocket

__all__ = [
    "App",
    "EventStream",
    "HTMLResponse",
    "HTTPException",
    "Headers",
    "JSONResponse",
    "PlainTextResponse",
    "Request",
    "Response",
    "Route",
    "StreamResponse",
    "WebSocketRoute",
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


_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::(path|str))?\}")


@final
@dataclass(frozen=True, slots=True)
class Route:
    """One entry of the routing table.

    Attributes:
        path: the pattern, e.g. ``/rooms/{room}`` or ``/files/{rest:path}``.
        methods: the accepted methods (``HEAD`` is implied by ``GET``).
        handler: the coroutine function called for a match.
        pattern: the compiled pattern.

    """

    path: str
    methods: frozenset[str]
    handler: Handler
    pattern: re.Pattern[str]

    @classmethod
    def build(cls, path: str, methods: Iterable[str], handler: Handler) -> Route:
        """Compile ``path`` (``{name}`` matches a segment, ``{name:path}`` the rest)."""
        ms = frozenset(m.upper() for m in methods)
        if "GET" in ms:
            ms = ms | {"HEAD"}
        return cls(path, ms, handler, _compile_path(path))


@final
@dataclass(frozen=True, slots=True)
class WebSocketRoute:
    """A WebSocket route: ``handler(request, websocket)`` for upgrades on ``path``.

    Attributes:
        path: the pattern, as for :class:`Route`.
        handler: ``async def handler(request, ws)``.
        pattern: the compiled pattern.

    """

    path: str
    handler: WebSocketHandler
    pattern: re.Pattern[str]


def _compile_path(path: str) -> re.Pattern[str]:
    if not path.startswith("/"):
        raise ValueError(f"route path must start with '/', got {path!r}")
    regex, pos = "", 0
    for m in _PARAM.finditer(path):
        regex += re.escape(path[pos : m.start()])
        part = "[^/]+" if m.group(2) in (None, "str") else ".*"
        regex += f"(?P<{m.group(1)}>{part})"
        pos = m.end()
    regex += re.escape(path[pos:])
    return re.compile(f"^{regex}$")


@final
class App:
    """A trio-sse application: routes, event streams and a lifespan.

    Args:
        lifespan: optional ``(app) -> async context manager`` entered before the
            server accepts connections and exited after it stops (set-up and
            tear-down of shared resources).
        config: default server :class:`Config` for this app (a server may be
            given another).
        cors: which other origins browsers may let read responses
            (:class:`~trio_sse.CORS`); ``None``: same-origin only.

    Example::

        app = App()

        @app.get("/")
        async def index(request):
            return HTMLResponse("<h1>hello</h1>")

        @app.stream("/clock")
        async def clock(request, stream):
            while True:
                await stream.send(Event(time.ctime(), event="tick"))
                await trio.sleep(1)

    """

    def __init__(
        self,
        *,
        lifespan: Lifespan | None = None,
        config: Config | None = None,
        cors: CORS | None = None,
    ) -> None:
        self._routes: list[Route] = []
        self.cors = cors
        self._websocket_routes: list[WebSocketRoute] = []
        self.config = config if config is not None else Config()
        self.state = SimpleNamespace()
        #: Requests and connections refused by the edge limits, by reason
        #: (see :class:`~trio_sse.ClientLimits`); served by metrics_endpoint.
        self.refusals: dict[str, int] = dict.fromkeys(REFUSAL_REASONS, 0)
        self._lifespan = lifespan
        self._background: list[Callable[[], Awaitable[None]]] = []

    # -- registration -------------------------------------------------------

    def route(self, path: str, methods: Iterable[str] = ("GET",)) -> Callable[[Handler], Handler]:
        """Decorator: register an ordinary handler ``async def h(request)``."""

        def decorator(handler: Handler) -> Handler:
            self.add_route(path, handler, methods)
            return handler

        return decorator

    def add_route(self, path: str, handler: Handler, methods: Iterable[str] = ("GET",)) -> None:
        """Register ``handler`` for ``methods`` on ``path``."""
        self._routes.append(Route.build(path, methods, handler))

    def get(self, path: str) -> Callable[[Handler], Handler]:
        """Decorator: a ``GET`` (and ``HEAD``) route."""
        return self.route(path, ("GET",))

    def post(self, path: str) -> Callable[[Handler], Handler]:
        """Decorator: a ``POST`` route."""
        return self.route(path, ("POST",))

    def stream(self, path: str) -> Callable[[StreamHandler], StreamHandler]:
        """Decorator: an event-stream route ``async def h(request, stream)``.

        The server sends the stream headers, then awaits the handler; the
        stream ends when the handler returns, and the handler is cancelled
        when the client goes away.
        """

        def decorator(handler: StreamHandler) -> StreamHandler:
            async def endpoint(request: Request) -> StreamResponse:
                async def run(stream: EventStream) -> None:
                    await handler(request, stream)

                return StreamResponse(run)

            endpoint.__name__ = getattr(handler, "__name__", "stream")
            self.add_route(path, endpoint, ("GET",))
            return handler

        return decorator

    def websocket(self, path: str) -> Callable[[WebSocketHandler], WebSocketHandler]:
        """Decorator: a WebSocket route ``async def h(request, ws)``.

        A WebSocket upgrade request on ``path`` runs the handler with a
        :class:`~trio_sse.WebSocket` it must :meth:`~trio_sse.WebSocket.accept`
        (raising :class:`HTTPException` before that refuses the handshake
        with that status). Served by both the raw server (through
        trio-websocket: ``pip install trio-sse[websocket]``) and ASGI servers.
        Other requests on ``path`` still go to the HTTP routes. See
        :func:`~trio_sse.topic_websocket` for topics over WebSocket.
        """

        def decorator(handler: WebSocketHandler) -> WebSocketHandler:
            self.add_websocket_route(path, handler)
            return handler

        return decorator

    def add_websocket_route(self, path: str, handler: WebSocketHandler) -> None:
        """Register a WebSocket ``handler(request, ws)`` on ``path``."""
        self._websocket_routes.append(WebSocketRoute(path, handler, _compile_path(path)))

    def _resolve_websocket(self, path: str) -> tuple[WebSocketRoute | None, dict[str, str]]:
        """The WebSocket route for ``path`` and its path parameters, or ``(None, {})``."""
        for route in self._websocket_routes:
            m = route.pattern.match(path)
            if m is not None:
                return route, m.groupdict()
        return None, {}

    def background(self, fn: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        """Decorator: run ``async def fn()`` for the app's lifetime.

        Background tasks (tickers, publishers) start in the server's nursery
        after the lifespan is entered and are cancelled at shutdown, after the
        streams have ended. An exception in one stops the server: catch what
        you can handle inside the task.
        """
        self._background.append(fn)
        return fn

    # -- serving ------------------------------------------------------------

    def _resolve(self, method: str, path: str) -> tuple[Route | None, dict[str, str], list[str]]:
        """Find the route for ``method`` and ``path``.

        Returns:
            ``(route, path_params, allowed)``: the route or ``None``; when
            ``None`` but the path matched other methods, ``allowed`` lists them
            (answer 405 with ``Allow``), else it is empty (404).

        """
        allowed: set[str] = set()
        for route in self._routes:
            m = route.pattern.match(path)
            if m is None:
                continue
            if method in route.methods:
                return route, m.groupdict(), []
            allowed |= route.methods
        return None, {}, sorted(allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve an ASGI 3 connection: the app is an ASGI application too.

        ``hypercorn --worker-class trio MODULE:APP`` serves it with the same
        routes, streams, heartbeats, deadlines and lifespan as
        :func:`trio_sse.serve` (see ``docs/hypercorn.md``); it can also be
        mounted inside another trio-compatible ASGI app (``scope["root_path"]``
        is respected).

        Raises:
            RuntimeError: called outside trio (e.g. by an asyncio server).

        """
        from ._asgi import serve_asgi

        await serve_asgi(self, scope, receive, send)

    @asynccontextmanager
    async def run_lifespan(self) -> AsyncIterator[None]:
        """Enter the lifespan, run background tasks, tear both down on exit.

        Servers call this around serving; tests can call it directly.
        """
        with unwrap_groups():
            if self._lifespan is not None:
                async with self._lifespan(self), _background_nursery(self._background):
                    yield
            else:
                async with _background_nursery(self._background):
                    yield


@asynccontextmanager
async def _background_nursery(
    tasks: Sequence[Callable[[], Awaitable[None]]],
) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        for fn in tasks:
            nursery.start_soon(fn)
        try:
            yield
        finally:
            nursery.cancel_scope.cancel()


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
