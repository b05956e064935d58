"""The application: a routing table plus a lifespan, and the ASGI entry point.

Theory of operation: an :class:`App` never touches sockets. A server (the raw
h11 server in ``_server.py``, or an ASGI server calling the App, which
delegates to ``_asgi.py``) turns bytes into a :class:`~trio_sse.Request`
(``_request.py``), asks :meth:`App._resolve` for the route, awaits the handler,
and turns what it returns into bytes.

One mechanism serves both styles of stream route: :meth:`App.stream` is sugar
for a route returning :class:`~trio_sse.StreamResponse`, which is also what a
handler returns when it must check something (authorization, say) before
deciding to stream.

Layering: requests (``_request.py``), responses and streams (``_http.py``) live below this
module and below every transport; this module imports the ASGI adapter (for
:meth:`App.__call__`), never the reverse, so the package has no import cycle.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, final

import trio

from ._asgi import serve_asgi
from ._config import Config
from ._errors import unwrap_groups
from ._http import EventStream, Handler, Lifespan, StreamHandler, StreamResponse, WebSocketHandler
from ._limits import REFUSAL_REASONS

if TYPE_CHECKING:
    from ._asgi import Receive, Scope, Send
    from ._cors import CORS
    from ._request import Request

__all__ = ["App", "Route", "WebSocketRoute"]


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
