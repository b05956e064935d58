"""TLS on the raw server: the context from ``Config``, the handshake, ALPN's choice.

Theory of operation
-------------------

With ``Config.certfile`` set, every accepted connection is first a
:class:`_Handshake`: a task that wraps the socket in a :class:`trio.SSLStream`
and completes the TLS handshake, then hands the stream to the protocol ALPN
chose: HTTP/2 (``_h2_connection.py``) for ``h2``, the HTTP/1.1 connection
(``_connection.py``) otherwise.

Rule 1, the handshake is part of the request head: it must finish within
``header_timeout`` of the accept, the same deadline as the first request
head, so a client that opens a connection and stalls the handshake is cut
like a slowloris. A shutdown cancels handshakes in progress.

Rule 2, bounded handshake work: at most ``Config.max_handshakes`` handshakes
run at once (they cost CPU); more wait for a slot, under the same deadline.

Rule 3, errors that say what to do: a certificate or key that cannot be
loaded fails the server's start with a :class:`ValueError` naming the file;
a client whose handshake fails (no shared protocol, an untrusted client
certificate) is counted in ``App.refusals["tls_handshake"]`` and logged at
debug level, not as an error: that is the client's problem.
"""

from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING, final

import trio

from ._h2c import serve_as
from ._sockets import map_io_errors
from ._transport import PeerGone

if TYPE_CHECKING:
    from ._config import Config
    from ._serving import Owner

__all__ = ["TLSAcceptor", "h2_available", "server_ssl_context"]

logger = logging.getLogger("trio_sse.server")


def h2_available() -> bool:
    """Whether the ``h2`` package (the ``http2`` extra) is installed."""
    try:
        import h2.connection  # noqa: F401
    except ImportError:  # pragma: no cover - a test dependency
        return False
    return True


def server_ssl_context(config: Config) -> ssl.SSLContext | None:
    """The server's TLS context from ``config`` (``None`` without ``certfile``).

    ALPN offers the protocols of ``Config.alpn``, in order; ``h2`` only when
    the ``h2`` package is installed.

    Raises:
        ValueError: a file cannot be loaded, or ``alpn`` names an unknown
            protocol (the message says which).

    """
    if not config.certfile:
        if config.keyfile or config.client_ca:
            raise ValueError("Config.keyfile and Config.client_ca need Config.certfile")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # RFC 9113 9.2.1: no renegotiation under HTTP/2; no compression (CRIME).
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    try:
        context.load_cert_chain(config.certfile, config.keyfile or None)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(
            f"cannot load the TLS certificate {config.certfile!r}"
            f"{f' with key {config.keyfile!r}' if config.keyfile else ''}: {exc}"
            " (Config.certfile / Config.keyfile: PEM files)"
        ) from None
    if config.client_ca:
        try:
            context.load_verify_locations(cafile=config.client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"cannot load the client CA file {config.client_ca!r}: {exc}"
                " (Config.client_ca: a PEM file)"
            ) from None
        required = config.client_cert == "required"
        context.verify_mode = ssl.CERT_REQUIRED if required else ssl.CERT_OPTIONAL
    protocols = [p.strip() for p in config.alpn.split(",") if p.strip()]
    unknown = set(protocols) - {"h2", "http/1.1"}
    if unknown or not protocols:
        raise ValueError(
            f"Config.alpn: {config.alpn!r}; expected 'h2, http/1.1', 'http/1.1' or 'h2'"
        )
    if "h2" in protocols and not h2_available():  # pragma: no cover - a test dependency
        logger.warning("HTTP/2 needs the h2 package (pip install 'trio-sse[http2]'); not offered")
        protocols.remove("h2")
    if protocols:
        context.set_alpn_protocols(protocols)
    return context


@final
class TLSAcceptor:
    """The server's TLS context and its handshake slots (Rule 2).

    Args:
        context: from :func:`server_ssl_context`.
        config: the limits.

    """

    def __init__(self, context: ssl.SSLContext, config: Config) -> None:
        self.context = context
        self.slots = trio.Semaphore(config.max_handshakes)

    def connection(
        self, server: Owner, stream: trio.abc.Stream, peer: tuple[str, int] | None
    ) -> _Handshake:
        """The task to serve an accepted connection: handshake first."""
        return _Handshake(server, self, stream, peer)


@final
class _Handshake:
    """An accepted connection during its TLS handshake (in ``server.connections`` meanwhile)."""

    def __init__(
        self,
        server: Owner,
        acceptor: TLSAcceptor,
        stream: trio.abc.Stream,
        peer: tuple[str, int] | None,
    ) -> None:
        self.server = server
        self.acceptor = acceptor
        self.stream = stream
        self.client = peer
        self.accepted_at = trio.current_time()
        self._scope = trio.CancelScope(deadline=self.accepted_at + server.config.header_timeout)

    def interrupt(self) -> None:
        """Server shutdown: abandon the handshake."""
        self._scope.cancel()

    async def run(self) -> None:
        """Handshake (Rule 1), then serve the protocol ALPN chose."""
        server = self.server
        tls = trio.SSLStream(
            self.stream, self.acceptor.context, server_side=True, https_compatible=True
        )
        done = False
        try:
            with self._scope:
                async with self.acceptor.slots:
                    with map_io_errors:
                        await tls.do_handshake()
                done = True
        except PeerGone as exc:
            logger.debug("TLS handshake with %s failed: %s", self.client, exc)
        finally:
            server.connections.discard(self)
            if not done:
                refusals = server.limits.refusals
                refusals["tls_handshake"] = refusals.get("tls_handshake", 0) + 1
                server.limits.release_connection(self.client and self.client[0])
                await trio.aclose_forcefully(tls)
        if not done:
            return
        h2 = tls.selected_alpn_protocol() == "h2"
        await serve_as(h2, server, tls, self.client, self.accepted_at)
