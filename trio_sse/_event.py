"""The :class:`Event` value and its wire encoding.

Strategy: an event is immutable, so its wire bytes are computed once, at
construction, and cached on the instance. Broadcasting one event to thousands
of connections then costs one encode, not thousands. The HTTP/1.1 chunk framing
of those bytes is cached too (lazily), so the raw server writes the same
``bytes`` object to every chunked stream.

Validation happens at construction, so an invalid event never reaches a
connection: WHATWG's event-stream format ends a field at CR or LF, so a
newline in ``event`` or ``id`` would let user input inject fields, and browsers
ignore an ``id`` containing NUL.

Encoding rules (WHATWG HTML, "Interpreting an event stream")::

    event         = *( comment / field ) end-of-line
    comment       = colon *any-char end-of-line
    field         = 1*name-char [ colon [ space ] *any-char ] end-of-line

Every field is written as ``name: value`` (one space), so a value that itself
starts with a space survives: the parser strips exactly one space. Data is
split on CRLF, CR and LF into one ``data:`` line per line, which the parser
joins back with LF; an empty line of data (or of a comment) is written as a
bare ``data:`` (or ``:``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn, final

from ._errors import EventFieldTypeError, InvalidEventError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Event"]

# CRLF first, so that it counts as one line break.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


@final
@dataclass(frozen=True, init=False)
class Event:
    """One server-sent event, immutable, encoded once.

    Args:
        data: the event's data. Any text, including CR, LF and CRLF (each
            becomes its own ``data:`` line; the client sees LF). ``""`` is
            sent as an empty message; ``None`` sends no ``data`` field at all,
            so the client dispatches nothing (useful for ``retry``-only or
            comment-only events).
        event: the event type (``EventSource`` listeners use
            ``addEventListener(type, ...)``); ``None`` means ``"message"``.
        id: the event id, which the browser sends back as ``Last-Event-ID``
            when it reconnects. ``""`` resets the client's last event id.
        retry: reconnection time in milliseconds, a non-negative integer.
        comment: a comment, ignored by clients; keeps idle connections alive
            through proxies. Newlines produce several comment lines.

    Raises:
        InvalidEventError: ``event`` or ``id`` contains CR or LF, ``id``
            contains NUL, or ``retry`` is negative (the message names the
            field). A :class:`ValueError` too.
        EventFieldTypeError: a field has the wrong type. A :class:`TypeError`
            too.

    Example::

        Event("12:00:01", event="clock", id="42")
        Event(comment="keep-alive")
    """

    # Slotted by hand rather than with dataclass(slots=True), so that the
    # cached encodings are plain slots, not fields: dataclasses.fields() and
    # asdict() see the five fields only, and _chunk can stay unset until
    # encode_chunk() is first called.
    __slots__ = ("_chunk", "_wire", "comment", "data", "event", "id", "retry")

    data: str | None
    event: str | None
    id: str | None
    retry: int | None
    comment: str | None
    if TYPE_CHECKING:  # slots, not fields: not annotated at run time
        _wire: bytes
        _chunk: bytes

    def __init__(
        self,
        data: str | None = None,
        event: str | None = None,
        id: str | None = None,
        retry: int | None = None,
        comment: str | None = None,
    ) -> None:
        # Hand-written rather than dataclass's, because this runs once per
        # event sent: that __init__ goes through object.__setattr__ for each
        # field of a frozen class, which costs more than encoding a small
        # event; the slots' own setters are direct. The checks for the common
        # case (an exact str without line breaks) are inlined for the same
        # reason.
        _set_data(self, data)
        _set_event(self, event)
        _set_id(self, id)
        _set_retry(self, retry)
        _set_comment(self, comment)
        if (
            retry is None
            and comment is None
            and type(data) is str
            and type(event) is str
            and type(id) is str
            and data
            and "\n" not in data
            and "\r" not in data
            and "\n" not in event
            and "\r" not in event
            and "\n" not in id
            and "\r" not in id
            and "\0" not in id
        ):
            # The commonest broadcast shape, one line of data with a type and
            # an id, validated above and formatted in one step. Any other
            # shape, or any value that fails a check, takes the general path
            # below, which gives the errors.
            _set_wire(self, f"event: {event}\nid: {id}\ndata: {data}\n\n".encode())
            return
        head = "" if comment is None else _comment_lines(comment)
        if event is not None:
            if type(event) is not str:
                event = _as_str("event", event)
            if "\n" in event or "\r" in event:
                _reject_line_break("event", event)
            head = f"{head}event: {event}\n"
        if id is not None:
            if type(id) is not str:
                id = _as_str("id", id)
            if "\n" in id or "\r" in id:
                _reject_line_break("id", id)
            if "\0" in id:
                raise InvalidEventError(
                    "Event id must not contain NUL (U+0000): browsers ignore such "
                    "an id, so the client could never resume from it"
                )
            head = f"{head}id: {id}\n"
        if retry is not None:
            if type(retry) is not int:
                raise EventFieldTypeError(
                    f"Event retry must be an int (milliseconds), got {type(retry).__name__}"
                )
            if retry < 0:
                raise InvalidEventError(
                    f"Event retry must be a non-negative number of milliseconds, got {retry}"
                )
            head = f"{head}retry: {retry}\n"
        if data is None:
            wire = head + "\n"
        else:
            if type(data) is not str:
                data = _as_str("data", data)
            if "\n" in data or "\r" in data:
                wire = head + _data_lines(data) + "\n"
            elif data:
                wire = f"{head}data: {data}\n\n"
            else:
                wire = head + "data:\n\n"
        _set_wire(self, wire.encode())

    def encode(self) -> bytes:
        """Return the event's exact event-stream bytes (cached, UTF-8)."""
        return self._wire

    def encode_chunk(self) -> bytes:
        """Return :meth:`encode` framed as one HTTP/1.1 chunk (cached).

        The raw server writes these bytes as they are to every chunked stream
        that carries the event.
        """
        try:
            return self._chunk
        except AttributeError:
            wire = self._wire
            chunk = b"%x\r\n%b\r\n" % (len(wire), wire)
            _set_chunk(self, chunk)
            return chunk

    def __reduce__(
        self,
    ) -> tuple[type[Event], tuple[str | None, str | None, str | None, int | None, str | None]]:
        # Pickle and copy the fields; unpickling validates and encodes again.
        return (Event, (self.data, self.event, self.id, self.retry, self.comment))


_set_data: Callable[[Event, str | None], None] = Event.__dict__["data"].__set__
_set_event: Callable[[Event, str | None], None] = Event.__dict__["event"].__set__
_set_id: Callable[[Event, str | None], None] = Event.__dict__["id"].__set__
_set_retry: Callable[[Event, int | None], None] = Event.__dict__["retry"].__set__
_set_comment: Callable[[Event, str | None], None] = Event.__dict__["comment"].__set__
_set_wire: Callable[[Event, bytes], None] = Event.__dict__["_wire"].__set__
_set_chunk: Callable[[Event, bytes], None] = Event.__dict__["_chunk"].__set__


def _data_lines(data: str) -> str:
    # One "data:" line per line of data; the client joins them with LF.
    if "\r" in data:
        data = data.replace("\r\n", "\n").replace("\r", "\n")
    if data[0] != "\n" and data[-1] != "\n" and "\n\n" not in data:
        # No empty line (which gets "data:" without a space): one replace.
        return "data: " + data.replace("\n", "\ndata: ") + "\n"
    return "".join(["data: " + line + "\n" if line else "data:\n" for line in data.split("\n")])


def _comment_lines(comment: str) -> str:
    if type(comment) is not str:
        comment = _as_str("comment", comment)
    return "".join([": " + line + "\n" if line else ":\n" for line in _LINE_BREAK.split(comment)])


def _as_str(name: str, value: object) -> str:
    # A str subclass (e.g. a StrEnum member) is encoded as its str value:
    # its own __str__ or __format__ could return text we did not check.
    if not isinstance(value, str):
        raise EventFieldTypeError(f"Event {name} must be a str, got {type(value).__name__}")
    return str.__str__(value)


def _reject_line_break(name: str, value: str) -> NoReturn:
    raise InvalidEventError(
        f"Event {name} must not contain CR or LF (got {value!r}): a line "
        f"break would end the {name} field and start another one"
    )
