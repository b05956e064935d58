"""What one process knows of each topic's stream, and the groups read together."""

from __future__ import annotations

import math
from typing import final

import trio

from ._redis_streams import START, epoch_key, key_slot, stream_key

__all__ = ["Group", "Watch"]


@final
class Watch:
    """What this process knows of one topic's stream."""

    __slots__ = (
        "by_age",
        "epoch",
        "epoch_key",
        "gap_logged",
        "gaps_unlogged",
        "key",
        "last",
        "moved",
        "name",
        "ready",
        "record",
        "slot",
    )

    def __init__(self, name: str, prefix: str, cluster: bool) -> None:
        self.name = name
        self.key = stream_key(prefix, name)
        self.epoch_key = epoch_key(prefix, name)
        self.slot = key_slot(self.key) if cluster else 0
        self.epoch = ""
        self.record = b""  # the epoch key's value this process follows
        self.last = START  # the newest stream id delivered (or the boundary)
        self.ready = trio.Event()
        self.by_age = False  # some local topic of this name trims by age
        self.moved = trio.Event()  # set (and replaced) whenever `last` advances
        self.gap_logged = -math.inf
        self.gaps_unlogged = 0

    @property
    def position(self) -> str:
        return f"{self.epoch}-{self.last}"


@final
class Group:
    """The streams read by one ``XREAD``."""

    __slots__ = ("scope", "watches")

    def __init__(self) -> None:
        self.watches: list[Watch] = []
        self.scope: trio.CancelScope | None = None
