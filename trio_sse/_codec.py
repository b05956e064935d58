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

Rule 1, split before decoding: an unfinished line is kept as bytes until its
end arrives, so a multi-byte character split across two feeds decodes
correctly. Complete lines are decoded with U+FFFD replacement, a field value,
a run of lines or a feed's whole events at a time. That equals decoding the
whole stream first, because
the bytes we split on (CR, LF, ``:``, space) are ASCII, and in UTF-8 an ASCII
byte never occurs inside a multi-byte sequence and always ends a malformed one.

Rule 2, one line ending: each feed is rewritten to LF line endings (CRLF -> LF,
then CR -> LF; or, when every CR is part of a CRLF, by deleting the CRs)
before parsing. A CR at the very end of a feed is remembered, so that an LF
opening the next feed does not count as a second line break.

Rule 3, bounded memory: a line (complete or not) plus the data already
buffered for its event may not exceed ``max_event_size``
(:class:`EventTooLargeError`). The bound depends on the stream only, never on
how it was split into feeds. An unfinished line is kept as a list of pieces
and joined once, so a long line arriving in many small feeds costs linear, not
quadratic, time.

Strategy (speed): a Python-level loop per line is what makes pure-Python SSE
parsers slow, so each feed is cut into three parts, and the middle one, the
complete events, which is nearly all of a busy stream, is parsed in bulk:

1. the lines finishing an event begun in an earlier feed, then
2. whole events, from a clean state (:meth:`Decoder._events`), then
3. the complete lines of an event that is still unfinished.

Parts 1 and 3 go through :meth:`Decoder._lines`, which takes a final run of
``data`` lines (the body of a large event) in bulk and gives every other line
to :meth:`Decoder._each_line`, a literal transcription of the spec's line
rules. Part 2 tries, in order:

* *columns*: when every event in it has the same field lines (what one server
  sends, e.g. ``event``/``id``/``data``), line *j* of every event is one
  column, parsed with a few ``str`` operations over the whole column;
* *one regular expression per event* (``_EVENTS``), for events in the usual
  field orders with any number of data lines;
* :meth:`Decoder._lines` for any other event.

Every shortcut is checked to give the result of the line rules (the property
tests also compare the decoder with a naive reference parser).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import repeat
from typing import TYPE_CHECKING, Final, final

from ._errors import EventTooLargeError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = ["DEFAULT_MAX_EVENT_SIZE", "Decoder", "MessageEvent"]

#: Default bound on one line plus the data already buffered for its event, in bytes.
DEFAULT_MAX_EVENT_SIZE: Final = 1024 * 1024

_BOM: Final = b"\xef\xbb\xbf"

# Chromium parses ``retry`` as a 64-bit unsigned integer and ignores a value
# that overflows it; we do the same (int() would also refuse to parse more than
# 4300 digits).
_MAX_RETRY: Final = 2**64 - 1

# One complete event (on decoded, LF-only text, at an event boundary, from a
# clean state), in the field orders encoders use: ours writes comment, event,
# id, retry, data; sse-starlette writes comment, id, event, data, retry. Each
# field pattern captures exactly what the spec's line rules give ("name:", at
# most one space removed, the rest of the line is the value), so a match is
# only a shortcut. The quantifiers are possessive: no line can match two of
# these patterns, so backtracking could never find another match, only waste
# time. An id can be empty, so it has a presence marker: findall() reports an
# absent group as "". Group 10 takes any other event, for the slow path.
_EVENTS: Final = re.compile(
    r"""
    (?:
        (?::[^\n]*+\n)*+                  # comments
        (?:(id:)\x20?+([^\n\x00]*+)\n)?+  # 1, 2: id (with NUL: slow path, which ignores it)
        (?:event:\x20?+([^\n]*+)\n)?+     # 3: event type ("" means "message")
        (?:(id:)\x20?+([^\n\x00]*+)\n)?+  # 4, 5: id after event
        (?:retry:\x20?+([0-9]++)\n)?+     # 6: retry (ASCII digits only)
        data:\x20?+([^\n]*+)\n            # 7: first data line's value
        ((?:data:[^\n]*+\n)*+)            # 8: further data lines, verbatim
        (?:retry:\x20?+([0-9]++)\n)?+     # 9: retry after data
    |
        ((?:[^\n]++\n)++)                 # 10: any other event
    )
    \n++                                  # the blank line(s) that dispatch it
    """,
    re.VERBOSE,
)


@final
@dataclass(frozen=True, slots=True, init=False)
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

    def __init__(self, type: str, data: str, last_event_id: str) -> None:
        # dataclass's __init__ for a frozen class calls object.__setattr__
        # once per field; the slots' own setters are about twice as fast.
        _set_type(self, type)
        _set_data(self, data)
        _set_last_event_id(self, last_event_id)


_set_type: Callable[[MessageEvent, str], None] = MessageEvent.__dict__["type"].__set__
_set_data: Callable[[MessageEvent, str], None] = MessageEvent.__dict__["data"].__set__
_set_last_event_id: Callable[[MessageEvent, str], None] = MessageEvent.__dict__[
    "last_event_id"
].__set__


def _new_events(
    count: int, types: Iterable[str], data: Iterable[str], ids: Iterable[str]
) -> list[MessageEvent]:
    # count MessageEvents, built by loops that run in C: any() drains each
    # map() (the setters return None) without a Python-level loop.
    events = list(map(object.__new__, repeat(MessageEvent, count)))
    any(map(_set_type, events, types))
    any(map(_set_data, events, data))
    any(map(_set_last_event_id, events, ids))
    return events


def _field_values(column: list[str], name: str) -> list[str] | None:
    # The values of lines that all are "name:value" or "name: value" (one
    # space removed, as the spec says), or None if a line is not. The lines
    # are joined with "\n", so "\n" occurs only right before a line start.
    prefix = f"\n{name}:"
    joined = "\n" + "\n".join(column)
    values = joined.split(prefix + " ")  # the usual case: every line has the space
    if len(values) == len(column) + 1:
        del values[0]
        return values
    if joined.count(prefix) != len(column):
        return None
    return joined.replace(prefix + " ", prefix).replace(prefix, "\n")[1:].split("\n")


@final
class Decoder:
    """Incremental, browser-exact event-stream parser.

    Args:
        last_event_id: the last event id to start from (e.g. the one a
            reconnecting client sent as ``Last-Event-ID``). As in Chromium,
            the spec's last event ID buffer starts with it too, so events
            carry it until the stream sends an ``id`` (read literally, the
            spec starts the buffer empty on each connection, and the first
            event would reset the id to ``""``).
        max_event_size: bound, in bytes, on one line plus the data already
            buffered for its event.

    Attributes:
        last_event_id: the id a client would send as ``Last-Event-ID`` if it
            reconnected now (updated when an event ends, per the spec).
        retry: the reconnection time in milliseconds most recently set by a
            ``retry`` field, or ``None``.

    Error handling:
        :meth:`feed` raises only :class:`~trio_sse.EventTooLargeError`; any
        other malformed input is handled the way browsers handle it (invalid
        UTF-8 becomes U+FFFD, unknown fields are ignored, ...). After that
        error the decoder is closed, and events completed earlier in the same
        :meth:`feed` call are not returned.
    """

    __slots__ = (
        "_closed",
        "_data",
        "_data_size",
        "_event_type",
        "_id_buffer",
        "_max",
        "_partial",
        "_partial_size",
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
        # The unfinished line, in pieces (no CR or LF in them).
        self._partial: list[bytes] = []
        self._partial_size = 0
        # The spec's data buffer (entries are joined with LF at dispatch), its
        # size counting one LF per line, the event type buffer, and the last
        # event ID buffer (None: unchanged since the last dispatch).
        self._data: list[bytes] = []
        self._data_size = 0
        self._event_type = b""
        self._id_buffer: bytes | None = None
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
            EventTooLargeError: a line plus the data already buffered for its
                event exceeds ``max_event_size``.
            RuntimeError: the decoder was closed.
        """
        if self._closed:
            raise RuntimeError("Decoder.feed() called after close() or an error")
        if not data:
            return []
        if self._skip_lf:
            # The previous feed ended in CR: an LF now is the rest of a CRLF.
            self._skip_lf = False
            if data[0] == 0x0A:
                data = data[1:]
                if not data:
                    return []
        if self._partial:
            if self._started and b"\n" not in data and b"\r" not in data:
                # Still the same line: keep the piece, join once the line ends.
                self._partial.append(data)
                self._partial_size += len(data)
                if self._partial_size + self._data_size > self._max:
                    self._fail(self._partial_size + self._data_size)
                return []
            self._partial.append(data)
            data = b"".join(self._partial)
            self._partial = []
            self._partial_size = 0
        if not self._started:
            if len(data) < 3 and _BOM.startswith(data):
                self._partial = [data]  # could still become a BOM: wait
                return []
            self._started = True
            if data[:3] == _BOM:
                data = data[3:]
        if b"\r" in data:
            self._skip_lf = data[-1] == 0x0D
            # Usually every CR is part of a CRLF; then deleting the CRs is
            # the rewrite, and much faster than replace().
            lf_only = data.translate(None, b"\r")
            if data.count(b"\r\n") == len(data) - len(lf_only):
                data = lf_only
            else:
                data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")

        events: list[MessageEvent] = []
        end = data.rfind(b"\n") + 1  # just past the last complete line
        pos = 0
        if end and (self._data or self._event_type or self._id_buffer is not None):
            # 1. Lines finishing an event begun in an earlier feed, up to the
            # blank line that dispatches it (which may open this feed).
            if data[0] == 0x0A:
                blank = 0
            else:
                blank = data.find(b"\n\n", 0, end)
                blank = blank + 1 if blank >= 0 else -1
            if blank >= 0:
                self._lines(data[:blank], events)
                self._dispatch(events)
                pos = blank + 1
            else:
                self._lines(data[:end], events)
                pos = end
        if pos < end:
            blank = data.rfind(b"\n\n", pos, end)
            if blank >= 0:
                # 2. Whole events, from a clean state. If they fit in
                # max_event_size, none of their lines can exceed it.
                stop = blank + 2
                if stop - pos <= self._max:
                    self._events(data[pos:stop].decode("utf-8", "replace"), events)
                else:
                    self._lines(data[pos:stop], events)
                pos = stop
            if pos < end:
                # 3. The complete lines of an unfinished event.
                self._lines(data[pos:end], events)
        if end < len(data):
            rest = data[end:]
            self._partial = [rest]
            self._partial_size = len(rest)
            if len(rest) + self._data_size > self._max:
                self._fail(len(rest) + self._data_size)
        return events

    def close(self) -> None:
        """End the stream: an unfinished line or event is discarded (never dispatched)."""
        self._closed = True
        self._partial = []
        self._partial_size = 0
        self._data = []
        self._data_size = 0
        self._event_type = b""
        self._id_buffer = None

    def _events(self, text: str, events: list[MessageEvent]) -> None:
        # Whole events (decoded text ending in a blank line), from a clean
        # state, where blank lines do nothing.
        text = text.lstrip("\n")
        if text and not self._columns(text, events):
            self._matches(text, events)

    def _columns(self, text: str, events: list[MessageEvent]) -> bool:
        # If every event in text has the same field lines, parse line j of
        # all events at once; return False (having done nothing) otherwise.
        if "\0" in text:
            return False  # ids with NUL are ignored: leave that to the line rules
        lines = text.rstrip("\n").split("\n")
        lines.append("")
        width = lines.index("") + 1  # lines per event, with the blank line
        count = len(lines) // width
        if (
            len(lines) != count * width
            or lines.count("") != count
            or lines[width - 1 :: width].count("") != count
        ):
            return False
        types: Iterable[str] | None = None
        ids: list[str] | None = None
        data: list[list[str]] = []
        retry: list[list[str]] = []
        for j in range(width - 1):
            name, colon, _ = lines[j].partition(":")
            if not colon:
                return False  # a field without a value: let the line rules do it
            values = _field_values(lines[j::width], name)
            if values is None:
                return False
            if name == "data":
                data.append(values)
            elif name == "event":
                types = values
            elif name == "id":
                ids = values
            elif name == "retry":
                retry.append(values)
            # A comment (name "") or an unknown field is ignored.
        if not data:
            return False
        if types is None:
            types = repeat("message", count)
        elif "" in types:
            types = [t or "message" for t in types]
        if ids is None:
            ids = [self.last_event_id] * count
        for event_retries in zip(*retry, strict=True):  # event by event, in line order
            for value in event_retries:
                self._set_retry(value.encode())
        if len(data) > 1:
            data = [list(map("\n".join, zip(*data, strict=True)))]
        events += _new_events(count, types, data[0], ids)
        self.last_event_id = ids[-1]
        return True

    def _matches(self, text: str, events: list[MessageEvent]) -> None:
        # Whole events, one _EVENTS match each.
        last_id = self.last_event_id
        append = events.append
        new = object.__new__
        set_type, set_data, set_id = _set_type, _set_data, _set_last_event_id
        for has_id, id1, etype, has_id2, id2, retry, data, more, retry2, other in _EVENTS.findall(
            text
        ):
            if other:
                self.last_event_id = last_id
                self._lines(other.encode(), events, check=False)
                self._dispatch(events)
                last_id = self.last_event_id
                continue
            if has_id2:
                last_id = id2
            elif has_id:
                last_id = id1
            if retry:
                self._set_retry(retry.encode())
            if retry2:  # (after the first: an ignored value keeps the one before)
                self._set_retry(retry2.encode())
            if more:
                data += ("\n" + more).replace("\ndata: ", "\ndata:").replace("\ndata:", "\n")[:-1]
            # MessageEvent(etype or "message", data, last_id), inlined: the
            # call of a class with a Python __init__ is what costs most here.
            event = new(MessageEvent)
            set_type(event, etype or "message")
            set_data(event, data)
            set_id(event, last_id)
            append(event)
        self.last_event_id = last_id

    def _lines(self, chunk: bytes, events: list[MessageEvent], check: bool = True) -> None:
        # Complete lines, each ending in LF. If they end in a run of data
        # lines (the body of a large event), that run is taken in bulk.
        if not (check and self._data_size + len(chunk) > self._max):  # else: find the line
            # Encoders write "data: value". Split on "\ndata: " (only line
            # starts follow an LF): if no LF is left in the pieces after the
            # first but the very last one, they are the run's values, and the
            # first piece is the lines before it (or the run's first line).
            values = chunk.split(b"\ndata: ")
            first = values[0]
            head: bytes | None = None
            if first[:6] == b"data: " and b"\n" not in first:
                values[0] = first[6:]
            else:
                head = first
                del values[0]
            if values:
                values[-1] = values[-1][:-1]
                if b"\n" not in b"".join(values):  # (a memcpy and a memchr)
                    if head is not None:
                        self._each_line(head + b"\n", events, check)
                    self._data_append(b"\n".join(values))
                    return
            # Some data lines without the space ("data:" before an empty
            # line of data, say): drop one space after each "data:", then
            # each "\ndata:" itself.
            if chunk[:5] == b"data:":
                run, lines = 0, b"\n" + chunk
            else:
                run = chunk.find(b"\ndata:") + 1  # the first data line, or 0
                lines = chunk[run - 1 :]
            if lines[:6] == b"\ndata:" and lines.count(b"\ndata:") == lines.count(b"\n") - 1:
                if run:
                    self._each_line(chunk[:run], events, check)
                self._data_append(
                    lines.replace(b"\ndata: ", b"\ndata:").replace(b"\ndata:", b"\n")[1:-1]
                )
                return
        self._each_line(chunk, events, check)

    def _data_append(self, value: bytes) -> None:
        # Lines of data, joined with LF: one data buffer entry.
        self._data.append(value)
        self._data_size += len(value) + 1

    def _each_line(self, chunk: bytes, events: list[MessageEvent], check: bool) -> None:
        # Complete lines, each ending in LF: the spec's rules, line by line.
        lines = chunk.split(b"\n")
        lines.pop()
        for line in lines:
            if check and len(line) + self._data_size > self._max:
                self._fail(len(line) + self._data_size)
            # "If the line is empty (a blank line): Dispatch the event."
            if not line:
                self._dispatch(events)
                continue
            # "If the line starts with a U+003A COLON character (:): Ignore the line."
            # "If the line contains a U+003A COLON character (:): Collect the
            # characters on the line before the first U+003A COLON character
            # (:), and let field be that string. Collect the characters on the
            # line after the first U+003A COLON character (:), and let value be
            # that string. If value starts with a U+0020 SPACE character,
            # remove it from value." Otherwise the whole line is the field
            # name and the value is empty.
            name, _, value = line.partition(b":")
            if not name:
                continue
            if value[:1] == b" ":
                value = value[1:]
            # Field names are compared case-sensitively.
            if name == b"data":
                # "Append the field value to the data buffer, then append a
                # single U+000A LINE FEED (LF) character to the data buffer."
                self._data.append(value)
                self._data_size += len(value) + 1
            elif name == b"event":
                # "Set the event type buffer to the field value."
                self._event_type = value
            elif name == b"id":
                # "If the field value does not contain U+0000 NULL, then set
                # the last event ID buffer to the field value."
                if b"\0" not in value:
                    self._id_buffer = value
            elif name == b"retry":
                self._set_retry(value)
            # "Otherwise: The field is ignored."

    def _set_retry(self, value: bytes) -> None:
        # "If the field value consists of only ASCII digits, then interpret the
        # field value as an integer in base ten, and set the event stream's
        # reconnection time to that integer. Otherwise, ignore the field."
        # bytes.isdigit() is ASCII-only and false for b"" (Chromium instead
        # resets the reconnection time on an empty value; the spec does not).
        if value.isdigit():
            value = value.lstrip(b"0") or b"0"
            if len(value) <= 20 and (retry := int(value)) <= _MAX_RETRY:
                self.retry = retry

    def _dispatch(self, events: list[MessageEvent]) -> None:
        # "Set the last event ID string of the event source to the value of
        # the last event ID buffer." (The buffer is not reset.)
        if self._id_buffer is not None:
            self.last_event_id = self._id_buffer.decode("utf-8", "replace")
            self._id_buffer = None
        # "If the data buffer is an empty string, set the data buffer and the
        # event type buffer to the empty string and return."
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
