"""Reading a stream's history for a resuming client, exactly or not at all.

Theory of operation: a client resumes after an id; the events it missed are
the stream's entries after that id up to the subscription's boundary. The
read is exact only if nothing between them was trimmed. Trimming removes a
stream's oldest entries first, so it is enough that the entry each page
starts *at* is still there when the page is read: then nothing after it was
trimmed either. "Before the first entry" (``0-0``) is exact only while the
stream never trimmed anything (``entries-added == length``). Anything else
answers ``None``: the client gets the topic's reset event, never a gap.
"""

from __future__ import annotations

from typing import Any

from ._event import Event
from ._redis_streams import START, event_from_entry

__all__ = ["read_range"]


async def read_range(
    client: Any,
    key: str,
    epoch: str,
    first: str,
    last: str,
    *,
    limit: int,
    page_size: int,
    max_entry_size: int,
) -> list[Event] | None:
    """The events of *key* after *first* up to *last*; None if that cannot be exact.

    Also None when more than *limit* events follow *first* (the topic's
    ``history_size``: the same bound as a resume from the local history).
    """
    events: list[Event] = []
    cursor = first
    if first == START:
        import coredis.exceptions

        try:
            info = await client.xinfo_stream(key)
        except coredis.exceptions.ResponseError:
            return []  # no stream: nothing was ever published
        if info["entries-added"] != info["length"]:
            return None
        page = await client.xrange(key, "-", last, count=page_size)
        if not page:
            return []
        cursor = page[0].identifier.decode()
        event = event_from_entry(epoch, cursor, page[0].field_values, max_entry_size)
        if event is not None:
            events.append(event)
    while True:
        page = await client.xrange(key, cursor, last, count=page_size + 1)
        if not page or page[0].identifier.decode() != cursor:
            return None  # trimmed past the client's position
        for entry in page[1:]:
            stream_id = entry.identifier.decode()
            event = event_from_entry(epoch, stream_id, entry.field_values, max_entry_size)
            if event is not None:
                events.append(event)
        if len(events) > limit:
            return None  # further behind than the topic's history_size
        if len(page) <= page_size:
            return events
        cursor = page[-1].identifier.decode()
