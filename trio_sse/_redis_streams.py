"""Sans-IO pieces of the Redis Streams backplane: keys, ids, entry format.

No trio and no coredis here: these functions turn topic names into keys,
events into stream entries and back, and parse the ids that browsers send.

Entry format (what any producer, in any language, may ``XADD``)::

    XADD trio-sse:{prices} * data '{"AAPL": 187.2}' event price

Fields, all optional but at least one must be there:

* ``data``: the event's data (may contain newlines; UTF-8);
* ``event``: the event type (no CR/LF);
* ``retry``: the reconnection time in ms (ASCII digits);
* ``comment``: a comment line (``: ...``) sent before the event;
* ``epoch``: written by trio-sse itself on the first entry of each publishing
  batch; other producers must not set it.

Unknown fields are ignored. An entry that cannot be an event (invalid UTF-8,
a CR in ``event``, non-digits in ``retry``, no field at all, more than
``max_entry_size`` bytes) is skipped by every process alike, counted as
``malformed`` and logged.

Ids: the SSE id of an entry is ``f"{epoch}-{stream id}"``, e.g.
``3f9a0c1e-1732960000000-0``: the stream id one-to-one, behind the stream's
epoch (Rule 3 of the backplane).
"""

from __future__ import annotations

import re
from typing import Final

from ._event import Event

__all__ = [
    "ENSURE_EPOCH",
    "NEW_EPOCH",
    "START",
    "XADD_TAGGED",
    "epoch_key",
    "event_from_entry",
    "fields_for",
    "key_slot",
    "order_key",
    "parse_record",
    "split_id",
    "stream_key",
    "stream_order",
]

_ID: Final = re.compile(r"([0-9a-f]{1,32})-([0-9]{1,20})-([0-9]{1,20})")
#: The position before a stream's first entry.
START: Final = "0-0"


def stream_key(prefix: str, topic: str) -> str:
    """The stream key of *topic*: ``{prefix}{topic}`` with a hash tag.

    The braces make the topic name the Redis Cluster hash tag, so a topic's
    stream and its epoch key share a slot, and different topics spread over
    the cluster.
    """
    return f"{prefix}{{{topic}}}"


def epoch_key(prefix: str, topic: str) -> str:
    """The key holding *topic*'s current epoch (same slot as its stream)."""
    return stream_key(prefix, topic) + ":epoch"


def split_id(event_id: str) -> tuple[str, str] | None:
    """``"<epoch>-<ms>-<seq>"`` -> ``(epoch, "<ms>-<seq>")``; None if malformed."""
    match = _ID.fullmatch(event_id)
    if match is None:
        return None
    return match[1], f"{match[2]}-{match[3]}"


def stream_order(stream_id: str) -> tuple[int, int]:
    """A stream id as a sortable pair."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def order_key(event_id: str) -> tuple[int, int]:
    """Publish-time order of an SSE id of this backplane; (0, 0) if foreign."""
    parts = split_id(event_id)
    return (0, 0) if parts is None else stream_order(parts[1])


def fields_for(event: Event) -> list[str]:
    """The entry's field/value pairs, flat, for ``XADD``.

    Raises:
        ValueError: the event carries an id (the stream assigns ids) or
            nothing to send.
    """
    if event.id:
        raise ValueError(
            "the Redis backplane assigns ids (the stream entry id); publish events without an id"
        )
    fields: list[str] = []
    if event.data is not None:
        fields += ("data", event.data)
    if event.event is not None:
        fields += ("event", event.event)
    if event.retry is not None:
        fields += ("retry", str(event.retry))
    if event.comment is not None:
        fields += ("comment", event.comment)
    if not fields:
        raise ValueError("an event needs data, an event type, a retry or a comment")
    return fields


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8")


def event_from_entry(
    epoch: str, stream_id: str, fields: dict[bytes, bytes], max_size: int = 1 << 20
) -> Event | None:
    """The event of a stream entry, or None if the entry cannot be one.

    An entry whose fields add up to more than *max_size* bytes is not one
    either: a producer outside the app must not make every process push a
    100 MB event to every subscriber.
    """
    if sum(len(key) + len(value) for key, value in fields.items()) > max_size:
        return None
    try:
        data = _text(fields.get(b"data"))
        kind = _text(fields.get(b"event"))
        comment = _text(fields.get(b"comment"))
        raw_retry = fields.get(b"retry")
        retry = None
        if raw_retry is not None:
            if not (raw_retry.isdigit() and len(raw_retry) <= 19):
                return None
            retry = int(raw_retry)
        if data is None and kind is None and comment is None and retry is None:
            return None
        return Event(data=data, event=kind, id=f"{epoch}-{stream_id}", retry=retry, comment=comment)
    except (UnicodeDecodeError, ValueError, TypeError):
        return None


# -- epochs ----------------------------------------------------------------------

# Epoch records. The epoch key holds "<epoch> <start>": the epoch and the
# stream id before its first entry (the stream's newest id when the epoch was
# made, or the newest one a reader had delivered; "0-0" for none). Every
# process derives the reset position "<epoch>-<start>" from it, so they all
# send the same reset id.
ENSURE: Final = """
local function ensure(ekey, skey, candidate, upto)
  local record = redis.call('GET', ekey)
  if record then return record end
  local newest = redis.call('XREVRANGE', skey, upto, '-', 'COUNT', 1)
  local start = '0-0'
  if #newest > 0 then start = newest[1][1] end
  record = candidate .. ' ' .. start
  redis.call('SET', ekey, record)
  return record
end
"""

# KEYS: stream, epoch key. ARGV: candidate epoch. Returns the record in force.
ENSURE_EPOCH: Final = ENSURE + "return ensure(KEYS[2], KEYS[1], ARGV[1], '+')"

# KEYS: stream, epoch key. ARGV: candidate epoch, trim strategy, threshold,
# field/value pairs. Adds the entry tagged with the record; returns
# {record, entry id}.
XADD_TAGGED: Final = (
    ENSURE
    + """
local record = ensure(KEYS[2], KEYS[1], ARGV[1], '+')
local args = {KEYS[1], ARGV[2], '~', ARGV[3], '*', 'epoch', record}
for i = 4, #ARGV do args[#args + 1] = ARGV[i] end
return {record, redis.call('XADD', unpack(args))}
"""
)

# KEYS: stream, epoch key. ARGV: the record that lost data, a candidate, the
# last id the caller delivered. Makes a new epoch only if the lost one is
# still in force (or none is), so the processes that notice the same loss
# agree on one; it starts after the newest entry the caller had seen (entries
# after that are new). Returns the record in force.
NEW_EPOCH: Final = (
    ENSURE
    + """
local record = redis.call('GET', KEYS[2])
if record and record ~= ARGV[1] then return record end
redis.call('DEL', KEYS[2])
return ensure(KEYS[2], KEYS[1], ARGV[2], ARGV[3])
"""
)


def parse_record(record: bytes) -> tuple[str, str]:
    """``b"<epoch> <start>"`` -> (epoch, start); a bare epoch starts at 0-0."""
    epoch, _, start = record.decode("ascii", "replace").partition(" ")
    return epoch, start or START


# -- Redis Cluster hash slots (CRC16/XMODEM of the hash tag, mod 16384) ----------

_CRC16: Final = []
for _byte in range(256):
    _crc = _byte << 8
    for _ in range(8):
        _crc = ((_crc << 1) ^ 0x1021) if _crc & 0x8000 else (_crc << 1)
    _CRC16.append(_crc & 0xFFFF)


def key_slot(key: str) -> int:
    """The Redis Cluster slot of *key* (hash tags honoured)."""
    raw = key.encode("utf-8")
    start = raw.find(b"{")
    if start != -1:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    crc = 0
    for byte in raw:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[((crc >> 8) ^ byte) & 0xFF]
    return crc % 16384
