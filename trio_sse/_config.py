"""Server configuration: every limit and deadline in one place.

Theory of operation: the server never takes ``timeout=`` arguments on its
internal calls. Each deadline below is applied in exactly one place in
``_server.py`` with a cancel scope, so what a setting bounds is precise and
testable with trio's autojump clock. ``None`` disables a time bound where that
makes sense; sizes and counts are always bounded.
"""

from __future__ import annotations

import ipaddress
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
        max_connections_per_client: connections one client address may hold
            at once; beyond it a new connection gets ``429`` with
            ``Retry-After``. Connections from ``trusted_proxies`` are exempt
            (a proxy carries many clients).
        max_streams_per_client: event streams one client may hold at once
            (``429`` beyond). The client is the peer address, or the address
            named by ``client_ip_header`` when the peer is a trusted proxy.
        trusted_proxies: comma-separated addresses or networks
            (``"10.0.0.0/8, 127.0.0.1"``) of the proxies in front of the
            server; ``""``: none. Peers in this list are not limited per
            client (they carry many clients) unless ``client_ip_header``
            names the client. Default: loopback, where a local proxy (or a
            load test) connects from.
        client_ip_header: a header (``"x-forwarded-for"``) naming the client
            address, believed only on connections from ``trusted_proxies``;
            ``""``: key every limit on the peer address.
        max_refusing: refused connections (503 or 429) being answered at once;
            beyond it a refusal is written without waiting for the client to
            read it (under a connect flood some of those become resets).
        idle_slice: idle topic streams the raw server's idle watch serves
            (heartbeats written, ends woken) between two checkpoints, so that
            many heartbeats falling due together do not hold the event loop.
        tcp_keepalive_idle: seconds of silence before the kernel probes an
            accepted connection (``SO_KEEPALIVE``), so a client that vanished
            without a FIN is reaped even with heartbeats off. ``None``: no
            keepalive.
        tcp_keepalive_interval: seconds between keepalive probes.
        tcp_keepalive_count: unanswered probes before the connection is dropped.
        max_json_depth: deepest nesting of arrays and objects that
            :meth:`Request.json` parses (``400`` beyond).
        max_event_id_length: the longest event ``id`` (UTF-8 bytes) that may
            be published; browsers send it back as ``Last-Event-ID``, so it
            must stay well under every proxy's header limit.
        max_retry: the largest ``retry`` (ms) that may be published.
        certfile: a PEM file with the server's certificate chain: the raw
            server then speaks TLS (``""``: plain TCP). See ``docs/tls-http2.md``.
        keyfile: the PEM private key (``""``: it is in ``certfile``).
        client_ca: PEM file of the CAs that sign client certificates; when
            set, clients are asked for a certificate (``""``: none asked).
        client_cert: with ``client_ca``: ``"required"`` (the handshake fails
            without a valid client certificate) or ``"optional"``.
        alpn: the protocols offered in the TLS handshake, by preference
            (``"h2, http/1.1"``; ``h2`` needs the ``http2`` extra).
        max_handshakes: TLS handshakes in progress at once; more wait for a
            slot (within ``header_timeout``), so a connect flood cannot take
            every CPU cycle.
        h2_max_concurrent_streams: streams one HTTP/2 connection may have
            open at once (advertised in SETTINGS, and enforced on the
            handlers still running: a reset stream counts until its handler
            has ended). Beyond: ``RST_STREAM(REFUSED_STREAM)``.
        h2_max_buffer: bytes one HTTP/2 connection may hold framed but not
            yet taken by the socket, all its streams together; a stream
            that would go beyond waits (it is then not keeping up).
        h2_max_control_frames: SETTINGS, PING and PRIORITY frames accepted
            per second on one connection; beyond: ``GOAWAY(ENHANCE_YOUR_CALM)``.
        h2_max_resets: streams a client may reset per second on one
            connection (the "rapid reset" attack, CVE-2023-44487); beyond:
            ``GOAWAY(ENHANCE_YOUR_CALM)``.
        h2c: HTTP/2 without TLS on a plain-TCP server: ``"off"``, or
            ``"prior-knowledge"`` (a connection that opens with the HTTP/2
            preface speaks HTTP/2, any other HTTP/1.1), for proxies and
            clients that speak h2c to their upstream.

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
    max_connections_per_client: int = 256
    max_streams_per_client: int = 128
    trusted_proxies: str = "127.0.0.1, ::1"
    client_ip_header: str = ""
    max_refusing: int = 256
    idle_slice: int = 500
    tcp_keepalive_idle: int | None = 60
    tcp_keepalive_interval: int = 10
    tcp_keepalive_count: int = 6
    max_json_depth: int = 32
    max_event_id_length: int = 256
    max_retry: int = 3_600_000
    certfile: str = ""
    keyfile: str = ""
    client_ca: str = ""
    client_cert: str = "required"
    alpn: str = "h2, http/1.1"
    max_handshakes: int = 64
    h2_max_concurrent_streams: int = 100
    h2_max_buffer: int = 256 * 1024
    h2_max_control_frames: int = 100
    h2_max_resets: int = 100
    h2c: str = "off"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "heartbeat_comment":
                Event(comment=value)  # validates the type
                continue
            if f.name in _STRINGS:
                if not isinstance(value, str):
                    raise TypeError(f"Config.{f.name} must be a str, got {value!r}")
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

        if self.h2c not in ("off", "prior-knowledge"):
            raise ValueError(f"Config.h2c must be 'off' or 'prior-knowledge', got {self.h2c!r}")
        if self.client_cert not in ("required", "optional"):
            raise ValueError(
                f"Config.client_cert must be 'required' or 'optional', got {self.client_cert!r}"
            )
        self.proxy_networks()  # validates trusted_proxies
        if self.client_ip_header and not self.trusted_proxies:
            raise ValueError(
                "Config.client_ip_header is believed only from trusted proxies: "
                "set Config.trusted_proxies too"
            )

    def proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """``trusted_proxies`` parsed.

        Raises:
            ValueError: an entry is not an address or network.
        """
        out = []
        for part in self.trusted_proxies.split(","):
            if part := part.strip():
                try:
                    out.append(ipaddress.ip_network(part, strict=False))
                except ValueError:
                    raise ValueError(
                        f"Config.trusted_proxies: {part!r} is not an IP address or network"
                    ) from None
        return tuple(out)

    def check_event(self, event: Event) -> None:
        """Check ``event`` against ``max_event_id_length`` and ``max_retry``.

        Publishers of events whose fields come from outside call this (as
        :func:`~trio_sse.publish_endpoint` does) before publishing.

        Raises:
            ValueError: the id is too long or the retry out of range (the
                message names the limit).
        """
        if event.id is not None and len(event.id.encode("utf-8")) > self.max_event_id_length:
            raise ValueError(
                f"event id is longer than {self.max_event_id_length} bytes "
                "(Config.max_event_id_length): browsers send it back as a header"
            )
        if event.retry is not None and event.retry > self.max_retry:
            raise ValueError(f"retry {event.retry} is over {self.max_retry} ms (Config.max_retry)")

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
_OPTIONAL = frozenset(
    {
        "heartbeat_interval",
        "max_stream_lifetime",
        "stream_end_retry",
        "backlog",
        "tcp_keepalive_idle",
    }
)
_STRINGS = frozenset(
    {
        "trusted_proxies",
        "client_ip_header",
        "certfile",
        "keyfile",
        "client_ca",
        "client_cert",
        "alpn",
        "h2c",
    }
)
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
        "max_connections_per_client",
        "max_streams_per_client",
        "max_refusing",
        "idle_slice",
        "tcp_keepalive_idle",
        "tcp_keepalive_interval",
        "tcp_keepalive_count",
        "max_json_depth",
        "max_event_id_length",
        "max_retry",
        "max_handshakes",
        "h2_max_concurrent_streams",
        "h2_max_buffer",
        "h2_max_control_frames",
        "h2_max_resets",
    }
)
