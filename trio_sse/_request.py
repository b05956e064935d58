"""The request a handler sees: :class:`Request` and its :class:`Headers`.

Theory of operation: plain values. A transport (the raw connection, the ASGI
adapter) builds a :class:`Request` from what it parsed and gives it a body
reader: reading the body is the exchange's (limits, deadline), so a handler
that never reads it costs nothing. Query parsing is lazy.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias, final

from ._config import Config
from ._edge import json_depth_exceeds
from ._http import HTTPException

if TYPE_CHECKING:
    from ._app import App

__all__ = ["BodyReader", "Headers", "Request"]


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
