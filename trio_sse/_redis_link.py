"""The Redis backplane's connection and its state, shared by writer and reader.

Theory of operation: coredis manages sockets; this object manages *meaning*.
There is one truth about whether Redis answers (``connected``), set by the
reader's watcher task after a reconnect has been checked for lost data, and
cleared by any task whose command failed (:meth:`Link.lost`). Everything that
must stop when the connection goes (waiting publishers, blocked reads) is
registered as a *down* callback, so one call tears it all down consistently.
``generation`` counts losses: work started before a loss can tell it is stale.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any, Final, final

import trio

from ._errors import BackplaneUnavailableError
from ._redis_streams import ENSURE_EPOCH, NEW_EPOCH, XADD_TAGGED

__all__ = ["Link", "connection_errors"]

logger = logging.getLogger("trio_sse.redis")


def connection_errors() -> tuple[type[BaseException], ...]:
    """What counts as "Redis is unreachable" (coredis imported lazily)."""
    import coredis.exceptions as errors

    # OSError covers TimeoutError; cluster errors mean a node is unreachable
    # or the cluster is reconfiguring: both pass, like a lost connection.
    # READONLY: the node became a replica (failover): unavailable until we
    # reach the new primary, like a lost connection.
    return (
        errors.ConnectionError,
        errors.ClusterDownError,
        errors.ClusterError,
        errors.ReadOnlyError,
        OSError,
    )


@final
class Link:
    """One coredis client plus the connection state everyone agrees on."""

    def __init__(
        self,
        client: Any,
        *,
        reconnect_delay: float,
        reconnect_max_delay: float,
        command_timeout: float,
    ) -> None:
        self.client: Final = client
        # A server that stops answering without closing (frozen, partitioned)
        # must look as unavailable as one that refuses: every exchange with it
        # runs under `command_timeout`, and running out counts as a loss.
        self.errors: Final[tuple[type[BaseException], ...]] = (
            *connection_errors(),
            trio.TooSlowError,
        )
        self.command_timeout: Final = command_timeout
        # The reader also treats an error reply as an outage (say WRONGTYPE:
        # another program wrote a non-stream value under a topic's key): one
        # bad key must not crash the app; it shows as "not connected", with
        # the reply in `last_error`, and reading resumes once it is fixed.
        import coredis.exceptions

        self.reader_errors: Final[tuple[type[BaseException], ...]] = (
            *self.errors,
            coredis.exceptions.ResponseError,
        )
        self.reconnect_delay: Final = reconnect_delay
        self.reconnect_max_delay: Final = reconnect_max_delay
        self.connected = False
        self.running = False
        self.up = trio.Event()  # set while connected; replaced when lost
        self.generation = 0
        self.reconnects = 0
        self.last_error: str | None = None
        self.wake_watcher = trio.Event()
        self.on_down: list[Callable[[str], None]] = []
        self.tag_script: Any = None
        self.ensure_script: Any = None
        self.epoch_script: Any = None

    async def connect(self) -> None:
        """Register the scripts (once) and check that Redis answers."""
        client = self.client
        if self.tag_script is None:
            self.tag_script = client.register_script(XADD_TAGGED)
            self.ensure_script = client.register_script(ENSURE_EPOCH)
            self.epoch_script = client.register_script(NEW_EPOCH)
        await client.ping()

    def mark_up(self) -> None:
        """The connection works and every topic was checked (the watcher's call)."""
        self.connected = True
        self.up.set()

    def lost(self, exc: BaseException) -> None:
        """A command failed with a connection error: everyone stops, the watcher recovers."""
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.connected:
            self.reconnects += 1
            logger.warning("Redis backplane: connection lost (%s); reconnecting", exc)
        self.set_down(self.last_error)
        self.wake_watcher.set()

    def set_down(self, reason: str) -> None:
        """Not connected (any more): stale work sees a new generation."""
        self.connected = False
        self.generation += 1
        if self.up.is_set():
            self.up = trio.Event()
        for callback in self.on_down:
            callback(reason)

    def check_connected(self) -> None:
        """Raise :class:`BackplaneUnavailableError` unless connected."""
        if not self.connected:
            detail = f" ({self.last_error})" if self.last_error else ""
            state = "not connected yet" if self.running else "not running"
            raise BackplaneUnavailableError(
                f"Redis backplane {state}{detail}: nothing was published; retry later"
            )

    async def backoff(self, attempt: int) -> None:
        """Sleep before reconnection attempt *attempt*: doubling, capped, ±50 % jitter."""
        delay = min(self.reconnect_max_delay, self.reconnect_delay * 2 ** min(attempt, 30))
        await trio.sleep(delay * random.uniform(0.5, 1.5))
