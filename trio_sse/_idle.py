"""Idle parked streams: one task and one epoll set per server watch them all.

Theory of operation
-------------------

A parked topic stream (``_parked.py``) is idle most of its life: nothing to
write, the peer silent. Waiting the usual way, each stream would hold trio's
machinery for a socket wait (the frames of ``wait_readable``, its waiter
record and abort closure) and a cancel scope for its next heartbeat, about
2 KB. Instead the stream's task sleeps in
:func:`trio.lowlevel.wait_task_rescheduled` (a trio primitive, cancellable as
any wait) and the server's one :class:`IdleStreams` task watches for all of
them. The task still owns its stream: it is still in the connections'
nursery, and cancelling it (a shutdown past its grace period) wakes it
through trio's abort callback.

Rule 1, parking: :meth:`IdleStreams.park` puts the stream's descriptor into
the service's own epoll set (readable, one-shot) and its next time, the
sooner of its heartbeat and its end, into a heap; the stream's task then
sleeps at once, with no checkpoint in between. The service's task waits for
that epoll set to become readable, in one cancel scope whose deadline is the
heap's first time.

Rule 2, waking: a park ends exactly once, by whoever comes first: the
descriptor became readable (the peer sent bytes or left: the park's
``readable`` is then ``True``), the stream's end came, :meth:`Park.wake` (a publisher's
direct write left bytes behind or found the peer gone, an event had to be
queued, the subscription ended, a shutdown), or cancellation. Ending a park
removes it from the epoll set and the registry; its heap entry stays until
its time, emptied (it refers to nothing), or until emptied entries outnumber
twice the parked streams (by 1,000): then they are dropped at once.

Rule 3, heartbeats without waking: when a stream has been silent for a whole
interval the service writes the heartbeat itself, without waiting, as
publishers write events (:meth:`Idler.heartbeat_nowait`), and re-arms the
stream's time. Only a write that cannot finish at once wakes the stream,
which then owns the rest. Writes never move a timer: when a time comes, the
service re-arms it from :attr:`Idler.last_write`. At most ``slice`` due
streams are served between two checkpoints (``Config.idle_slice``): 100,000
heartbeats falling due together do not hold the event loop.

Linux only (``select.epoll``); elsewhere the raw server runs topic streams the
general way, with a companion task (``_streamed.py``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import select
from heapq import heapify, heappop, heappush
from typing import TYPE_CHECKING, Any, Final, Protocol, final

import trio

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["AVAILABLE", "IdleStreams", "Idler"]

#: Whether this platform has what :class:`IdleStreams` needs.
AVAILABLE: Final = hasattr(select, "epoll")

logger = logging.getLogger("trio_sse.exchange")

#: Emptied heap entries tolerated beyond twice the parked streams.
_PRUNE_ABOVE: Final = 1000

if AVAILABLE:
    _EVENTS: Final = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLONESHOT


class Idler(Protocol):
    """What the service needs of a parked stream (``_exchange.Exchange``)."""

    #: The trio time of the stream's last write.
    last_write: float
    #: Its heartbeat interval (``None``: no heartbeats).
    interval: float | None

    def heartbeat_nowait(self) -> bool:
        """Write the heartbeat without waiting; ``False``: a write is in progress."""
        ...

    def parked(self, park: Park | None) -> None:
        """Told when its park begins (the :class:`Park`) and ends (``None``)."""
        ...


@final
class Park:
    """One sleeping stream: its heap entry and its record in the registry."""

    __slots__ = ("at", "end", "fd", "idler", "readable", "service", "task")

    def __init__(
        self, service: IdleStreams, idler: Idler, fd: int, end: float, task: trio.lowlevel.Task
    ) -> None:
        self.service = service
        self.idler: Idler | None = idler
        self.fd = fd
        self.end = end
        self.task: trio.lowlevel.Task | None = task
        self.at = _next_time(idler, end)
        self.readable = False

    def __lt__(self, other: Park) -> bool:
        return self.at < other.at

    def wake(self) -> None:
        """End the park now, if it has not ended (Rule 2); ``readable`` stays ``False``."""
        self.service._end(self, False)

    def abort(self, _: Any) -> trio.lowlevel.Abort:
        """Trio's abort callback: cancelled while parked, the park is forgotten."""
        self.service._forget(self)
        return trio.lowlevel.Abort.SUCCEEDED


def _next_time(idler: Idler, end: float) -> float:
    interval = idler.interval
    return end if interval is None else min(end, idler.last_write + interval)


@final
class IdleStreams:
    """The server's watch over its idle parked streams (see the module's rules).

    Run :meth:`run` once, in a nursery that outlives every stream parked here.

    Args:
        slice: due streams served (heartbeats written, ends woken) between
            two checkpoints (``Config.idle_slice``).
    """

    def __init__(self, slice: int = 500) -> None:
        self.slice = slice
        # Closed when run() ends: streams may park from the start.
        self._epoll: Any = select.epoll()
        self._parked: dict[int, Park] = {}
        self._heap: list[Park] = []
        self._sleep: trio.CancelScope | None = None

    def __len__(self) -> int:
        """The number of streams parked now."""
        return len(self._parked)

    @property
    def running(self) -> bool:
        """Whether streams can park: :meth:`run` has not ended."""
        return self._epoll is not None

    def park(self, idler: Idler, fd: int, end: float) -> Park:
        """Register a stream that is about to sleep (Rule 1).

        The caller then awaits ``trio.lowlevel.wait_task_rescheduled(park.abort)``
        at once, without a checkpoint in between (a coroutine of ours around
        it would cost every idle stream a frame); afterwards ``park.readable``
        says whether the descriptor became readable.

        Args:
            idler: the stream.
            fd: the descriptor its peer is watched on.
            end: the trio time at which the stream ends.

        Raises:
            RuntimeError: :meth:`run` has ended.

        """
        epoll = self._epoll
        if epoll is None:
            raise RuntimeError("IdleStreams.run() has ended: no stream can park")
        park = Park(self, idler, fd, end, trio.lowlevel.current_task())
        epoll.register(fd, _EVENTS)
        self._parked[fd] = park
        idler.parked(park)
        if park.at < math.inf:
            heap = self._heap
            if len(heap) > 2 * len(self._parked) + _PRUNE_ABOVE:
                # Parks woken often (a peer sending byte after byte) leave
                # emptied entries faster than their times come: drop them.
                heap[:] = [p for p in heap if p.idler is not None]
                heapify(heap)
            heappush(heap, park)
            sleep = self._sleep
            if sleep is not None and park.at < sleep.deadline:
                sleep.deadline = park.at
        return park

    async def run(self) -> None:
        """Watch the parked streams until cancelled; then no stream can park."""
        epoll = self._epoll
        if epoll is None:
            raise RuntimeError("IdleStreams.run() runs once")
        try:
            while True:
                heap = self._heap
                while heap and heap[0].idler is None:
                    heappop(heap)  # an ended park's entry
                with trio.CancelScope(deadline=heap[0].at if heap else math.inf) as sleep:
                    self._sleep = sleep
                    await trio.lowlevel.wait_readable(epoll.fileno())
                self._sleep = None
                self._wake_ready(epoll.poll(0))
                self._serve_due(trio.current_time())
        finally:
            self._sleep = None
            # Only reached with streams still parked if their owners outlive
            # this task (a bug): they must not sleep forever.
            for park in list(self._parked.values()):
                self._end(park, False)
            self._heap.clear()
            self._epoll = None
            epoll.close()

    # -- waking (Rule 2) and heartbeats (Rule 3) -----------------------------

    def _wake_ready(self, ready: Iterable[tuple[int, int]]) -> None:
        parked = self._parked
        for fd, _ in ready:
            park = parked.get(fd)
            if park is not None:
                self._end(park, True)

    def _serve_due(self, now: float) -> None:
        heap = self._heap
        budget = self.slice  # the rest after a checkpoint (the next wait's deadline has passed)
        while heap and heap[0].at <= now and budget > 0:
            budget -= 1
            park = heappop(heap)
            idler = park.idler
            if idler is None:
                continue
            if now >= park.end:
                self._end(park, False)
                continue
            interval = idler.interval
            if interval is not None and now >= idler.last_write + interval:
                try:
                    written = idler.heartbeat_nowait()
                except Exception:  # a bug: that stream's, not every stream's
                    logger.exception("heartbeat of an idle stream failed")
                    written = False
                if not written:
                    self._end(park, False)  # the stream writes it itself
                if park.idler is None:
                    continue  # the write woke it (bytes left, or the peer gone)
            park.at = _next_time(idler, park.end)
            if park.at <= now:  # no write happened: never a busy loop
                park.at = now + (interval or 0.0)
            heappush(heap, park)

    def _forget(self, park: Park) -> trio.lowlevel.Task | None:
        """End ``park``'s registration; its task, if it was still parked."""
        idler = park.idler
        if idler is None:
            return None
        task = park.task
        park.idler = park.task = None
        idler.parked(None)
        del self._parked[park.fd]
        epoll = self._epoll
        if epoll is not None:
            with contextlib.suppress(OSError):  # closed behind our back: gone anyway
                epoll.unregister(park.fd)
        return task

    def _end(self, park: Park, readable: bool) -> None:
        task = self._forget(park)
        if task is not None:
            park.readable = readable
            trio.lowlevel.reschedule(task)
