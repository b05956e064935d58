"""The write deadline and the heartbeat timer: one mechanism for every transport.

Theory of operation
-------------------

Rule 1, one write deadline: every write of response bytes or WebSocket frames
that may wait for the peer goes through :func:`write_within`, the only place
``Config.write_timeout`` is applied. A write that does not finish in time
means the peer stopped reading; the caller then cuts the connection.

Rule 2, one heartbeat timer: a :class:`WriteClock` remembers when the
transport last wrote, and :meth:`WriteClock.run` waits for something (the
peer going away, or nothing) in a cancel scope whose deadline is the next
heartbeat. Each write pushes that deadline back *lazily*: only when less than
half an interval remains. At 10,000 streams a timer re-armed on every write,
each re-arming cancelling a socket receive, cost more than the broadcast;
lazily, an active stream causes at most two deadline moves per interval and
no wake-up, while an idle one still gets its heartbeat on time because the
decision is taken from :attr:`WriteClock.last_write`.

The event streams of both servers (``_exchange.py``) and the raw server's
WebSocket (``_websocket.py``) use it.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

__all__ = ["WriteClock", "write_within"]

_T = TypeVar("_T")


async def write_within(timeout: float, write: Callable[[_T], Awaitable[object]], arg: _T) -> bool:
    """Await ``write(arg)`` for at most ``timeout`` seconds.

    Returns:
        ``True`` if the write finished, ``False`` if it stalled (it was
        cancelled midway: the framing of the connection is then unknown).

    """
    with trio.move_on_after(timeout) as scope:
        await write(arg)
    return not scope.cancelled_caught


class WriteClock:
    """When a transport last wrote, and its heartbeat timer.

    Args:
        interval: the heartbeat interval in seconds (``None``: no heartbeat).

    """

    __slots__ = ("_push_after", "_wake", "clock", "interval", "last_write")

    def __init__(self, interval: float | None) -> None:
        self.interval = interval
        # The run's clock, read directly: trio.current_time() finds it through
        # two more calls, on every write (a third of the Python of a delivery).
        self.clock = trio.lowlevel.current_clock()
        self.last_write = self.clock.current_time()
        # The cancel scope run() waits in; None while it is not waiting.
        self._wake: trio.CancelScope | None = None
        # Before this time a write need not look at the wait's deadline (more
        # than half an interval left): one float comparison per write instead
        # of reading CancelScope.deadline, a property, at every delivery.
        self._push_after = -math.inf

    def wrote(self) -> None:
        """Note a write: push the heartbeat deadline back, lazily (Rule 2)."""
        now = self.last_write = self.clock.current_time()
        if now < self._push_after:
            return
        scope = self._wake
        interval = self.interval
        if scope is not None and interval is not None:
            deadline = scope.deadline
            if deadline - now < interval / 2:
                deadline = scope.deadline = now + interval
            self._push_after = deadline - interval / 2

    def wake_now(self) -> None:
        """Interrupt :meth:`run`'s wait at once (its ``on_wake`` then runs)."""
        if self._wake is not None:
            self._wake.deadline = -math.inf
            self._push_after = -math.inf

    def due(self) -> bool:
        """Whether the stream has been silent for a whole interval."""
        interval = self.interval
        return interval is not None and trio.current_time() >= self.last_write + interval

    async def run(
        self,
        wait: Callable[[], Awaitable[object]],
        on_wake: Callable[[], Awaitable[object]],
        pending: Callable[[], bool] | None = None,
    ) -> None:
        """Await ``wait()``; at each heartbeat deadline or :meth:`wake_now`, ``on_wake()``.

        Returns when ``wait()`` returns. ``wait`` must be safe to cancel and
        call again (a socket receive loses nothing when cancelled).

        Args:
            wait: what to wait for (the peer leaving, or ``trio.sleep_forever``).
            on_wake: called after the wait was interrupted; it decides from
                :meth:`due` whether a heartbeat is owed.
            pending: when it returns ``True`` the wait is skipped and
                ``on_wake`` runs at once (bytes left to flush).

        """
        interval = self.interval
        woke = -math.inf
        while True:
            if pending is not None and pending():
                deadline = -math.inf
            elif interval is None:
                deadline = math.inf
            else:
                deadline = self.last_write + interval
                if deadline <= woke:
                    # on_wake owed a heartbeat but wrote nothing (a write in
                    # progress, say): an interval later, never a busy loop.
                    deadline = woke + interval
            with trio.CancelScope(deadline=deadline) as wake:
                self._wake = wake
                self._push_after = -math.inf
                try:
                    await wait()
                    return
                finally:
                    self._wake = None
            woke = trio.current_time()
            await on_wake()
