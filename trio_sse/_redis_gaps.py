"""The Redis reader's gap check: was a stream trimmed past what we had read?

Theory of operation
-------------------

Trimming removes a stream's oldest entries first, so if the last entry we
delivered is still there *after* the ``XREAD``, nothing after it was trimmed
before the ``XREAD`` read on from it. If it is gone, the reader fell more
than the stream's length behind and may have missed entries: its
subscribers get the reset event rather than a silent gap
(:func:`trimmed_keys` finds those streams, in one pipeline of ``XRANGE``).

Only full reads need the check: streams trimmed by count keep at least
``stream_min_length >= read_count`` entries, all newer than a trimmed
position, so a read that returned fewer than ``read_count`` entries cannot
have skipped any. Age-trimmed streams are always checked.

A reader that stays behind gaps on every read: :func:`warn_gap` logs at most
one line per topic every ``GAP_LOG_INTERVAL`` seconds (the backplane's
``gaps`` counter has them all).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

import trio

from ._redis_streams import START
from ._redis_watch import Watch

__all__ = ["GAP_LOG_INTERVAL", "trimmed_keys", "warn_gap"]

logger = logging.getLogger("trio_sse.redis")

#: Seconds between two "fell behind" warnings for one topic.
GAP_LOG_INTERVAL: Final = 10.0


async def trimmed_keys(
    client: Any,
    result: dict[bytes, Any],
    streams: dict[str, str],
    *,
    read_count: int,
    by_age: Callable[[str], bool],
) -> list[str]:
    """The keys of the streams whose last read position is gone.

    Args:
        client: the coredis client.
        result: what ``XREAD`` returned (entries by raw key).
        streams: the position each stream was read from, by key.
        read_count: the ``COUNT`` of that ``XREAD``.
        by_age: whether the stream of a key is trimmed by age.
    """
    checks = []
    for raw_key, entries in result.items():
        key = raw_key.decode()
        last = streams[key]
        if last == START:
            continue
        if len(entries) >= read_count or by_age(key):
            checks.append((key, last))
    if not checks:
        return []
    async with client.pipeline(transaction=False) as pipe:
        requests = [(key, pipe.xrange(key, last, last, count=1)) for key, last in checks]
    return [key for key, request in requests if not await request]


def warn_gap(watch: Watch) -> None:
    """Log a gap, at most once per topic every ``GAP_LOG_INTERVAL`` seconds.

    A reader that stays behind gaps on every read: one line per read would
    flood the log. The ``gaps`` counter has them all.
    """
    now = trio.current_time()
    if now < watch.gap_logged + GAP_LOG_INTERVAL:
        watch.gaps_unlogged += 1
        return
    more = f" ({watch.gaps_unlogged} more since the last warning)" if watch.gaps_unlogged else ""
    watch.gap_logged = now
    watch.gaps_unlogged = 0
    logger.warning(
        "Redis backplane: the reader fell behind %s by more than its length; sending reset%s",
        watch.key,
        more,
    )
