"""Several topics on one subscription, and composite resume cursors."""

from __future__ import annotations

import re
import urllib.parse

import pytest
import trio
from brokers import drain, make_broker
from hypothesis import given
from hypothesis import strategies as st

from trio_sse._cursor import escape, format_cursor, parse_cursor, unescape
from trio_sse._event import Event
from trio_sse._options import TopicOptions

CURSOR_CHARS = re.compile(r"[A-Za-z0-9_.\-~:,]*")


def pairs(events: list[Event]) -> list[tuple[str | None, str | None]]:
    return [(e.data, e.id) for e in events]


# -- the format -------------------------------------------------------------------


@given(st.text())
def test_escape_round_trips_and_is_url_safe(text: str) -> None:
    escaped = escape(text)
    assert re.fullmatch(r"[A-Za-z0-9_.\-~]*", escaped)
    assert unescape(escaped) == text


@given(st.dictionaries(st.text(min_size=1), st.text(), min_size=1))
def test_cursor_round_trips(positions: dict[str, str]) -> None:
    cursor = format_cursor(positions.items())
    assert CURSOR_CHARS.fullmatch(cursor)
    # Unchanged by URL quoting that keeps the RFC 3986 query characters.
    assert urllib.parse.quote(cursor, safe=":,~") == cursor
    Event(id=cursor)  # a valid SSE id: no CR, LF or NUL
    assert parse_cursor(cursor) == positions


def test_cursor_examples() -> None:
    assert format_cursor([("prices", "42"), ("news", "7")]) == "prices:42,news:7"
    assert format_cursor([("room/1", "1700-0"), ("ü", "")]) == "room~2F1:1700-0,~C3~BC:"
    assert parse_cursor("room~2F1:1700-0,~C3~BC:") == {"room/1": "1700-0", "ü": ""}


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "a",
        "a:1,",
        ":1",
        "a:1,a:2",
        "a~G1:1",
        "a~zz:1",
        "a~4:1",
        "~FF:1",
        "a:~C3",
        "a:1:2",
        "a b:1",
    ],
)
def test_malformed_cursors(cursor: str) -> None:
    assert parse_cursor(cursor) is None


# -- merged streams -----------------------------------------------------------------


async def test_merged_stream_carries_composite_ids_in_publish_order() -> None:
    broker = make_broker()
    broker.publish_nowait("a", Event("a1"))
    async with broker.subscribe_many(["a", "b"]) as sub:
        assert sub.topics == ("a", "b")
        assert sub.cursor == "a:1,b:"  # b has no event yet: "from its start"
        broker.publish_nowait("b", Event("b1"))
        broker.publish_nowait("a", Event("a2"))
        broker.publish_nowait("b", Event("b2"))
        assert pairs(await sub.receive_batch()) == [
            ("b1", "a:1,b:1"),
            ("a2", "a:2,b:1"),
            ("b2", "a:2,b:2"),
        ]
        assert sub.cursor == "a:2,b:2"
        broker.publish_nowait("a", Event("a3"))
        assert pairs([await sub.receive()]) == [("a3", "a:3,b:2")]


async def test_resuming_a_composite_cursor_resumes_every_topic_exactly() -> None:
    broker = make_broker()
    async with broker.subscribe_many(["a", "b"]) as sub:
        broker.publish_nowait("a", Event("a1"))
        broker.publish_nowait("b", Event("b1"))
        last = drain(sub)[-1].id
    assert last == "a:1,b:1"
    broker.publish_nowait("b", Event("b2"))
    broker.publish_nowait("a", Event("a2"))
    broker.publish_nowait("b", Event("b3"))
    async with broker.subscribe_many(["a", "b"], last) as sub:
        assert sub.replayed == 3
        assert not sub.reset
        broker.publish_nowait("a", Event("a3"))
        assert pairs(drain(sub)) == [
            ("b2", "a:1,b:2"),
            ("a2", "a:2,b:2"),
            ("b3", "a:2,b:3"),
            ("a3", "a:3,b:3"),
        ]


async def test_from_start_position_replays_the_whole_topic_or_resets() -> None:
    broker = make_broker(TopicOptions(history_size=2))
    async with broker.subscribe_many(["a", "b"]) as sub:
        start = sub.cursor
    assert start == "a:,b:"
    broker.publish_nowait("b", Event("b1"))
    broker.publish_nowait("b", Event("b2"))
    async with broker.subscribe_many(["a", "b"], start) as sub:
        assert pairs(drain(sub)) == [("b1", "a:,b:1"), ("b2", "a:,b:2")]
    broker.publish_nowait("b", Event("b3"))  # b1 leaves the history
    async with broker.subscribe_many(["a", "b"], start) as sub:
        events = drain(sub)
    assert events == [Event(event="reset", data="b", id="a:,b:3")]


async def test_one_expired_topic_resets_alone_and_first() -> None:
    broker = make_broker()
    broker.declare("short", TopicOptions(history_size=1))
    for i in range(3):
        broker.publish_nowait("long", Event(f"l{i + 1}"))
        broker.publish_nowait("short", Event(f"s{i + 1}"))
    async with broker.subscribe_many(["long", "short"], "long:1,short:1") as sub:
        assert sub.reset
        assert pairs(drain(sub)) == [
            ("short", "long:1,short:3"),  # the reset event
            ("l2", "long:2,short:3"),
            ("l3", "long:3,short:3"),
        ]
    stats = broker.stats()
    assert (stats["short"].resets, stats["long"].resets, stats["long"].replayed) == (1, 0, 2)


@pytest.mark.parametrize("cursor", ["garbage", "a:1,a:2", "7", ":"])
async def test_malformed_cursor_resets_every_topic_then_goes_live(cursor: str) -> None:
    broker = make_broker()
    broker.publish_nowait("a", Event("a1"))
    async with broker.subscribe_many(["a", "b"], cursor) as sub:
        assert sub.reset
        broker.publish_nowait("b", Event("b1"))
        assert pairs(drain(sub)) == [
            ("a", "a:1,b:"),
            ("b", "a:1,b:"),
            ("b1", "a:1,b:1"),
        ]


async def test_topics_missing_from_the_cursor_start_live_and_extra_ones_are_ignored() -> None:
    broker = make_broker()
    broker.publish_nowait("a", Event("a1"))
    broker.publish_nowait("a", Event("a2"))
    broker.publish_nowait("b", Event("b1"))
    async with broker.subscribe_many(["a", "b"], "a:1,zzz:9") as sub:
        assert not sub.reset
        assert pairs(drain(sub)) == [("a2", "a:2,b:1")]


@given(st.text(max_size=30))
def test_arbitrary_cursors_never_crash(cursor: str) -> None:
    async def main() -> None:
        broker = make_broker()
        broker.publish_nowait("a", Event("a1"))
        broker.publish_nowait("b", Event("b1"))
        async with broker.subscribe_many(["a", "b"], cursor) as sub:
            events = drain(sub)
        for event in events:
            assert event.event == "reset" or event.data in ("a1", "b1")
        assert all(parse_cursor(e.id or "") for e in events)

    trio.run(main)


async def test_odd_topic_names_round_trip() -> None:
    broker = make_broker()
    names = ["room/1", "a:b,c", "ü", "~"]
    async with broker.subscribe_many(names) as sub:
        for name in names:
            broker.publish_nowait(name, Event(name))
        last = drain(sub)[-1].id
    assert last is not None
    assert CURSOR_CHARS.fullmatch(last)
    assert parse_cursor(last) == dict.fromkeys(names, "1")
    for name in names:
        broker.publish_nowait(name, Event(name + "!"))
    async with broker.subscribe_many(names, last) as sub:
        assert [e.data for e in drain(sub)] == [n + "!" for n in names]


async def test_subscribers_at_the_same_position_share_one_rewritten_event() -> None:
    broker = make_broker()
    async with broker.subscribe_many(["a", "b"]) as one, broker.subscribe_many(["a", "b"]) as two:
        broker.publish_nowait("a", Event("x"))
        first, second = one.receive_nowait(), two.receive_nowait()
        assert first is second
    async with broker.subscribe_many(["a", "b"], "a:1,b:") as late:
        broker.publish_nowait("b", Event("y"))
        assert late.receive_nowait().id == "a:1,b:1"


async def test_a_single_merged_topic_and_errors() -> None:
    broker = make_broker()
    async with broker.subscribe_many(["a"]) as sub:
        broker.publish_nowait("a", Event("x"))
        assert sub.receive_nowait().id == "a:1"
    with pytest.raises(ValueError, match="at least one"):
        broker.subscribe_many([])
    with pytest.raises(ValueError, match="duplicate"):
        broker.subscribe_many(["a", "b", "a"])
