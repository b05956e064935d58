"""What the raw server and its connections know of each other (types only).

Theory of operation: the server (``_server.py``) owns a set of connections of
three kinds, HTTP/1.1 (``_connection.py``), HTTP/2 (``_h2_connection.py``) and
a TLS handshake or h2c sniff that becomes one of them (``_tls.py``,
``_h2c.py``); each connection reads a few attributes of its server. Naming
both sides here as Protocols keeps every transport module below the server:
none of them imports ``_server.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ._app import App
    from ._config import Config
    from ._idle import IdleStreams
    from ._limits import ClientLimits

__all__ = ["Owner", "Served"]


class Served(Protocol):
    """A connection in ``Server.connections``: HTTP/1.1, HTTP/2, or a TLS handshake."""

    def interrupt(self) -> None:
        """Called at shutdown."""

    async def run(self) -> None:
        """Serve until the connection ends (then it leaves ``Server.connections``)."""


class Owner(Protocol):
    """What a connection needs of its server (``_server.Server``)."""

    app: App
    config: Config
    limits: ClientLimits
    stopping: bool
    connections: set[Served]
    heartbeat_chunk: bytes
    heartbeat_raw: bytes
    #: Where idle topic streams sleep (``None`` where unavailable).
    idle: IdleStreams | None
