"""Event ids and composite cursors: pure string functions (sans-IO, no trio).

Strategy: a subscription to several topics gives each event an id that holds
the position in every topic, so that one ``Last-Event-ID`` resumes all of
them. This module is the format of those ids; the per-event rewriting (and its
cache) lives in :mod:`trio_sse._resume`.

Format: ``"name:position,name:position,…"`` in subscription order, e.g.
``"prices:42,news:7"``. Names and positions keep ``A-Z a-z 0-9 _ . -`` as they
are; every other character is written as ``~`` plus two upper-case hex digits
per UTF-8 byte (``"room/1"`` -> ``"room~2F1"``). The result uses only
unreserved URL characters plus ``:`` and ``,``, which RFC 3986 allows
unescaped in a query, so it survives a ``?lastEventId=`` parameter, a
``Last-Event-ID`` header and an SSE ``id`` field. An empty position means
"before the topic's first event".
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from ._event import Event

__all__ = ["cursor_part", "escape", "format_cursor", "parse_cursor", "unescape", "with_id"]

_SAFE: Final = re.compile(r"[A-Za-z0-9_.\-]*")
_ESCAPED: Final = re.compile(r"(?:[A-Za-z0-9_.\-]|~[0-9A-F]{2})*")


def with_id(event: Event, event_id: str) -> Event:
    """Return a copy of *event* with another id (events are immutable).

    Spelled out rather than ``dataclasses.replace``: it is on the publish path
    and cheaper, and it does not depend on how :class:`Event` stores its
    cached encodings. tests/test_topics.py fails if Event grows a field.
    """
    return Event(
        data=event.data, event=event.event, id=event_id, retry=event.retry, comment=event.comment
    )


def escape(text: str) -> str:
    """Escape a topic name or position for a composite cursor."""
    if _SAFE.fullmatch(text):
        return text
    out: list[str] = []
    for char in text:
        if _SAFE.fullmatch(char):
            out.append(char)
        else:
            out.extend(f"~{byte:02X}" for byte in char.encode("utf-8"))
    return "".join(out)


def unescape(text: str) -> str | None:
    """Undo :func:`escape`; ``None`` if *text* is not a valid escaped string."""
    if "~" not in text:
        return text if _SAFE.fullmatch(text) else None
    if not _ESCAPED.fullmatch(text):
        return None
    raw = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "~":
            raw.append(int(text[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.append(ord(text[i]))
            i += 1
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def cursor_part(name: str, position: str) -> str:
    """One ``name:position`` item of a composite cursor."""
    return f"{escape(name)}:{escape(position)}"


def format_cursor(positions: Iterable[tuple[str, str]]) -> str:
    """Encode (topic name, event id) pairs as a composite cursor."""
    return ",".join(cursor_part(name, pos) for name, pos in positions)


def parse_cursor(cursor: str) -> dict[str, str] | None:
    """Decode a composite cursor; ``None`` if it is malformed."""
    positions: dict[str, str] = {}
    for item in cursor.split(","):
        name_part, sep, pos_part = item.partition(":")
        if not sep:
            return None
        name = unescape(name_part)
        pos = unescape(pos_part)
        if not name or pos is None or name in positions:
            return None
        positions[name] = pos
    return positions
