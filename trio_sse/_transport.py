"""What a server gives the exchange: the :class:`Transport` protocol and its errors.

A transport frames responses and moves bytes; everything above that is the
:class:`~trio_sse._exchange.Exchange`'s. Three implement it: the raw server's
connection (``_server.py``: h11 framing, a socket), one stream of the raw
server's HTTP/2 connections (``_h2_stream.py``: DATA frames within the peer's
flow-control window) and the ASGI adapter (``_asgi.py``: ASGI messages).
No trio import: a transport's coroutines are whatever its server runs on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from ._event import Event
    from ._http import Response, StreamResponse

__all__ = ["BodyTooLarge", "PeerGone", "Transport", "check_response"]

# RFC 9110 5.1 and 5.5: a header name is a token; a value has no CR, LF or NUL.
_TOKEN: Final = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_BAD_VALUE: Final = re.compile(rb"[\r\n\x00]")


class PeerGone(Exception):
    """The peer closed or reset the connection, or stopped reading."""


class BodyTooLarge(Exception):
    """The request body exceeded the limit the transport was given."""


class Transport(Protocol):
    """What a server implements for an :class:`Exchange`: framing and bytes.

    Attributes:
        client: the peer's ``(host, port)``, if known.
        heartbeat: the heartbeat comment, framed for this transport.
        direct: whether :meth:`write_now` can write without waiting (then
            streams offer a direct sink to topics).
        stopping: whether the server is shutting down (a new stream then
            ends at once, with the final ``retry:``).

    """

    @property
    def client(self) -> tuple[str, int] | None: ...

    @property
    def heartbeat(self) -> bytes: ...

    @property
    def direct(self) -> bool: ...

    @property
    def stopping(self) -> bool: ...

    def encoder(self) -> Callable[[Event], bytes]:
        """How an event's bytes are framed on this transport (cached bytes)."""
        ...

    async def send_response(self, response: Response, head_only: bool) -> None:
        """Send a whole ordinary response, through :meth:`Exchange.write`."""

    async def start_stream(self, response: StreamResponse, head_only: bool) -> None:
        """Send the head of an event stream (and its end, for ``HEAD``)."""

    def stream_tail(self, final: bytes) -> bytes:
        """The last bytes of a stream: ``final`` framed, and the end of the body."""
        ...

    def write_now(self, data: bytes) -> bytes | None:
        """Write what fits without waiting; return the rest (``None``: all written).

        Raises :class:`PeerGone`. A transport without a direct path returns
        ``data`` itself, even when empty (the bytes then go to :meth:`write_rest`).
        """
        ...

    async def write_rest(self, data: bytes, last: bool) -> None:
        """Write all of ``data`` (``last``: the end of the body). Raises :class:`PeerGone`."""

    async def wait_disconnect(self) -> None:
        """Return once the peer has gone; safe to cancel and call again."""

    async def receive_body(self, limit: int) -> bytes:
        """The request body. Raises :class:`BodyTooLarge` beyond ``limit`` bytes."""
        ...

    def close_after(self) -> None:
        """Close the connection after this response (no-op where the server decides)."""


def check_response(status: int, headers: Sequence[tuple[bytes, bytes]]) -> None:
    """Raise :class:`ValueError` unless ``status`` and ``headers`` can be sent."""
    if not 200 <= status <= 999:
        raise ValueError(f"status {status} is not a final status")
    for name, value in headers:
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"invalid header name {name!r}")
        if _BAD_VALUE.search(value):
            raise ValueError(f"invalid value for header {name!r}")
