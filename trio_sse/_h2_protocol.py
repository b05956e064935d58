"""HTTP/2 framing for the raw server: the ``h2`` state machine, bytes in, actions out (sans-IO).

Theory of operation
-------------------

The connection task (``_h2_connection.py``) owns the socket; this module owns
one :class:`h2.connection.H2Connection` and what the server decides about its
frames, without waiting or writing (no trio import). Bytes received go in
through :meth:`H2Protocol.receive`, which returns a short list of *actions*
(tuples: a request, body bytes, a stream reset, a window opened, the end of
the connection); bytes to send accumulate in :attr:`H2Protocol.out`, which
the connection task's one writer drains.

Rule 1, flow control is the backpressure: :meth:`H2Protocol.send_data`
frames at most what the peer's windows (stream and connection) allow *and*
what fits under ``Config.h2_max_buffer`` in :attr:`out`, and says how much it
framed. A stream whose peer grants no window gets nothing framed: its writer
waits (the exchange's write deadline then resets it) while the other streams
of the connection go on.

Rule 2, bounded memory against a hostile peer: request heads are bounded by
``SETTINGS_MAX_HEADER_LIST_SIZE`` (``Config.max_header_size``, enforced by the
HPACK decoder: a "header compression bomb" is a connection error) and h2's
own cap on ``CONTINUATION`` frames; request bodies by the stream and
connection receive windows (data is acknowledged only as a handler reads it,
``Config.max_body_size`` on top); frames h2 answers by itself (SETTINGS and
PING acknowledgements) by ``Config.h2_max_control_frames`` per second; reset
streams by ``Config.h2_max_resets`` per second (the rapid-reset attack). A
breach ends the connection with ``GOAWAY``; nothing is raised to the caller.

Rule 3, graceful shutdown: :meth:`H2Protocol.goaway` writes a ``GOAWAY``
frame with the last stream accepted, without closing h2's state machine, so
the streams already running can still end properly (final ``retry:``).

Rule 4, DATA frames without h2's per-frame cost: :meth:`H2Protocol.send_data`
writes the 9-byte frame header itself and subtracts the bytes from the
stream's and the connection's send windows, exactly what
``H2Connection.send_data`` does for a DATA frame without ``END_STREAM`` or
padding (such a frame changes no other state); the stream must be open for
sending (``OPEN`` or ``HALF_CLOSED_REMOTE``) and the connection not closed.
Everything else (HEADERS, ``END_STREAM``, resets, settings) goes through h2.
This relies on attributes of h2 4.x (``streams``, ``state_machine``,
``outbound_flow_control_window``), hence the ``h2<5`` pin.
"""

from __future__ import annotations

from typing import Any, Final, final

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from h2.connection import ConnectionState
from h2.stream import StreamState
from hyperframe.frame import GoAwayFrame, SettingsFrame

from ._config import Config
from ._transport import PeerGone

__all__ = [
    "BODY",
    "CLOSED",
    "END_BODY",
    "PING_DATA",
    "PONG",
    "REQUEST",
    "RESET",
    "WINDOW",
    "H2Protocol",
    "response_headers",
]

#: Actions returned by :meth:`H2Protocol.receive`: ``(kind, stream_id, payload)``.
REQUEST: Final = "request"  # payload: the header list, (name, value) bytes pairs
BODY: Final = "body"  # payload: (data, flow-controlled length)
END_BODY: Final = "end_body"
RESET: Final = "reset"  # the peer reset the stream
WINDOW: Final = "window"  # stream_id 0: every stream may have room
CLOSED: Final = "closed"  # payload: the reason (str); the connection is over
PONG: Final = "pong"  # the peer acknowledged our PING (payload: its data)

#: The opaque data of the server's own ``PING`` (:meth:`H2Protocol.ping`).
PING_DATA: Final = b"trio-sse"

Action = tuple[str, int, Any]

#: The receive window of each stream (request bodies); the connection's is
#: the same. Event streams barely read, so the RFC's default is plenty.
RECEIVE_WINDOW: Final = 65_535

#: Stream states in which the server may send DATA.
_SENDABLE: Final = frozenset({StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE})

# RFC 9113 8.2.2: connection-specific fields must not appear in HTTP/2.
_CONNECTION_HEADERS: Final = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)


def response_headers(status: int, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The header list of a response: ``:status`` first, connection-specific fields left out."""
    out = [(b":status", b"%d" % status)]
    out.extend((n.lower(), v) for n, v in headers if n.lower() not in _CONNECTION_HEADERS)
    return out


@final
class H2Protocol:
    """One server-side HTTP/2 connection's state: h2, flood counters, the output buffer.

    Args:
        config: the limits (see the module docstring).

    Attributes:
        out: bytes to send, in order; the connection task drains it.
        in_flight: bytes taken from :attr:`out` that the socket has not
            finished sending (set by the connection task; counted against
            ``Config.h2_max_buffer``).
        goaway_sent: a ``GOAWAY`` went out; new streams are refused.
        breach: why the server ended the connection, if the peer broke a
            rule: ``"h2_flood"`` (a flood limit) or ``"h2_protocol_error"``.
        last_stream: the highest stream id accepted so far.

    """

    __slots__ = (
        "_attached",
        "_control",
        "_resets",
        "_window_start",
        "breach",
        "config",
        "goaway_sent",
        "h2",
        "in_flight",
        "last_stream",
        "out",
    )

    def __init__(self, config: Config) -> None:
        self.config = config
        conn = self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        codes = h2.settings.SettingCodes
        advertised = {
            codes.MAX_CONCURRENT_STREAMS: config.h2_max_concurrent_streams,
            codes.MAX_HEADER_LIST_SIZE: config.max_header_size,
            codes.INITIAL_WINDOW_SIZE: RECEIVE_WINDOW,
            codes.ENABLE_CONNECT_PROTOCOL: 0,
        }
        # h2 treats a stream over its own MAX_CONCURRENT_STREAMS as an error
        # of the whole connection; RFC 9113 5.1.2 allows refusing just that
        # stream, which the connection task does (it also counts streams
        # reset but still running). So h2's own limit is lifted, and the
        # SETTINGS frame advertising the real one is written here.
        conn.local_settings = h2.settings.Settings(
            client=False, initial_values={**advertised, codes.MAX_CONCURRENT_STREAMS: 2**31 - 1}
        )
        # Enforced from the first frame, not only once the peer acknowledges.
        conn.decoder.max_header_list_size = config.max_header_size
        conn.initiate_connection()
        conn.data_to_send()  # h2's SETTINGS frame, replaced by:
        settings = SettingsFrame(0)
        settings.settings = {int(code): value for code, value in advertised.items()}
        self.out = bytearray(settings.serialize())
        self.in_flight = 0
        self.goaway_sent = False
        self.last_stream = 0
        self._window_start = -1.0
        self._control = 0
        self._resets = 0
        self._attached: h2.events.PriorityUpdated | None = None
        self.breach: str | None = None

    # -- receiving --------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> list[Action]:
        """Feed received bytes; the actions they cause, in order.

        Args:
            data: bytes from the socket (``b""``: the peer closed).
            now: the current time in seconds, for the per-second flood limits.

        """
        if not data:
            return [(CLOSED, 0, "the peer closed the connection")]
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # h2 has queued a GOAWAY with the error code already.
            self._flush()
            self.breach = "h2_protocol_error"
            return [(CLOSED, 0, f"HTTP/2 protocol error: {exc}")]
        actions: list[Action] = []
        for event in events:
            if isinstance(event, h2.events.RequestReceived) and event.priority_updated:
                # The priority of a request's own HEADERS frame is part of
                # the request, not a control frame: a browser opening many
                # streams at once must not look like a flood.
                self._attached = event.priority_updated
            elif event is self._attached:
                self._attached = None
                continue
            action = self._translate(event, now)
            if action is not None:
                actions.append(action)
                if action[0] == CLOSED:
                    break
        self._flush()
        return actions

    def _translate(self, event: h2.events.Event, now: float) -> Action | None:
        if isinstance(event, h2.events.RequestReceived):
            sid = event.stream_id
            self.last_stream = max(self.last_stream, sid)
            return (REQUEST, sid, list(event.headers or ()))
        if isinstance(event, h2.events.DataReceived):
            payload = (event.data or b"", event.flow_controlled_length or 0)
            return (BODY, event.stream_id, payload)
        if isinstance(event, h2.events.StreamEnded):
            return (END_BODY, event.stream_id, None)
        if isinstance(event, h2.events.StreamReset):
            if event.remote_reset and self._over(now, resets=1):
                return self._calm(f"more than {self.config.h2_max_resets} stream resets a second")
            return (RESET, event.stream_id, None)
        if isinstance(event, h2.events.WindowUpdated):
            return (WINDOW, event.stream_id or 0, None)
        if isinstance(
            event,
            h2.events.RemoteSettingsChanged | h2.events.PingReceived | h2.events.PriorityUpdated,
        ):
            if self._over(now, control=1):
                limit = self.config.h2_max_control_frames
                return self._calm(f"more than {limit} SETTINGS/PING/PRIORITY frames a second")
            if isinstance(event, h2.events.RemoteSettingsChanged):
                # A new initial window size may open every stream's window.
                return (WINDOW, 0, None)
            return None
        if isinstance(event, h2.events.PingAckReceived):
            return (PONG, 0, event.ping_data)
        if isinstance(event, h2.events.ConnectionTerminated):
            return (CLOSED, 0, f"the peer sent GOAWAY ({event.error_code!r})")
        return None  # settings acknowledged, trailers, informational

    def _over(self, now: float, *, control: int = 0, resets: int = 0) -> bool:
        """Count a frame in this second's window; whether a limit is now exceeded."""
        if now - self._window_start >= 1.0:
            self._window_start = now
            self._control = self._resets = 0
        self._control += control
        self._resets += resets
        cfg = self.config
        return self._control > cfg.h2_max_control_frames or self._resets > cfg.h2_max_resets

    def _calm(self, reason: str) -> Action:
        self.breach = "h2_flood"
        self.close(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
        return (CLOSED, 0, reason)

    # -- sending ----------------------------------------------------------------

    def _flush(self) -> None:
        self.out += self.h2.data_to_send()

    @property
    def room(self) -> int:
        """Bytes that may still be framed before ``Config.h2_max_buffer`` is reached."""
        return self.config.h2_max_buffer - len(self.out) - self.in_flight

    def send_headers(
        self, stream_id: int, status: int, headers: list[tuple[bytes, bytes]], end: bool
    ) -> None:
        """Send a response head (``end``: and end the stream, no body).

        Raises:
            PeerGone: the stream was reset (or the connection closed).
        """
        try:
            self.h2.send_headers(stream_id, response_headers(status, headers), end_stream=end)
        except h2.exceptions.ProtocolError as exc:
            raise PeerGone(str(exc)) from exc
        self._flush()

    def send_data(self, stream_id: int, data: memoryview) -> int:
        """Frame as much of ``data`` as the windows and the buffer allow; how much (Rule 1).

        The hot path of a broadcast (once per event per stream), so DATA
        frames are written here directly (Rule 4) rather than through
        ``H2Connection.send_data``, which costs about 10 µs a frame.

        Raises:
            PeerGone: the stream was reset (or the connection closed).
        """
        conn = self.h2
        stream = conn.streams.get(stream_id)
        if (
            stream is None
            or stream.state_machine.state not in _SENDABLE
            or conn.state_machine.state is ConnectionState.CLOSED
        ):
            raise PeerGone(f"stream {stream_id} is closed")
        size = conn.max_outbound_frame_size
        room = self.room
        room -= 9 * -(-room // (size + 9))  # each frame's 9-byte header counts too
        budget = min(
            stream.outbound_flow_control_window,
            conn.outbound_flow_control_window,
            room,
            len(data),
        )
        if budget <= 0:
            return 0
        # Rule 4: what h2 would do for DATA frames without END_STREAM or
        # padding, which change no state but the two windows.
        stream.outbound_flow_control_window -= budget
        conn.outbound_flow_control_window -= budget
        sid = stream_id.to_bytes(4, "big")
        out = self.out
        sent = 0
        while sent < budget:
            n = min(size, budget - sent)
            out += n.to_bytes(3, "big") + b"\x00\x00" + sid  # length, DATA, no flags
            out += data[sent : sent + n]
            sent += n
        return sent

    def window(self, stream_id: int) -> int:
        """The bytes the peer lets this stream send now (its window and the connection's)."""
        try:
            return self.h2.local_flow_control_window(stream_id)
        except h2.exceptions.ProtocolError:
            return 0

    def finish(self, stream_id: int, complete: bool) -> None:
        """End a response: ``END_STREAM`` if ``complete``, else ``RST_STREAM(CANCEL)``.

        Nothing when the stream is already closed (reset by the peer, say).
        """
        try:
            if complete:
                self.h2.end_stream(stream_id)
            else:
                self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        except h2.exceptions.ProtocolError:
            return
        self._flush()

    def refuse(self, stream_id: int) -> None:
        """Refuse a new stream: ``RST_STREAM(REFUSED_STREAM)`` (the client may retry it)."""
        try:
            self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
        except h2.exceptions.ProtocolError:
            return  # the connection is closing: its GOAWAY says enough
        self._flush()

    def acknowledge(self, stream_id: int, length: int) -> None:
        """Give back receive window for ``length`` bytes of body read (or discarded)."""
        if length <= 0:
            return
        try:
            # Also for a closed stream: the connection's window still matters.
            self.h2.acknowledge_received_data(length, stream_id)
        except h2.exceptions.ProtocolError:
            return  # the connection is closed
        self._flush()

    def ping(self) -> None:
        """Send a ``PING``; its acknowledgement (:data:`PONG`): the peer read what came before."""
        try:
            self.h2.ping(PING_DATA)
        except h2.exceptions.ProtocolError:
            return  # the connection is closed
        self._flush()

    def goaway(self) -> None:
        """A graceful ``GOAWAY``: streams up to :attr:`last_stream` may still end (Rule 3)."""
        if self.goaway_sent:
            return
        self.goaway_sent = True
        frame = GoAwayFrame(0)
        frame.last_stream_id = self.last_stream
        frame.error_code = h2.errors.ErrorCodes.NO_ERROR
        self.out += frame.serialize()

    def close(self, code: int = h2.errors.ErrorCodes.NO_ERROR) -> None:
        """End the connection with ``GOAWAY(code)``; nothing more may be sent."""
        self.goaway_sent = True
        try:
            self.h2.close_connection(code, last_stream_id=self.last_stream)
        except h2.exceptions.ProtocolError:
            return
        self._flush()
