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
joins back with LF.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import final

__all__ = ["Event"]

# CRLF first, so that it counts as one line break.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _lines(value: str) -> list[str]:
    return _LINE_BREAK.split(value)


@final
@dataclass(frozen=True, slots=True)
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
        ValueError: ``event`` or ``id`` contains CR or LF, ``id`` contains NUL,
            or ``retry`` is negative (the message names the field).
        TypeError: a field has the wrong type.

    Example::

        Event("12:00:01", event="clock", id="42")
        Event(comment="keep-alive")
    """

    data: str | None = None
    event: str | None = None
    id: str | None = None
    retry: int | None = None
    comment: str | None = None
    _wire: bytes = field(init=False, repr=False, compare=False)
    _chunk: bytes | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        parts: list[str] = []
        if self.comment is not None:
            _check_str("comment", self.comment)
            for line in _lines(self.comment):
                parts.append(f": {line}\n" if line else ":\n")
        if self.event is not None:
            _check_str("event", self.event)
            _check_no_newline("event", self.event)
            parts.append(f"event: {self.event}\n")
        if self.id is not None:
            _check_str("id", self.id)
            _check_no_newline("id", self.id)
            if "\0" in self.id:
                raise ValueError(
                    "Event id must not contain NUL (U+0000): browsers ignore such "
                    "an id, so the client could never resume from it"
                )
            parts.append(f"id: {self.id}\n")
        if self.retry is not None:
            if type(self.retry) is not int:
                raise TypeError(
                    f"Event retry must be an int (milliseconds), got {type(self.retry).__name__}"
                )
            if self.retry < 0:
                raise ValueError(
                    f"Event retry must be a non-negative number of milliseconds, got {self.retry}"
                )
            parts.append(f"retry: {self.retry}\n")
        if self.data is not None:
            _check_str("data", self.data)
            for line in _lines(self.data):
                parts.append(f"data: {line}\n" if line else "data:\n")
        parts.append("\n")
        object.__setattr__(self, "_wire", "".join(parts).encode("utf-8"))

    def encode(self) -> bytes:
        """Return the event's exact event-stream bytes (cached, UTF-8)."""
        return self._wire

    def encode_chunk(self) -> bytes:
        """Return :meth:`encode` framed as one HTTP/1.1 chunk (cached).

        The raw server writes these bytes as they are to every chunked stream
        that carries the event.
        """
        chunk = self._chunk
        if chunk is None:
            wire = self._wire
            chunk = b"%x\r\n%b\r\n" % (len(wire), wire)
            object.__setattr__(self, "_chunk", chunk)
        return chunk


def _check_str(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"Event {name} must be a str, got {type(value).__name__}")


def _check_no_newline(name: str, value: str) -> None:
    if "\r" in value or "\n" in value:
        raise ValueError(
            f"Event {name} must not contain CR or LF (got {value!r}): a line "
            f"break would end the {name} field and start another one"
        )
