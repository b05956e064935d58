"""Sans-IO, incremental event-stream decoder.

Theory of operation: bytes in, events out. :meth:`Decoder.feed` takes any
chunk of the stream and returns the events completed by it; nothing here does
I/O or imports trio, so the same decoder serves the trio client, tests and any
other I/O layer (like h11's ``Connection``).

The rules are WHATWG HTML's "Interpreting an event stream", applied exactly:

    The stream must be decoded using the UTF-8 decode algorithm. [It] strips
    one leading UTF-8 Byte Order Mark (BOM), if any.

    Lines must be separated by either a U+000D CARRIAGE RETURN U+000A LINE
    FEED (CRLF) character pair, a single U+000A LINE FEED (LF) character, or a
    single U+000D CARRIAGE RETURN (CR) character.

Strategy: we split lines on *bytes* and decode field values afterwards. That
is equivalent to decoding the whole stream first, because CR, LF, ``:`` and
space are ASCII, and in UTF-8 an ASCII byte never occurs inside a multi-byte
sequence and always ends a malformed one; so "decode, then split" and "split,
then decode each piece with U+FFFD replacement" give the same text. It is also
what makes a multi-byte character split across two feeds decode correctly: the
unfinished line is kept as bytes until its end arrives. ``bytes.splitlines``
splits on exactly CR, LF and CRLF (unlike ``str.splitlines``), and a CR at the
very end of a feed is remembered so that an LF opening the next feed does not
count as a second line break.

Memory is bounded by ``max_event_size``: the unfinished line plus the event's
accumulated data may not grow past it (:class:`EventTooLargeError`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, final

from ._errors import EventTooLargeError

__all__ = ["DEFAULT_MAX_EVENT_SIZE", "Decoder", "MessageEvent"]

#: Default bound on an unfinished line plus one event's data, in bytes.
DEFAULT_MAX_EVENT_SIZE: Final = 1024 * 1024

_BOM: Final = b"\xef\xbb\xbf"


@final
@dataclass(frozen=True, slots=True)
class MessageEvent:
    """An event dispatched by :class:`Decoder`, as a browser would dispatch it.

    Attributes:
        type: the event type; ``"message"`` unless the event set one.
        data: the event's data, lines joined with LF, without a final LF.
        last_event_id: the stream's last event id when this event was
            dispatched (persists across events, like ``MessageEvent.lastEventId``).
    """

    type: str
    data: str
    last_event_id: str


@final
class Decoder:
    """Incremental, browser-exact event-stream parser.

    Args:
        last_event_id: the last event id to start from (e.g. the one a
            reconnecting client sent as ``Last-Event-ID``).
        max_event_size: bound, in bytes, on one unfinished line plus the data
            accumulated for one event.

    Attributes:
        last_event_id: the id a client would send as ``Last-Event-ID`` if it
            reconnected now (updated when an event ends, per the spec).
        retry: the reconnection time in milliseconds most recently set by a
            ``retry`` field, or ``None``.

    Error handling:
        :meth:`feed` raises only :class:`~trio_sse.EventTooLargeError`; any
        other malformed input is handled the way browsers handle it (invalid
        UTF-8 becomes U+FFFD, unknown fields are ignored, ...). After that
        error the decoder is closed.
    """

    __slots__ = (
        "_buf",
        "_closed",
        "_data",
        "_data_size",
        "_event_type",
        "_id_buffer",
        "_max",
        "_skip_lf",
        "_started",
        "last_event_id",
        "retry",
    )

    def __init__(
        self, last_event_id: str = "", *, max_event_size: int = DEFAULT_MAX_EVENT_SIZE
    ) -> None:
        if max_event_size < 1:
            raise ValueError(f"max_event_size must be at least 1, got {max_event_size}")
        self.last_event_id: str = last_event_id
        self.retry: int | None = None
        self._max = max_event_size
        self._buf = b""
        self._data: list[bytes] = []
        self._data_size = 0
        self._event_type = b""
        self._id_buffer: bytes | None = None  # None: unchanged since last dispatch
        self._skip_lf = False
        self._started = False
        self._closed = False

    def feed(self, data: bytes) -> list[MessageEvent]:
        """Consume a chunk of the stream; return the events it completed.

        Args:
            data: the next bytes of the stream, split anywhere.

        Returns:
            The events dispatched, in order (often empty).

        Raises:
            EventTooLargeError: a line or event exceeds ``max_event_size``.
            RuntimeError: the decoder was closed.
        """
        if self._closed:
            raise RuntimeError("Decoder.feed() called after close() or an error")
        if not data:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if data[:1] == b"\n":
                data = data[1:]
                if not data:
                    return []
        buf = self._buf + data if self._buf else data
        if not self._started:
            if len(buf) < 3 and _BOM.startswith(buf):
                self._buf = buf  # could still be a BOM: wait for more
                return []
            self._started = True
            if buf.startswith(_BOM):
                buf = buf[3:]
        lines = buf.splitlines()
        last = buf[-1:]
        if last == b"\n" or last == b"\r":
            self._buf = b""
            self._skip_lf = last == b"\r"
        else:
            self._buf = lines.pop() if lines else b""
            if len(self._buf) + self._data_size > self._max:
                self._fail(len(self._buf) + self._data_size)
        events: list[MessageEvent] = []
        for line in lines:
            if not line:
                self._dispatch(events)
                continue
            name, colon, value = line.partition(b":")
            if not name:
                continue  # comment
            if colon and value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                self._data.append(value)
                self._data_size += len(value) + 1
                if self._data_size > self._max:
                    self._fail(self._data_size)
            elif name == b"event":
                self._event_type = value
            elif name == b"id":
                if b"\0" not in value:
                    self._id_buffer = value
            elif name == b"retry":
                if value.isdigit():
                    self.retry = int(value)
            # Any other field name is ignored.
        return events

    def close(self) -> None:
        """End the stream: an unfinished line or event is discarded (never dispatched)."""
        self._closed = True
        self._buf = b""
        self._data = []
        self._data_size = 0

    def _dispatch(self, events: list[MessageEvent]) -> None:
        if self._id_buffer is not None:
            self.last_event_id = self._id_buffer.decode("utf-8", "replace")
            self._id_buffer = None
        if self._data:
            events.append(
                MessageEvent(
                    self._event_type.decode("utf-8", "replace") or "message",
                    b"\n".join(self._data).decode("utf-8", "replace"),
                    self.last_event_id,
                )
            )
            self._data = []
            self._data_size = 0
        self._event_type = b""

    def _fail(self, size: int) -> None:
        self.close()
        raise EventTooLargeError(size, self._max)
