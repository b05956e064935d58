"""Socket-level helpers of the raw server: peers, keepalive, refusals, descriptors.

Strategy: refusing a connection must cost the server almost nothing, because
refusals come in floods. :func:`refusal_bytes` builds the whole ``503``/``429``
answer in one buffer; :func:`refuse_now` is the no-task path used when the
refusal pool (``Config.max_refusing``) is full: write the answer with one
non-blocking system call, read what the client already sent (closing a socket
with unread data sends a reset, which would destroy the answer before the
client reads it), half-close, and let the caller close.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import socket
from types import TracebackType
from typing import Final, final

import trio

from ._config import Config
from ._http import status_phrase
from ._transport import PeerGone

__all__ = [
    "check_descriptor_limit",
    "linger",
    "map_io_errors",
    "peer_address",
    "refusal_bytes",
    "refuse_now",
    "set_keepalive",
]

limits_logger = logging.getLogger("trio_sse.limits")


@final
class _MapIOErrors:
    """Turn the errors of a vanished peer into :class:`PeerGone`, in one place.

    trio reports a reset or closed socket as :class:`trio.BrokenResourceError`
    (or :class:`OSError` from ``os.write``) and a stream already closed by this
    side as :class:`trio.ClosedResourceError`; above the socket all of them
    mean the same thing, the peer cannot be written to or read from any more.
    Every read and write of the raw server and of the test client goes through
    ``with map_io_errors:`` (httpcore's ``map_exceptions``). A class, not a
    generator, because the direct-write path enters it once per event.
    :class:`BlockingIOError` is not an error of the peer: it passes through,
    for the non-blocking writer to catch.
    """

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or isinstance(exc, BlockingIOError):
            return
        if isinstance(exc, trio.BrokenResourceError | trio.ClosedResourceError | OSError):
            raise PeerGone(str(exc) or type(exc).__name__) from exc


#: The context manager mapping I/O errors to :class:`PeerGone` (see above).
map_io_errors: Final = _MapIOErrors()

_REFUSALS: Final = {
    503: b"server at its connection limit; retry later\n",
    429: b"too many connections from this client; retry later\n",
}


def refusal_bytes(status: int, retry_after: int) -> bytes:
    """The whole ``503`` or ``429`` response refusing a connection."""
    body = _REFUSALS[status]
    return (
        b"HTTP/1.1 %d %s\r\n"
        b"retry-after: %d\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n%s"
    ) % (status, status_phrase(status).encode("ascii"), retry_after, len(body), body)


def peer_address(stream: trio.abc.Stream) -> tuple[str, int] | None:
    """The client's ``(host, port)``, or ``None`` (not a TCP socket)."""
    if not isinstance(stream, trio.SocketStream):
        return None
    try:
        peer = stream.socket.getpeername()
        return (str(peer[0]), int(peer[1]))
    except (OSError, IndexError, TypeError):  # pragma: no cover - unix sockets
        return None


def set_keepalive(stream: trio.abc.Stream, config: Config) -> None:
    """Turn on TCP keepalive as configured (``tcp_keepalive_idle``)."""
    if config.tcp_keepalive_idle is None or not isinstance(stream, trio.SocketStream):
        return
    sock = stream.socket
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):  # Linux; macOS has TCP_KEEPALIVE
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, config.tcp_keepalive_idle)
        if hasattr(socket, "TCP_KEEPINTVL"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, config.tcp_keepalive_interval)
        if hasattr(socket, "TCP_KEEPCNT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, config.tcp_keepalive_count)
    except OSError:  # pragma: no cover - not a TCP socket (unix socket listener)
        pass


def refuse_now(stream: trio.abc.Stream, data: bytes) -> None:
    """Write a refusal without waiting; read what arrived so closing does not reset."""
    if not isinstance(stream, trio.SocketStream):
        return
    sock = stream.socket
    fd = sock.fileno()
    try:
        os.write(fd, data)
        for _ in range(16):
            if not os.read(fd, 65536):
                break
    except OSError:  # BlockingIOError: nothing more to read now
        pass
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


def check_descriptor_limit(config: Config) -> None:
    """Make room for ``max_connections`` descriptors, or warn that there is none.

    Each connection is a file descriptor. When the soft ``RLIMIT_NOFILE`` is
    below what ``max_connections`` (plus the refusal pool and a margin)
    needs, it is raised towards the hard limit, as Go programs do at start;
    if even the hard limit is too low, a warning says so: connections beyond
    it would fail in ``accept()`` instead of getting the documented ``503``.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = config.max_connections + config.max_refusing + 32
    if soft == resource.RLIM_INFINITY or needed <= soft:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):  # pragma: no cover - a sandbox refusing it
            target = soft
        else:
            limits_logger.info("raised the file-descriptor limit from %d to %d", soft, target)
    if needed > target:
        limits_logger.warning(
            "Config.max_connections (%d) plus max_refusing (%d) exceeds this process' "
            "file-descriptor limit (%d, RLIMIT_NOFILE, hard limit %d): connections beyond it "
            "are refused by the kernel, not answered with 503; raise the hard limit "
            "(LimitNOFILE=%d in a systemd unit) or lower max_connections",
            config.max_connections,
            config.max_refusing,
            target,
            hard,
            needed,
        )


async def linger(stream: trio.abc.Stream, read_size: int) -> None:
    """Half-close, then read until the peer closes (caller bounds the time)."""
    with contextlib.suppress(PeerGone), map_io_errors:
        if isinstance(stream, trio.abc.HalfCloseableStream):
            await stream.send_eof()
        while await stream.receive_some(read_size):
            pass
