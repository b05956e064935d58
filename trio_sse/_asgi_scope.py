"""ASGI types, and the :class:`~trio_sse.Request` of an ASGI scope.

Shared by the ``http`` side (``_asgi.py``) and the ``websocket`` side
(``_asgi_websocket.py``) of the ASGI adapter.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, TypeAlias

from ._request import BodyReader, Headers, Request, _no_body

if TYPE_CHECKING:
    from ._app import App

__all__ = ["Message", "Receive", "Scope", "Send", "request_from_scope"]

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]


def request_from_scope(app: App, scope: Scope, body_reader: BodyReader = _no_body) -> Request:
    """The request an ASGI ``http`` or ``websocket`` scope describes."""
    raw_path = scope.get("raw_path")
    if not raw_path:
        raw_path = urllib.parse.quote(scope["path"]).encode("ascii")
    query = scope.get("query_string", b"")
    target = bytes(raw_path) + (b"?" + bytes(query) if query else b"")
    client = scope.get("client")
    return Request(
        scope.get("method", "GET"),
        target,
        Headers((bytes(name), bytes(value)) for name, value in scope["headers"]),
        app=app,
        http_version=scope.get("http_version", "1.1"),
        client=(str(client[0]), int(client[1])) if client else None,
        body_reader=body_reader,
        root_path=scope.get("root_path", ""),
    )
