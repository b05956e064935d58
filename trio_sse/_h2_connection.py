"""One HTTP/2 connection of the raw server: the task that owns the (TLS) socket.

Theory of operation
-------------------

An :class:`H2ServerConnection` is chosen by ALPN after the TLS handshake
(``_tls.py``). It owns the socket and the connection's sans-IO state
(:class:`~trio_sse._h2_protocol.H2Protocol`), and runs, in one nursery:

* the **reader** (this task): bytes from the socket go to the protocol, whose
  actions start a stream (:class:`~trio_sse._h2_stream.H2Stream`, one task
  and one :class:`~trio_sse._exchange.Exchange` each), feed a request body,
  cancel a stream the peer reset, or wake streams waiting for window;
* the **writer**: the one task that writes to the socket. Streams frame
  their bytes into the protocol's buffer and :meth:`kick` it; it sends
  whatever has accumulated in one ``send_all``, under ``write_timeout`` (a
  socket that takes nothing that long ends the connection), then wakes the
  streams that waited for room;
* the **streams**, up to ``Config.h2_max_concurrent_streams`` handlers at
  once (a stream beyond is refused with ``RST_STREAM(REFUSED_STREAM)``; a
  reset stream counts until its handler has ended, so resetting streams
  cannot start unbounded work).

Deadlines: the first request must arrive within ``header_timeout`` of the
accept (the TLS handshake included); a connection without streams is closed
(``GOAWAY``) after ``keep_alive_timeout``. The streams' deadlines are the
exchange's, as on HTTP/1.1.

Memory: what the connection holds beyond its streams' own state is bounded by
``Config.h2_max_buffer`` (framed bytes not yet written, counting the write in
progress), plus the frames h2 answers by itself, which the flood limits of
``_h2_protocol.py`` bound, plus the connection's receive window of unread
request bodies (64 KiB).

Shutdown: :meth:`interrupt` ends every stream's handler (the exchange then
sends the final ``retry:``) and new streams are refused; once the streams
have ended, a ``PING`` follows their last bytes, and a graceful ``GOAWAY``
its acknowledgement (or ``close_linger``); then the connection closes, all
within the server's grace period.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, final

import trio

from ._h2_protocol import (
    BODY,
    END_BODY,
    PING_DATA,
    PONG,
    REQUEST,
    RESET,
    WINDOW,
    H2Protocol,
)
from ._h2_stream import H2Stream
from ._pacing import write_within
from ._sockets import linger, map_io_errors
from ._transport import PeerGone

if TYPE_CHECKING:
    from ._serving import Owner

__all__ = ["H2ServerConnection"]

logger = logging.getLogger("trio_sse.server")


@final
class H2ServerConnection:
    """The task serving one HTTP/2 connection; see the module docstring.

    Args:
        server: the server (its app, config, limits and connection set).
        stream: the socket (a :class:`trio.SSLStream` that chose ``h2``).
        peer: the client's address.
        accepted_at: when the TCP connection was accepted (``trio.current_time()``).
        received: bytes already read from ``stream`` (h2c: the preface).

    """

    __slots__ = (
        "_closing",
        "_nursery",
        "_output",
        "_pinged",
        "_reader",
        "_received",
        "accepted_at",
        "blocked_room",
        "blocked_window",
        "client",
        "config",
        "proto",
        "server",
        "stream",
        "streams",
    )

    def __init__(
        self,
        server: Owner,
        stream: trio.abc.Stream,
        peer: tuple[str, int] | None,
        accepted_at: float,
        received: bytes = b"",
    ) -> None:
        self.server = server
        self.config = server.config
        self.stream = stream
        self.client = peer
        self.accepted_at = accepted_at
        self.proto = H2Protocol(server.config)
        self.streams: dict[int, H2Stream] = {}
        self.blocked_room: set[H2Stream] = set()
        self.blocked_window: set[H2Stream] = set()
        self._output = trio.Event()
        self._reader = trio.CancelScope(deadline=accepted_at + self.config.header_timeout)
        self._closing = False
        self._pinged = False
        self._nursery: trio.Nursery | None = None
        # Bytes read before this task took over (h2c: the preface).
        self._received = received

    # -- called by streams and the server ---------------------------------------

    def kick(self) -> None:
        """Wake the writer: the protocol has bytes to send."""
        if self.proto.out or self._closing:
            self._output.set()

    def stream_finished(self, stream: H2Stream) -> None:
        """A stream's exchange is done: forget it; an idle connection starts its clock."""
        self.streams.pop(stream.stream_id, None)
        if not self.streams:
            if self.proto.goaway_sent:
                self._reader.cancel()
            elif self.server.stopping:
                self._drained()
            elif not self._closing:
                self._reader.deadline = trio.current_time() + self.config.keep_alive_timeout

    def interrupt(self) -> None:
        """Server shutdown: end every handler (final ``retry:``), then ``GOAWAY`` and close.

        The ``GOAWAY`` goes out once the streams have ended, after their final
        bytes: an h2-based client (httpx) takes no frame after a ``GOAWAY``.
        Meanwhile new streams are refused (``REFUSED_STREAM``: safe to retry).
        """
        for stream in list(self.streams.values()):
            if stream.exchange.stop_scope is not None:
                stream.exchange.stop_scope.cancel()
        if not self.streams:
            self._drained()

    def _drained(self) -> None:
        """Shutting down, every stream ended: ``PING``, and ``GOAWAY`` once it is answered.

        httpx (httpcore 1.0) fails a stream whose end it read in the same
        read as a ``GOAWAY``; the acknowledgement says the peer read the
        ends first. A peer that does not answer within ``close_linger`` gets
        the ``GOAWAY`` then.
        """
        if self._pinged:
            return
        self._pinged = True
        self.proto.ping()
        self.kick()
        linger = trio.current_time() + self.config.close_linger
        self._reader.deadline = min(self._reader.deadline, linger)

    # -- the connection's tasks ---------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it ends; then close the socket."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._write_loop, nursery.cancel_scope)
                reason = await self._read_loop()
                if (breach := self.proto.breach) is not None:
                    # Counted for metrics (App.refusals), like other refusals.
                    refusals = self.server.limits.refusals
                    refusals[breach] = refusals.get(breach, 0) + 1
                    logger.info("HTTP/2 connection from %s closed: %s", self.client, reason)
                else:
                    logger.debug("HTTP/2 connection from %s ends: %s", self.client, reason)
                # Streams still running lost their peer (or the connection broke
                # the protocol): their handlers are cancelled, they reset.
                self._closing = True
                for stream in list(self.streams.values()):
                    stream.peer_gone()
                self.kick()
            # Everything is sent (GOAWAY included): read until the peer closes,
            # briefly, so a close with unread bytes does not reset the
            # connection and destroy the GOAWAY before the peer reads it.
            with trio.move_on_after(self.config.close_linger):
                await linger(self.stream, self.config.read_size)
        except Exception:
            logger.exception("internal error serving HTTP/2 connection from %s", self.client)
        finally:
            self.server.connections.discard(self)
            self.server.limits.release_connection(self.client and self.client[0])
            await trio.aclose_forcefully(self.stream)

    async def _read_loop(self) -> str:
        """Read and act until the connection ends; why it ended."""
        proto = self.proto
        read_size = self.config.read_size
        streams = self.streams
        window_opened = False
        with self._reader:
            if self.server.stopping:
                self.interrupt()
            while True:
                data, self._received = self._received, b""
                if not data:
                    try:
                        with map_io_errors:
                            data = bytes(await self.stream.receive_some(read_size))
                    except PeerGone:
                        data = b""
                for kind, sid, payload in proto.receive(data, trio.current_time()):
                    if kind == REQUEST:
                        self._open(sid, payload)
                    elif kind == BODY:
                        body, length = payload
                        if (stream := streams.get(sid)) is not None:
                            stream.feed(body, length)
                        else:
                            proto.acknowledge(sid, length)
                    elif kind == END_BODY:
                        if (stream := streams.get(sid)) is not None:
                            stream.end_body()
                    elif kind == RESET:
                        if (stream := streams.get(sid)) is not None:
                            stream.peer_gone()
                    elif kind == PONG:
                        if self._pinged and payload == PING_DATA:
                            self._reader.cancel()  # the peer read the streams' ends
                    elif kind == WINDOW:
                        if not sid:
                            window_opened = True
                        elif (stream := streams.get(sid)) is not None:
                            stream.wake()
                    else:  # CLOSED
                        self.kick()
                        return str(payload)
                # Once per read, however many WINDOW_UPDATEs it held: a flood
                # of tiny ones cannot cost a wake-up of every stream each.
                if window_opened:
                    window_opened = False
                    for stream in list(self.blocked_window):
                        stream.wake()
                self.kick()
        if self.proto.goaway_sent or self.server.stopping:
            self.proto.goaway()  # after the streams' ends (interrupt)
            self.kick()
            return "shut down"
        self.proto.close()
        self.kick()
        return "idle (header_timeout or keep_alive_timeout)"

    def _open(self, sid: int, headers: list[tuple[bytes, bytes]]) -> None:
        """A request arrived: start its stream, unless the connection is full or closing."""
        proto = self.proto
        if (
            proto.goaway_sent
            or self.server.stopping
            or len(self.streams) >= self.config.h2_max_concurrent_streams
        ):
            proto.refuse(sid)
            return
        assert self._nursery is not None
        stream = self.streams[sid] = H2Stream(self, sid, headers)
        self._reader.deadline = math.inf
        self._nursery.start_soon(stream.run)

    async def _write_loop(self, connection_scope: trio.CancelScope) -> None:
        """Send what the streams framed, one ``send_all`` at a time."""
        proto = self.proto
        timeout = self.config.write_timeout
        try:
            while True:
                while not proto.out:
                    if self._closing and not self.streams:
                        return
                    self._output = trio.Event()
                    await self._output.wait()
                chunk = bytes(proto.out)
                proto.out.clear()
                proto.in_flight = len(chunk)
                with map_io_errors:
                    if not await write_within(timeout, self.stream.send_all, chunk):
                        logger.info(
                            "HTTP/2 write to %s stalled for %.1f s; closing", self.client, timeout
                        )
                        break
                proto.in_flight = 0
                for stream in list(self.blocked_room):
                    stream.wake()
        except PeerGone:
            pass
        # The socket is unusable: end the connection and every stream on it.
        connection_scope.cancel()
