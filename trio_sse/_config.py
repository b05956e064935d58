"""Server configuration: every limit and deadline in one place.

Theory of operation: the server never takes ``timeout=`` arguments on its
internal calls. Each deadline below is applied in exactly one place in
``_server.py`` with a cancel scope, so what a setting bounds is precise and
testable with trio's autojump clock. ``None`` disables a time bound where that
makes sense; sizes and counts are always bounded.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, fields
from typing import final

from ._event import Event

__all__ = ["Config"]


@final
@dataclass(frozen=True, slots=True)
class Config:
    """Limits, deadlines and heartbeat settings of the raw server.

    All times are in seconds, all sizes in bytes. Defaults suit a public
    deployment; see ``docs/timeouts-and-limits.md`` for the reasoning.

    Attributes:
        header_timeout: the whole request head (request line and headers) must
            arrive within this many seconds after the connection is accepted
            or after its first byte on a kept-alive connection (slowloris
            defence). A partial head gets ``408``; silence just closes.
        keep_alive_timeout: an idle kept-alive connection is closed after this
            long without the first byte of a next request.
        body_timeout: a request body must be read completely within this long
            (``408`` otherwise).
        write_timeout: a single write that makes no complete progress for this
            long (the client stopped reading) cuts the connection and frees
            every resource it held.
        heartbeat_interval: a comment line is sent on a stream that has been
            silent this long, so proxies keep it open and dead peers are found.
            ``None`` disables heartbeats.
        heartbeat_comment: the text of heartbeat comments.
        max_stream_lifetime: end every stream after this long with a
            ``retry:`` hint, so clients reconnect (and a load balancer can move
            them). ``None``: streams live as long as their handler.
        stream_end_retry: reconnection time (ms) sent in the final event when a
            stream ends because of ``max_stream_lifetime`` or shutdown;
            ``None`` sends no final event.
        stream_end_retry_jitter: a random 0 to this many ms is added to
            ``stream_end_retry`` for each stream (uniformly), so that the
            clients of a server that shuts down (or of streams that all reached
            ``max_stream_lifetime``) come back spread over this window instead
            of all at once. ``0`` sends exactly ``stream_end_retry``.
        max_connections: connections served at once; beyond it a new
            connection immediately gets ``503`` with ``Retry-After``.
        retry_after: the ``Retry-After`` value (seconds) sent with that 503.
        max_header_size: bound on the request head (request line + headers);
            ``431`` beyond it.
        max_header_count: bound on the number of request headers; ``431``.
        max_body_size: bound on a request body; ``413`` beyond it.
        shutdown_grace_period: on shutdown, streams are ended properly and
            in-flight requests may finish for this long; then every remaining
            connection is cut.
        close_linger: when the server closes a connection it half-closes it
            and reads (discarding) for up to this long, until the client
            closes too, so that a final response is not destroyed by a TCP
            reset.
        read_size: bytes asked of the socket per receive.
        backlog: the listen backlog passed to :func:`trio.open_tcp_listeners`
            (``None``: trio's default, the system maximum).

    Raises:
        ValueError: a setting is out of range (the message names it).

    """

    header_timeout: float = 10.0
    keep_alive_timeout: float = 5.0
    body_timeout: float = 30.0
    write_timeout: float = 30.0
    heartbeat_interval: float | None = 15.0
    heartbeat_comment: str = ""
    max_stream_lifetime: float | None = None
    stream_end_retry: int | None = 1000
    stream_end_retry_jitter: int = 5000
    max_connections: int = 10_000
    retry_after: int = 1
    max_header_size: int = 16 * 1024
    max_header_count: int = 100
    max_body_size: int = 1024 * 1024
    shutdown_grace_period: float = 5.0
    close_linger: float = 1.0
    read_size: int = 64 * 1024
    backlog: int | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "heartbeat_comment":
                Event(comment=value)  # validates the type
                continue
            if value is None:
                if f.name in _OPTIONAL:
                    continue
                raise ValueError(f"Config.{f.name} must not be None")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"Config.{f.name} must be a number, got {value!r}")
            if f.name in _ZERO_OK:
                if not math.isfinite(value) or value < 0:
                    raise ValueError(f"Config.{f.name} must be a non-negative int, got {value!r}")
            elif not math.isfinite(value) or value <= 0:
                raise ValueError(f"Config.{f.name} must be a positive finite number, got {value!r}")
            if f.name in _INTEGERS and not isinstance(value, int):
                raise TypeError(f"Config.{f.name} must be an int, got {value!r}")

    def heartbeat_bytes(self) -> bytes:
        """The encoded heartbeat comment (without transfer framing)."""
        return Event(comment=self.heartbeat_comment).encode()

    def stream_end_event(self) -> Event | None:
        """The final event of a stream ended by the server, or ``None``.

        Sent when a stream ends because of ``max_stream_lifetime`` or a
        shutdown, by every transport (this is the one place it is made).
        Its ``retry:`` is drawn uniformly from ``[stream_end_retry,
        stream_end_retry + stream_end_retry_jitter]`` ms, afresh for each
        call, so that thousands of streams ended at once reconnect spread
        over that window rather than in the same second.
        """
        if self.stream_end_retry is None:
            return None
        retry = self.stream_end_retry
        if self.stream_end_retry_jitter:
            retry += _jitter.randint(0, self.stream_end_retry_jitter)
        return Event(retry=retry)


#: Not cryptographic: the jitter only has to differ between streams. Each
#: worker process imports this module afresh, so workers draw differently too.
_jitter = random.Random()

_ZERO_OK = frozenset({"stream_end_retry", "stream_end_retry_jitter"})
_OPTIONAL = frozenset({"heartbeat_interval", "max_stream_lifetime", "stream_end_retry", "backlog"})
_INTEGERS = frozenset(
    {
        "stream_end_retry",
        "stream_end_retry_jitter",
        "max_connections",
        "retry_after",
        "max_header_size",
        "max_header_count",
        "max_body_size",
        "read_size",
        "backlog",
    }
)
