"""Writing into a parked stream from other tasks, without waiting.

Theory of operation
-------------------

A parked topic stream (``_parked.py``) sleeps while others write to it: a
publisher's fan-out pass writes each event (:meth:`DirectWriter.write_entry_nowait`,
or :meth:`DirectWriter.write_event_nowait` for a stream of several topics), the
server's idle watch writes its heartbeats (:meth:`DirectWriter.heartbeat_nowait`,
``_idle.py``). :class:`DirectWriter`, the base of
:class:`~trio_sse._exchange.Exchange`, is that path: one non-blocking write
(the transport's ``write_now``), no checkpoint, nothing raised into the
writer's task.

Rule 1, order: a write is tried only when nothing is pending: no bytes left
behind by an earlier write (``_out``) and no write in progress (the
exchange's lock). Otherwise the bytes are refused: an event then takes the
subscription's queue, a heartbeat is left to the stream.

Rule 2, what a write leaves: bytes that did not fit are kept in ``_out`` and
the stream is woken to write them; a failed write marks the peer gone and
wakes the stream, which ends. A bug in the transport ends that stream only.

Rule 3, the clock: a write only notes :attr:`~trio_sse._pacing.WriteClock.last_write`.
A parked stream's heartbeat timer is the idle watch's, which reads it when
the time comes: no deadline moves on the broadcast path. The entry sink
notes the time its event was recorded (``Entry.time``, one clock read per
event instead of one per subscriber, and one float shared by all): earlier
than the write by the pass so far, so a heartbeat may come that much early,
never late.

Rule 4, the raw server's socket: given its descriptor (``write_fd``), the
entry sink writes with ``os.write`` itself, the transport's ``write_now``
inlined (``_Connection.write_now``: the same mapping of errors). A delivery
then makes one Python call less and touches none of the connection's objects.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._event import Event
from ._pacing import WriteClock
from ._transport import PeerGone

if TYPE_CHECKING:
    import trio

    from ._delivery import Delivery
    from ._history import Entry
    from ._idle import IdleStreams, Park
    from ._transport import Transport

__all__ = ["DirectWriter"]

#: One global lookup instead of two on the hot path (Rule 4).
_os_write = os.write


class DirectWriter(WriteClock):
    """The exchange's path for writes from other tasks (see the module's rules).

    Args:
        interval: the heartbeat interval (``None``: no heartbeat).
        write_now: the transport's non-blocking write.
        idle: where a topic stream parks (given with a direct transport only).
        fd: the descriptor the idle watch watches for the peer.
        write_fd: the socket ``write_now`` writes to, for the entry sink to
            write itself (Rule 4; -1: call ``write_now``).

    """

    # Slots: 10,000 open streams mean 10,000 of these.
    __slots__ = (
        "_gone",
        "_lock",
        "_out",
        "_park",
        "_sub",
        "_write_fd",
        "_write_now",
        "encode",
        "fd",
        "idle",
    )

    # The exchange's (``_exchange.py``).
    transport: Transport
    _stream_scope: trio.CancelScope | None

    def __init__(
        self,
        interval: float | None,
        write_now: Callable[[bytes], bytes | None],
        idle: IdleStreams | None,
        fd: int,
        write_fd: int = -1,
    ) -> None:
        super().__init__(interval)
        self._write_now = write_now
        self._write_fd = write_fd
        self.idle = idle
        self.fd = fd
        # The park the stream sleeps in (_idle.py), while it sleeps.
        self._park: Park | None = None
        # Created on the first write that does not complete at once.
        self._lock: trio.Lock | None = None
        # Bytes a write from another task took but could not write yet (Rule 2).
        self._out = b""
        # The peer is gone or the framing is unknown: every later write fails.
        self._gone = False
        # The framing of a parked stream's events, and its subscription.
        self.encode: Callable[[Event], bytes] = Event.encode
        self._sub: Delivery | None = None

    def parked(self, park: Park | None) -> None:
        """Note that the stream sleeps in ``park`` (``_idle.py``), or no longer."""
        self._park = park

    def wake_now(self) -> None:
        """Wake the stream's wait: a parked stream's park, or the heartbeat wait."""
        if self._park is not None:
            self._park.wake()
        else:
            super().wake_now()

    def heartbeat_nowait(self) -> bool:
        """:meth:`write_nowait` of the heartbeat (the idle watch's, ``_idle.py``)."""
        return self.write_nowait(self.transport.heartbeat)

    def write_event_nowait(self, event: Event) -> bool:
        """:meth:`write_nowait` of ``event`` framed by :attr:`encode`.

        The direct sink of a parked stream with several topics; one with a
        single topic uses :meth:`write_entry_nowait`, the same steps in one frame.
        """
        return self.write_nowait(self.encode(event))

    def write_nowait(self, data: bytes) -> bool:
        """Write ``data`` from another task without waiting.

        Returns:
            ``True`` if the bytes were taken: written, or partly written with
            the rest kept for the parked stream, which this wakes; also when
            the peer is gone (the stream ends, the bytes are dropped).
            ``False`` if a write is pending (Rule 1): the caller must queue
            the event, to keep order.

        """
        lock = self._lock
        if self._out or (lock is not None and lock.locked()):
            return False
        if self._gone:
            return True
        try:
            rest = self._write_now(data)
        except PeerGone:
            self._lost()
            return True
        self.last_write = self.clock.current_time()  # Rule 3
        if rest is not None:
            self._out = rest
            self.wake_now()
        return True

    def write_entry_nowait(self, entry: Entry[Any]) -> None:
        """:meth:`write_event_nowait` and ``Delivery._direct`` in one frame (one topic)."""
        sub = self._sub
        assert sub is not None
        lock = self._lock
        if self._out or (lock is not None and lock.locked()):
            sub._direct_refused(entry)
            return
        event = entry.event
        if not self._gone:
            fd = self._write_fd
            try:
                data = self.encode(event)
                if fd < 0:
                    rest = self._write_now(data)
                else:  # Rule 4
                    try:
                        n = _os_write(fd, data)
                    except BlockingIOError:
                        n = 0
                    except OSError as exc:
                        raise PeerGone(str(exc) or type(exc).__name__) from exc
                    rest = None if n == len(data) else data[n:]
                self.last_write = entry.time  # Rule 3
                if rest is not None:
                    self._out = rest
                    self.wake_now()
            except PeerGone:
                self._lost()
            except Exception as exc:
                sub._direct_failed(entry, exc)
                return
        sub._position = event.id

    def _lost(self) -> None:
        """A write failed: the peer is gone, the stream ends (Rule 2)."""
        self._gone = True
        self.transport.close_after()
        if self._stream_scope is not None:
            self._stream_scope.cancel()
        self.wake_now()
