"""HTTP/2 without TLS ("h2c") by prior knowledge, on a plain-TCP raw server.

Theory of operation: with ``Config.h2c = "prior-knowledge"``, each accepted
connection is first an :class:`H2CSniff`, which reads only until the first
bytes tell the protocol: the HTTP/2 client preface (``PRI * HTTP/2.0``...)
hands the connection to ``_h2_connection.py``; anything else to the HTTP/1.1
connection (``_connection.py``), with the bytes already read fed to its h11
state, so nothing is lost and the socket keeps its direct-write path. The
first bytes must come within ``header_timeout`` of the accept, as a request
head must; a connection that sends nothing is closed silently, as on HTTP/1.1.
Off by default: browsers speak HTTP/2 only over TLS (``_tls.py``); h2c is for
proxies and clients that speak it to their upstream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, final

import trio

from ._connection import _Connection
from ._sockets import map_io_errors
from ._transport import PeerGone

if TYPE_CHECKING:
    from ._serving import Owner

__all__ = ["PREFACE", "H2CSniff", "serve_as"]

#: RFC 9113 3.4: what an HTTP/2 client sends first.
PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@final
class H2CSniff:
    """An accepted connection until its first bytes say HTTP/2 or HTTP/1.1."""

    def __init__(
        self, server: Owner, stream: trio.abc.Stream, peer: tuple[str, int] | None
    ) -> None:
        self.server = server
        self.stream = stream
        self.client = peer
        self.accepted_at = trio.current_time()
        self._scope = trio.CancelScope(deadline=self.accepted_at + server.config.header_timeout)

    def interrupt(self) -> None:
        """Server shutdown: stop waiting for the first bytes."""
        self._scope.cancel()

    async def run(self) -> None:
        """Read until the protocol is known, then serve it."""
        server = self.server
        data = b""
        try:
            with self._scope, map_io_errors:
                # Ambiguous while what came is a strict prefix of the preface.
                while len(data) < len(PREFACE) and PREFACE.startswith(data):
                    chunk = await self.stream.receive_some(server.config.read_size)
                    if not chunk:
                        break
                    data += chunk
        except PeerGone:
            data = b""
        server.connections.discard(self)
        if not data or self._scope.cancelled_caught:
            server.limits.release_connection(self.client and self.client[0])
            await trio.aclose_forcefully(self.stream)
            return
        await serve_as(
            data.startswith(PREFACE), server, self.stream, self.client, self.accepted_at, data
        )


async def serve_as(
    h2: bool,
    server: Owner,
    stream: trio.abc.Stream,
    peer: tuple[str, int] | None,
    accepted_at: float,
    received: bytes = b"",
) -> None:
    """Serve an accepted connection as HTTP/2 or HTTP/1.1, once that is known.

    After ALPN (``_tls.py``) or the first bytes (h2c): ``received`` are the
    bytes already read. h2 is imported only when HTTP/2 is chosen (an extra).
    """
    if h2:
        from ._h2_connection import H2ServerConnection

        conn: _Connection | H2ServerConnection = H2ServerConnection(
            server, stream, peer, accepted_at, received=received
        )
    else:
        conn = _Connection(server, stream, peer)
        conn.accepted_at = accepted_at
        if received:
            conn.h11.receive_data(received)
    server.connections.add(conn)
    await conn.run()
