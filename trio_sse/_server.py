"""The raw HTTP/1.1 server: h11 for framing, trio for I/O, one nursery per stream.

Theory of operation
-------------------

Rule 1, ownership: :func:`serve_listeners` owns one nursery; every connection
is a task in it, and every task serving a connection (the handler and its
companion, which watches for disconnects, flushes and sends heartbeats) lives
in a nursery owned by that connection's task. When a connection ends, nothing
that served it survives.

Rule 2, the exchange: above the framing, a request is answered by the
:class:`~trio_sse._exchange.Exchange` that the ASGI adapter uses too
(dispatch, errors, the write deadline, body limits, the stream lifecycle).
Each connection is a task (``_connection.py``) that owns its socket and is
the exchange's :class:`~trio_sse._transport.Transport`; the h11 side of it
(heads accepted or refused, response bytes) is sans-IO, in ``_http11.py``.

Rule 3, one place per deadline: ``header_timeout`` and ``keep_alive_timeout``
are applied in ``_Connection._read_head``, ``shutdown_grace_period`` in
:meth:`Server._begin_shutdown`; ``body_timeout``, ``write_timeout``,
``heartbeat_interval`` and ``max_stream_lifetime`` in the exchange.

Rule 4, graceful shutdown: the connections' nursery sits in a *shielded*
cancel scope, so cancelling :func:`serve` does not tear connections down
mid-write. Instead it stops accepting, cancels each stream handler (the
server then sends the final ``retry:`` event and the terminating chunk) and
each idle keep-alive wait, and sets that shielded scope's deadline to now
plus ``shutdown_grace_period``: whatever has not finished by then is cut.
The lifespan and the background tasks sit in a shielded scope too, so they
outlast the connections and the lifespan exits normally.

TLS and HTTP/2: with ``Config.certfile`` each accepted connection first
completes a TLS handshake (``_tls.py``), then ALPN picks the task that serves
it: HTTP/2 (``_h2_connection.py``, one exchange per stream) or HTTP/1.1
(``_connection.py``). Both are in :attr:`Server.connections` and shut down
the same way. Without TLS, ``Config.h2c`` lets the first bytes choose
instead (``_h2c.py``).

The hot path
------------

An event's bytes, with their chunk framing, come cached from
:meth:`Event.encode_chunk`, so a broadcast frames once for every connection,
and a write first tries the socket directly (``os.write``); see
``_connection.py`` and ``_http11.py``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Sequence
from typing import Any, Final, final

import trio

from ._app import App
from ._config import Config
from ._connection import _Connection
from ._errors import unwrap_groups
from ._event import Event
from ._h2c import H2CSniff
from ._idle import AVAILABLE as IDLE_AVAILABLE
from ._idle import IdleStreams
from ._limits import ClientLimits
from ._serving import Served
from ._sockets import (
    check_descriptor_limit,
    linger,
    map_io_errors,
    peer_address,
    refusal_bytes,
    refuse_now,
    set_keepalive,
)
from ._tls import TLSAcceptor, server_ssl_context
from ._transport import PeerGone

__all__ = ["Server", "serve", "serve_listeners"]

logger = logging.getLogger("trio_sse.server")

_CAPACITY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


async def serve(
    app: App,
    host: str | None = "127.0.0.1",
    port: int = 8000,
    *,
    config: Config | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` over HTTP/1.1 on ``host:port`` until cancelled.

    Args:
        app: the application.
        host: the address to bind (``None``: every interface).
        port: the TCP port (``0``: any free port; read it from the listeners
            passed to ``task_status.started``).
        config: limits and deadlines (default: ``app.config``).
        task_status: for ``await nursery.start(serve, ...)``; started with the
            list of listeners once they accept connections.

    Resource handling:
        Cancelling the call shuts the server down gracefully: it stops
        accepting, ends every stream properly, lets in-flight requests finish
        for up to ``config.shutdown_grace_period``, closes everything, then
        leaves the lifespan.

    """
    cfg = config if config is not None else app.config
    if cfg.backlog is None:
        listeners = await trio.open_tcp_listeners(port, host=host)
    else:
        listeners = await trio.open_tcp_listeners(port, host=host, backlog=cfg.backlog)
    await serve_listeners(app, listeners, config=cfg, task_status=task_status)


async def serve_listeners(
    app: App,
    listeners: Sequence[trio.abc.Listener[Any]],
    *,
    config: Config | None = None,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on already-open listeners until cancelled.

    Like :func:`serve`, for listeners you opened yourself (or in-memory ones in
    tests). The listeners are closed when the server stops.
    """
    server = Server(app, config if config is not None else app.config)
    # The server's nested nurseries wrap an error once per level; the caller
    # gets the one error (e.g. from the lifespan) as itself.
    try:
        with unwrap_groups():
            await server.run(listeners, task_status=task_status)
    finally:
        # Also when the lifespan failed before any of them was served.
        for listener in listeners:
            await trio.aclose_forcefully(listener)


@final
class Server:
    """One running server: its connections, limits and shutdown state.

    Most code calls :func:`serve`; this class is public for tests and tools
    that want to watch the connection count.

    Attributes:
        connections: the connections being served.
        stopping: set once shutdown has begun.
        limits: per-client counts, and the refusals so far by reason
            (``limits.refusals``; see :class:`~trio_sse.ClientLimits`).

    """

    def __init__(self, app: App, config: Config) -> None:
        self.app = app
        self.config = config
        self.connections: set[Served] = set()
        self.stopping = False
        self._conns_scope = trio.CancelScope(shield=True)
        self._accept_scope = trio.CancelScope()
        self._running_scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None
        self._rejecting = 0
        self.limits = ClientLimits(config, app.refusals)
        self.heartbeat_chunk = Event(comment=config.heartbeat_comment).encode_chunk()
        self.heartbeat_raw = config.heartbeat_bytes()
        # TLS (and HTTP/2 through ALPN) when Config.certfile is set: _tls.py.
        context = server_ssl_context(config)
        self.tls = None if context is None else TLSAcceptor(context, config)
        # Idle topic streams sleep here, watched by one task (_idle.py).
        self.idle = IdleStreams(config.idle_slice) if IDLE_AVAILABLE else None

    async def run(
        self,
        listeners: Sequence[trio.abc.Listener[Any]],
        *,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run the lifespan and serve ``listeners`` until cancelled.

        Cancellation only starts the shutdown: serving, the background tasks
        and the lifespan's exit go on in :meth:`_run_shielded` until the
        connections are done.
        """
        check_descriptor_limit(self.config)
        async with trio.open_nursery() as nursery:
            await nursery.start(self._run_shielded, listeners)
            task_status.started(list(listeners))
            try:
                await trio.sleep_forever()
            finally:
                self._begin_shutdown()

    async def _run_shielded(
        self,
        listeners: Sequence[trio.abc.Listener[Any]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        # Shielded once started (start-up stays cancellable): in-flight
        # requests keep the background tasks they may need until the
        # connections are done, and the lifespan exits normally, its
        # clean-up not interrupted by the cancellation that stopped us.
        # A start cancelled meanwhile (our caller's, or a task failing at
        # once) makes started() a no-op: trio then waits for the starting
        # task to end on its own. So _serve, shielded at once, is not awaited
        # with nursery.start(); we check for that cancellation before
        # shielding; and the finally ends _serve whatever happened.
        with trio.CancelScope() as shield:
            async with self.app.run_lifespan(), trio.open_nursery() as nursery:
                try:
                    nursery.start_soon(self._serve, listeners)
                    task_status.started()
                    await trio.lowlevel.checkpoint_if_cancelled()
                    shield.shield = True
                    with self._running_scope:
                        await trio.sleep_forever()
                finally:
                    self._begin_shutdown()

    async def _serve(self, listeners: Sequence[trio.abc.Listener[Any]]) -> None:
        async with trio.open_nursery() as watching:
            if self.idle is not None:
                # Outlives every connection: parked streams need it to wake.
                watching.start_soon(self.idle.run)
            with self._conns_scope:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    with self._accept_scope:
                        async with trio.open_nursery() as accepting:
                            for listener in listeners:
                                accepting.start_soon(self._accept_loop, listener)
            watching.cancel_scope.cancel()

    def _begin_shutdown(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self._running_scope.cancel()
        self._accept_scope.cancel()
        self._conns_scope.deadline = trio.current_time() + self.config.shutdown_grace_period
        for conn in list(self.connections):
            conn.interrupt()
        logger.info("shutting down: %d connections to close", len(self.connections))

    async def _accept_loop(self, listener: trio.abc.Listener[Any]) -> None:
        assert self._nursery is not None
        try:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    if exc.errno in _CAPACITY_ERRNOS:
                        logger.error("accept() failed (%s); retrying in 100 ms", exc)
                        await trio.sleep(0.1)
                        continue
                    raise
                peer = peer_address(stream)
                if len(self.connections) >= self.config.max_connections:
                    self.limits.refusals["max_connections"] += 1
                    self._reject(stream, 503)
                    continue
                if not self.limits.acquire_connection(peer and peer[0]):
                    self._reject(stream, 429)
                    continue
                set_keepalive(stream, self.config)
                conn: Served
                if self.tls is not None:
                    conn = self.tls.connection(self, stream, peer)
                elif self.config.h2c != "off":
                    conn = H2CSniff(self, stream, peer)  # HTTP/2 without TLS: _h2c.py
                else:
                    conn = _Connection(self, stream, peer)
                self.connections.add(conn)
                self._nursery.start_soon(conn.run)
        finally:
            await trio.aclose_forcefully(listener)

    def _reject(self, stream: trio.abc.Stream, status: int) -> None:
        """Answer ``status`` (503 or 429) without reading the request, and close.

        Up to ``max_refusing`` refusals linger until the client has read the
        answer (so it is not destroyed by a reset). Beyond that, under a
        connect flood, the answer is written at once without waiting: the
        request bytes already received are read first, so closing does not
        reset the connection unless more arrive later.
        """
        assert self._nursery is not None
        if self.tls is not None:
            # A TLS client cannot read a plain-text answer: just close.
            self._nursery.start_soon(trio.aclose_forcefully, stream)
            return
        data = refusal_bytes(status, self.config.retry_after)
        if self._rejecting >= self.config.max_refusing:
            self.limits.refusals["refusal_not_awaited"] += 1
            refuse_now(stream, data)
            self._nursery.start_soon(trio.aclose_forcefully, stream)
            return
        self._rejecting += 1
        self._nursery.start_soon(self._send_refusal, stream, data)

    async def _send_refusal(self, stream: trio.abc.Stream, data: bytes) -> None:
        try:
            with trio.move_on_after(self.config.close_linger), contextlib.suppress(PeerGone):
                with map_io_errors:
                    await stream.send_all(data)
                await linger(stream, self.config.read_size)
        finally:
            self._rejecting -= 1
            await trio.aclose_forcefully(stream)
