"""One request/response exchange, written once for the raw server and ASGI.

Theory of operation
-------------------

Everything above HTTP framing lives here; a server supplies a
:class:`Transport` (the raw server's h11 connection in ``_server.py``, the
ASGI adapter in ``_asgi.py``) and calls :meth:`Exchange.dispatch`.

Rule 1, dispatch and errors: a CORS preflight is answered; an unknown path is
``404``, a known path with another method ``405`` with ``Allow``. The
handler's :class:`HTTPException` becomes its status and detail; any other
exception is logged (logger ``trio_sse.exchange``) and answered ``500``; so
is a response with an invalid status or header, checked here (not by the
framing library) so both servers refuse the same responses. The connection
stays usable after a ``500``: the response is complete and well framed.

Rule 2, one write path: every response byte goes through :meth:`Exchange.write`.
It first offers the bytes to :meth:`Transport.write_now` (the raw server's
non-blocking ``os.write``: one system call, no trip through trio's I/O
manager), and awaits :meth:`Transport.write_rest` for what is left, under
``write_timeout`` (:func:`~trio_sse._pacing.write_within`). A stall or a
vanished peer raises :class:`PeerGone`; during a stream that cancels the
stream. The broadcast fast path, where a topic's publisher (or the idle
watch) writes into an idle stream from its own task, is the exchange's base
:class:`~trio_sse._direct.DirectWriter` (``_direct.py``).

Rule 3, the stream lifecycle (``_streamed.py``): the head, then the handler
in a nursery beside one *companion* task, which waits for the peer to leave
(:meth:`Transport.wait_disconnect`: the handler is then cancelled), flushes
bytes a direct write left behind, and sends heartbeats after
``heartbeat_interval`` of silence (:class:`~trio_sse._pacing.WriteClock`).
The handler runs under the stream's deadline: ``max_stream_lifetime`` or the
response's ``expires_at``, the sooner, or a server shutdown; a stream ended
that way gets ``Config.stream_end_event()`` (the ``retry:`` hint) before the
end of the body. A topic stream (:class:`~trio_sse._topic_writer.TopicWriter`)
on a transport that writes without waiting runs *parked* instead
(``_parked.py``): the same lifecycle in one task, with no companion, after
``dispatch(park_later=True)`` has returned.

Rule 4, request bodies: :meth:`Exchange.read_body` applies
``max_body_size`` (the declared length first, then the bytes received) and
``body_timeout``; the transport only delivers the bytes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, final

import trio

from ._config import Config
from ._cors import add_cors_headers
from ._direct import DirectWriter
from ._http import (
    HTTPException,
    PlainTextResponse,
    Response,
    StreamResponse,
    to_response,
)
from ._limits import ClientLimits
from ._pacing import write_within
from ._parked import stream_parked
from ._request import Request
from ._streamed import stream_in_nursery
from ._topic_writer import TopicWriter
from ._transport import BodyTooLarge, PeerGone, Transport, check_response

if TYPE_CHECKING:
    from ._app import App
    from ._idle import IdleStreams

__all__ = ["Exchange"]

logger = logging.getLogger("trio_sse.exchange")


@final
class Exchange(DirectWriter):
    """One request and its response, over a :class:`Transport`.

    Args:
        app: the application.
        config: limits and deadlines.
        transport: the server side of the connection.
        limits: the per-client stream counts to acquire a stream from.
        idle: with a direct transport, the server's idle watch: a topic
            stream then runs parked (``_parked.py``).
        fd: the descriptor the idle watch watches for the peer.
        write_fd: the raw server's socket, which a parked stream's entry
            sink writes to itself (``_direct.py`` Rule 4; -1: none).

    Attributes:
        declared_length: the request's ``Content-Length`` (0 if none).
        stop_scope: the running stream handler's scope, which a shutdown cancels.
    """

    # Slots: 10,000 open streams mean 10,000 of these.
    __slots__ = (
        "_parked",
        "_partial",
        "_stream_scope",
        "_yield_countdown",
        "app",
        "config",
        "declared_length",
        "limits",
        "stop_requested",
        "stop_scope",
        "transport",
    )

    def __init__(
        self,
        app: App,
        config: Config,
        transport: Transport,
        limits: ClientLimits,
        idle: IdleStreams | None = None,
        fd: int = -1,
        write_fd: int = -1,
    ) -> None:
        super().__init__(config.heartbeat_interval, transport.write_now, idle, fd, write_fd)
        self.app = app
        self.config = config
        self.transport = transport
        self.limits = limits
        self.declared_length = 0
        self.stop_scope: trio.CancelScope | None = None
        self._stream_scope: trio.CancelScope | None = None
        # Set while write_rest() runs. One cancelled midway sets _gone: the
        # framing can no longer be trusted (DirectWriter._gone).
        self._partial = False
        self._yield_countdown = 16
        # A parked stream whose head is sent, left for serve_parked() (see
        # dispatch(park_later=True)): writer, deadline, path, limit key.
        self._parked: tuple[TopicWriter, float, str, str | None] | None = None
        # Set by stop() (a shutdown): a parked stream stops at its next wake.
        self.stop_requested = False

    # -- dispatch (Rule 1) ----------------------------------------------------

    async def dispatch(self, request: Request, *, park_later: bool = False) -> None:
        """Answer ``request``: route, handler, error mapping, response or stream.

        Args:
            request: the request.
            park_later: a topic stream that runs parked (``_parked.py``)
                returns after its head, for the caller to run with
                ``_parked.serve_parked`` once the frames of the request (and the
                request) are gone: an idle stream then holds neither.

        Raises:
            PeerGone: the peer left while a response was being written.
        """
        app = self.app
        head_only = request.method == "HEAD"
        if app.cors is not None and (preflight := app.cors.preflight(request)) is not None:
            await self.respond(preflight, False)
            return
        route, params, allowed = app._resolve(request.method, request.path)
        if route is None:
            if allowed:
                missing = PlainTextResponse(
                    "method not allowed\n", 405, {"allow": ", ".join(allowed)}
                )
            else:
                missing = PlainTextResponse("not found\n", 404)
            add_cors_headers(request, missing.headers)
            await self.respond(missing, head_only)
            return
        request.path_params = params
        response: Response | StreamResponse
        try:
            response = to_response(await route.handler(request))
        except HTTPException as exc:
            response = PlainTextResponse(exc.detail + "\n", exc.status, exc.headers)
        except PeerGone:
            raise
        except Exception:
            logger.exception("handler for %s %s raised", request.method, request.path)
            response = PlainTextResponse("internal server error\n", 500)
        add_cors_headers(request, response.headers)
        if not isinstance(response, StreamResponse):
            await self.respond(response, head_only, request)
        elif head_only:
            await self._stream(request, response, True)
        else:
            limits = self.limits
            client = self.transport.client
            key = limits.client_key(client and client[0], request.headers)
            if not limits.acquire_stream(key):
                refusal = PlainTextResponse(
                    "too many event streams from this client; retry later\n",
                    429,
                    {"retry-after": str(self.config.retry_after)},
                )
                await self.respond(refusal, False)
                return
            try:
                await self._stream(request, response, False, park_later)
            finally:
                parked = self._parked
                if parked is None:
                    limits.release_stream(key)
                else:  # released by end_parked()
                    self._parked = (parked[0], parked[1], parked[2], key)

    async def respond(
        self, response: Response, head_only: bool, request: Request | None = None
    ) -> None:
        """Send an ordinary response; an invalid one becomes a ``500``."""
        try:
            check_response(response.status, response.header_list())
        except ValueError as exc:
            where = f" for {request.method} {request.path}" if request is not None else ""
            logger.error("handler%s returned an invalid response: %s", where, exc)
            response = PlainTextResponse("internal server error\n", 500)
        await self.transport.send_response(response, head_only)

    # -- request body (Rule 4) ------------------------------------------------

    async def read_body(self) -> bytes:
        """The request body within ``body_timeout``, at most ``max_body_size`` bytes."""
        cfg = self.config
        too_large = f"request body over {cfg.max_body_size} bytes"
        if self.declared_length > cfg.max_body_size:
            self.transport.close_after()
            raise HTTPException(413, too_large)
        with trio.move_on_after(cfg.body_timeout):
            try:
                return await self.transport.receive_body(cfg.max_body_size)
            except BodyTooLarge:
                self.transport.close_after()
                raise HTTPException(413, too_large) from None
        self.transport.close_after()
        raise HTTPException(408, "request body not received in time")

    # -- writing (Rule 2) -----------------------------------------------------

    async def write(self, data: bytes, *, last: bool = False) -> None:
        """Write ``data`` completely within ``write_timeout``, or raise :class:`PeerGone`."""
        if self._out:
            data = self._out + data
            self._out = b""
        lock = self._lock
        if lock is None or not lock.locked():
            if self._gone:
                raise PeerGone()
            rest = self._write_now(data)
            if rest is None:
                self.wrote()
                return
            data = rest
        if lock is None:
            lock = self._lock = trio.Lock()
        # Taking a free lock does not yield: the write's own I/O schedules.
        if lock.locked():
            await lock.acquire()
        else:
            lock.acquire_nowait()
        try:
            if self._gone:
                raise PeerGone()
            self._partial = True
            timeout = self.config.write_timeout
            if not await write_within(timeout, self._write_rest, (data, last)):
                logger.info(
                    "write to %s stalled for %.1f s; closing", self.transport.client, timeout
                )
                raise PeerGone()
            # Not reached when an outer scope cancelled the write midway.
            self._partial = False
        finally:
            if self._partial:
                # Cut midway: the framing is unknown, nothing more may follow.
                self._gone = True
            lock.release()
        self.wrote()

    async def _write_rest(self, args: tuple[bytes, bool]) -> None:
        await self.transport.write_rest(*args)

    def stop(self) -> None:
        """A shutdown: cancel the running stream handler (a parked one stops)."""
        self.stop_requested = True
        if self.stop_scope is not None:
            self.stop_scope.cancel()
        self.wake_now()

    async def stream_write(self, data: bytes) -> None:
        """Write event bytes from a stream handler; a dead peer cancels the stream."""
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            await self.write(data)
        except PeerGone:
            self.transport.close_after()
            if self._stream_scope is not None:
                self._stream_scope.cancel()
            await trio.lowlevel.checkpoint()  # raises Cancelled
            raise  # pragma: no cover - unreachable while the scope exists
        # A successful direct write does not yield; yield now and then so a
        # handler that only sends cannot starve the other tasks.
        self._yield_countdown -= 1
        if self._yield_countdown <= 0:
            self._yield_countdown = 16
            await trio.lowlevel.cancel_shielded_checkpoint()

    # -- streams (Rule 3) -----------------------------------------------------

    async def _stream(
        self,
        request: Request,
        response: StreamResponse,
        head_only: bool,
        park_later: bool = False,
    ) -> None:
        """Send the head, run the handler beside its companion, end the stream."""
        cfg = self.config
        transport = self.transport
        await transport.start_stream(response, head_only)
        if head_only:
            return
        idle = self.idle  # given with a direct transport only
        if idle is not None and idle.running and type(response.handler) is TopicWriter:
            deadline = response.deadline(cfg.max_stream_lifetime)
            if park_later:  # serve_parked() runs it (see dispatch)
                self._parked = (response.handler, deadline, request.path, None)
            else:
                await stream_parked(self, response.handler, deadline, request.path)
            return
        await stream_in_nursery(self, request, response)
