"""Table tests for :class:`trio_sse.Decoder`: every WHATWG event-stream rule.

Each case is one stream and the events a browser dispatches for it. ``check``
feeds it whole, byte by byte, split in two at every position, with empty feeds
in between, and with an unfinished trailing line; all must give the same
events (the h11 ``tr`` pattern). Cases named ``wpt-*`` transcribe the
web-platform-tests ``eventsource/format-*`` tests; the others quote the rule
from HTML's "Interpreting an event stream" that they exercise.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from trio_sse import (
    DEFAULT_MAX_EVENT_SIZE,
    Decoder,
    Event,
    EventTooLargeError,
    MessageEvent,
    RemoteProtocolError,
    SSEError,
)

UNSET = object()


def ev(data: str, type: str = "message", last_event_id: str = "") -> MessageEvent:
    return MessageEvent(type, data, last_event_id)


@dataclass
class Case:
    id: str
    stream: bytes
    events: list[MessageEvent]
    retry: int | None = None
    last_event_id: str | None = None  # the decoder's, at the end; None: don't check
    kwargs: dict[str, object] = field(default_factory=dict)
    error: bool = False  # EventTooLargeError after (a prefix of) events


def splits(stream: bytes) -> Iterator[tuple[str, list[bytes]]]:
    yield "whole", [stream]
    yield "byte by byte", [stream[i : i + 1] for i in range(len(stream))]
    half = len(stream) // 2
    yield "with empty feeds", [b"", stream[:half], b"", stream[half:], b""]
    for i in range(1, len(stream)):
        yield f"split at {i}", [stream[:i], stream[i:]]


def run(chunks: list[bytes], **kwargs: object) -> tuple[list[MessageEvent], Decoder]:
    decoder = Decoder(**kwargs)  # type: ignore[arg-type]
    events: list[MessageEvent] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events, decoder


def check(case: Case) -> None:
    for how, chunks in splits(case.stream):
        for trailing in (b"", b"da"):  # short: some cases have a tiny limit
            label = f"{case.id}: {how}{' + trailing data' if trailing else ''}"
            if case.error:
                decoder = Decoder(**case.kwargs)  # type: ignore[arg-type]
                got: list[MessageEvent] = []
                with pytest.raises(EventTooLargeError):  # noqa: PT012
                    for chunk in [*chunks, trailing]:
                        got += decoder.feed(chunk)
                # Events completed in the feed that fails are not returned.
                assert got == case.events[: len(got)], label
                continue
            events, decoder = run([*chunks, trailing], **case.kwargs)
            assert events == case.events, label
            assert decoder.retry == case.retry, label
            if case.last_event_id is not None:
                assert decoder.last_event_id == case.last_event_id, label
            decoder.close()


CASES = [
    # -- The byte order mark ------------------------------------------------
    # "The stream must then be parsed by reading everything line by line ...
    # [UTF-8 decode] strips one leading UTF-8 Byte Order Mark (BOM), if any."
    Case("bom", b"\xef\xbb\xbfdata: 1\n\n", [ev("1")]),
    Case("bom alone", b"\xef\xbb\xbf", []),
    Case("bom then blank", b"\xef\xbb\xbf\n\ndata: 1\n\n", [ev("1")]),
    # Only at stream start: later it is part of a field name ("\ufeffdata").
    Case(
        "wpt-format-bom",
        b"\xef\xbb\xbfdata:1\n\n\xef\xbb\xbfdata:2\n\ndata:3\n\n",
        [ev("1"), ev("3")],
    ),
    # Only one: a second BOM makes the first field name "\ufeffdata".
    Case(
        "wpt-format-bom-2",
        b"\xef\xbb\xbf\xef\xbb\xbfdata:1\n\ndata:2\n\ndata:3\n\n",
        [ev("2"), ev("3")],
    ),
    # Half a BOM is invalid UTF-8: one U+FFFD, so the field is "\ufffddata".
    Case("half a bom", b"\xef\xbbdata: 1\n\ndata: 2\n\n", [ev("2")]),
    # -- Line endings -------------------------------------------------------
    # "Lines must be separated by either a U+000D CARRIAGE RETURN U+000A LINE
    # FEED (CRLF) character pair, a single U+000A LINE FEED (LF) character, or
    # a single U+000D CARRIAGE RETURN (CR) character."
    Case("lf", b"data: a\ndata: b\n\n", [ev("a\nb")]),
    Case("cr", b"data: a\rdata: b\r\r", [ev("a\nb")]),
    Case("crlf", b"data: a\r\ndata: b\r\n\r\n", [ev("a\nb")]),
    Case("crlf counts once", b"data: a\r\n\r\ndata: b\r\n\r\n", [ev("a"), ev("b")]),
    Case("cr cr is a blank line", b"data: a\r\rdata: b\r\r", [ev("a"), ev("b")]),
    Case("lf cr is a blank line", b"data: a\n\rdata: b\n\r", [ev("a"), ev("b")]),
    Case("mixed", b"data: a\rdata: b\ndata: c\r\n\ndata: d\r\r\n", [ev("a\nb\nc"), ev("d")]),
    Case(
        "wpt-format-newlines",
        b"data:test\r\ndata\ndata:test\r\n\r",
        [ev("test\n\ntest")],
    ),
    # Only CR and LF end lines: not VT, FF, NEL, LS, PS, or FS/GS/RS.
    Case(
        "other line breaks are data",
        "data: a\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029b\n\n".encode(),
        [ev("a\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029b")],
    ),
    # -- Comments -----------------------------------------------------------
    # "If the line starts with a U+003A COLON character (:) Ignore the line."
    Case("comment", b": hello\ndata: a\n: world\n\n", [ev("a")]),
    Case("comment only", b": keep-alive\n\n", []),
    Case("bare colon", b":\ndata: a\n\n", [ev("a")]),
    Case("comment looks like a field", b":data: a\n\n", []),
    Case(
        "wpt-format-comments",
        b"data:1\r:\x00\n:\r\ndata:2\n:"
        + b"x" * 50
        + b"\rdata:3\n:data:fail\r:"
        + b"x" * 50
        + b"\ndata:4\n\n",
        [ev("1\n2\n3\n4")],
    ),
    # -- Fields: name, colon, value -----------------------------------------
    # "Collect the characters on the line before the first U+003A COLON
    # character (:), and let field be that string. Collect the characters on
    # the line after the first U+003A COLON character (:), and let value be
    # that string. If value starts with a U+0020 SPACE character, remove it
    # from value."
    Case("first colon splits", b"data: a: b:c\n\n", [ev("a: b:c")]),
    Case("no space", b"data:a\n\n", [ev("a")]),
    Case("one space removed", b"data:  a\n\n", [ev(" a")]),
    Case("wpt-format-leading-space", b"data:\x20\x20\x20test\n\n", [ev("  test")]),
    Case("trailing space kept", b"data: a \n\n", [ev("a ")]),
    Case("tab kept", b"data:\ta\n\n", [ev("\ta")]),
    Case("space before colon", b"data : a\n\n", []),
    Case("space before name", b" data: a\n\n", []),
    # "Otherwise, the string is not empty but does not contain a U+003A COLON
    # character (:) ... using the whole line as the field name, and the empty
    # string as the field value."
    Case("no colon: empty value", b"data\n\n", [ev("")]),
    Case("no colon twice", b"data\ndata\n\n", [ev("\n")]),
    Case(
        "wpt-format-field-data",
        b"data:\n\ndata\ndata\n\ndata:test\n\n",
        [ev(""), ev("\n"), ev("test")],
    ),
    Case("no colon: event", b"event: x\nevent\ndata: a\n\n", [ev("a")]),
    Case(
        "no colon: id", b"id: 1\ndata: a\n\nid\ndata: b\n\n", [ev("a", last_event_id="1"), ev("b")]
    ),
    # Field names are case-sensitive ("If the field name is "data"").
    Case("case-sensitive", b"Data: a\nDATA: b\n\n", []),
    Case(
        "case-sensitive fields",
        b"EVENT: x\nID: 1\nRetry: 5\ndata: a\n\n",
        [ev("a")],
        last_event_id="",
    ),
    # "Otherwise: The field is ignored."
    Case("unknown field", b"foo: bar\ndata: a\nbaz\n\n", [ev("a")]),
    Case("unknown field only", b"foo: bar\n\n", []),
    # -- data and dispatch --------------------------------------------------
    # "Append the field value to the data buffer, then append a single
    # U+000A LINE FEED (LF) character"; at dispatch "If the data buffer's last
    # character is a U+000A LINE FEED (LF) character, then remove [it]."
    Case("multi-line data", b"data: a\ndata:\ndata: b\n\n", [ev("a\n\nb")]),
    Case("empty data", b"data:\n\n", [ev("")]),
    Case("data ending in newline", b"data: a\ndata:\n\n", [ev("a\n")]),
    Case("several blank lines", b"\n\n\ndata: a\n\n\n\ndata: b\n\n\n", [ev("a"), ev("b")]),
    # "If the data buffer is an empty string, set the data buffer and the
    # event type buffer to the empty string and return."
    Case("no data: nothing dispatched", b"event: x\n\n", []),
    Case("no data resets the event type", b"event: x\n\ndata: a\n\n", [ev("a")]),
    Case(
        "wpt-format-field-event", b"event: test\ndata: x\n\ndata: y\n\n", [ev("x", "test"), ev("y")]
    ),
    Case("wpt-format-field-event-empty", b"event: \ndata:data\n\n", [ev("data")]),
    Case("event type last wins", b"event: a\nevent: b\ndata: x\n\n", [ev("x", "b")]),
    Case(
        "event type reset after dispatch",
        b"event: a\ndata: x\n\ndata: y\n\n",
        [ev("x", "a"), ev("y")],
    ),
    Case("event type utf-8", b"event: \xc3\xa9t\xc3\xa9\ndata: x\n\n", [ev("x", "\xe9t\xe9")]),
    # -- id -----------------------------------------------------------------
    # "If the field value does not contain U+0000 NULL, then set the last
    # event ID buffer to the field value. Otherwise, ignore the field."
    Case(
        "id with NUL ignored",
        b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n",
        [ev("a", last_event_id="1"), ev("b", last_event_id="1")],
        last_event_id="1",
    ),
    Case("id only NUL ignored", b"id: \x00\x00\ndata: a\n\n", [ev("a")], last_event_id=""),
    # The buffer "does not get reset, so the last event ID string of the event
    # source remains set to this value until the next time it is set".
    Case(
        "wpt-format-field-id-3 persists",
        b"id: 1\ndata: 1\n\ndata:2\n\n",
        [ev("1", last_event_id="1"), ev("2", last_event_id="1")],
        last_event_id="1",
    ),
    Case(
        "wpt-format-field-id-3 changes and persists",
        b"id: 1\ndata: 1\n\nid: 2\ndata:2\n\ndata:3\n\n",
        [ev("1", last_event_id="1"), ev("2", last_event_id="2"), ev("3", last_event_id="2")],
        last_event_id="2",
    ),
    Case(
        "wpt-format-field-id-3 resets",
        b"id: 1\ndata: 1\n\nid:\ndata:2\n\ndata:3\n\n",
        [ev("1", last_event_id="1"), ev("2"), ev("3")],
        last_event_id="",
    ),
    Case("id after data", b"data: a\nid: 7\n\n", [ev("a", last_event_id="7")]),
    Case("id last wins", b"id: 1\nid: 2\ndata: a\n\n", [ev("a", last_event_id="2")]),
    Case("id utf-8", b"id: \xe2\x80\xa6\ndata: a\n\n", [ev("a", last_event_id="\u2026")]),
    Case("id invalid utf-8", b"id: \xff\ndata: a\n\n", [ev("a", last_event_id="\ufffd")]),
    # The last event ID string is set when an event is dispatched, even one
    # with no data, and not before.
    Case(
        "id without data still updates",
        b"id: 5\n\ndata: a\n\n",
        [ev("a", last_event_id="5")],
        last_event_id="5",
    ),
    Case(
        "id pending until blank line", b"data: a\n\nid: 9\ndata: b\n", [ev("a")], last_event_id=""
    ),
    Case(
        "wpt-format-data-before-final-empty-line",
        b"retry:1000\ndata:test1\n\nid:test\ndata:test2",
        [ev("test1")],
        retry=1000,
        last_event_id="",
    ),
    Case(
        "initial last event id",
        b"data: a\n\nid: 2\ndata: b\n\n",
        [ev("a", last_event_id="start"), ev("b", last_event_id="2")],
        last_event_id="2",
        kwargs={"last_event_id": "start"},
    ),
    # -- retry --------------------------------------------------------------
    # "If the field value consists of only ASCII digits, then interpret the
    # field value as an integer in base ten, and set the event stream's
    # reconnection time to that integer. Otherwise, ignore the field."
    Case("retry", b"retry: 1000\n", [], retry=1000),
    Case("retry no space", b"retry:7\n", [], retry=7),
    Case("retry zero", b"retry: 0\n", [], retry=0),
    Case("wpt-format-field-retry leading zero", b"retry:02000\ndata:x\n\n", [ev("x")], retry=2000),
    Case(
        "wpt-format-field-retry-bogus",
        b"retry:2000\nretry:1000x\ndata:x\n\n",
        [ev("x")],
        retry=2000,
    ),
    Case("retry last valid wins", b"retry: 1\nretry: 2\nretry: x\n\n", [], retry=2),
    Case(
        "retry with data",
        b"retry: 5\ndata: a\n\ndata: b\nretry: 6\n\n",
        [ev("a"), ev("b")],
        retry=6,
    ),
    Case("retry 2**64-1", b"retry: 18446744073709551615\n", [], retry=2**64 - 1),
    Case("retry many zeros", b"retry: " + b"0" * 30 + b"12\n", [], retry=12),
    *(
        Case(f"retry ignored: {value!r}", b"retry: 3\nretry:" + value + b"\n\n", [], retry=3)
        for value in [
            b"",  # empty: not "only ASCII digits" (Chromium resets to its default)
            b" ",
            b"  1",  # one space is removed, the second is not a digit
            b"+1",
            b"-1",
            b"1a",
            b"1.5",
            b"1_000",
            b"1e3",
            b"0x10",
            "\u0661\u0662".encode(),  # ARABIC-INDIC DIGITs: isdigit(), not ASCII
            "\uff11".encode(),  # FULLWIDTH DIGIT ONE
            "\u00b2".encode(),  # SUPERSCRIPT TWO
            b"18446744073709551616",  # overflows 64 bits: ignored, as Chromium does
            b"9" * 30,
        ]
    ),
    Case("retry without colon", b"retry: 3\nretry\n", [], retry=3),
    # An ignored value does not undo an earlier one, in any field order.
    Case(
        "retry ignored after a valid one",
        b": not all events alike\n\nretry: 5\ndata: x\nretry: 18446744073709551616\n\n",
        [ev("x")],
        retry=5,
    ),
    Case(
        "retry ignored after valid ones, same fields",
        b"retry: 1\ndata: x\nretry: 2\n\nretry: 3\ndata: y\nretry: 99999999999999999999\n\n",
        [ev("x"), ev("y")],
        retry=3,
    ),
    # -- UTF-8 --------------------------------------------------------------
    # "The stream must then be parsed by ... the UTF-8 decode algorithm"
    # (errors become U+FFFD, the maximal subpart of a malformed sequence each).
    Case("wpt-format-utf-8", b"data:ok\xe2\x80\xa6\n\n", [ev("ok\u2026")]),
    Case("4-byte utf-8", b"data: \xf0\x9f\x98\x80\n\n", [ev("\U0001f600")]),
    Case("invalid bytes", b"data: \xff\xfeA\n\n", [ev("\ufffd\ufffdA")]),
    Case("truncated sequence", b"data: \xe2\x80\n\n", [ev("\ufffd")]),
    Case("truncated sequence before colon", b"data\xe2\x80: a\n\ndata: b\n\n", [ev("b")]),
    Case("overlong", b"data: \xc0\xaf\n\n", [ev("\ufffd\ufffd")]),
    Case("surrogate", b"data: \xed\xa0\x80\n\n", [ev("\ufffd\ufffd\ufffd")]),
    Case("above U+10FFFF", b"data: \xf4\x90\x80\x80\n\n", [ev("\ufffd" * 4)]),
    Case("wpt-format-null-character", b"data:\x00\n\n", [ev("\x00")]),
    # -- Ends of stream -----------------------------------------------------
    # "Once the end of the file is reached, any pending data must be
    # discarded. (If the file ends in the middle of an event, before the final
    # empty line, the incomplete event is not dispatched.)"
    Case("unfinished event", b"data: a\n\ndata: b\n", [ev("a")]),
    Case("unfinished line", b"data: a\n\ndata: b", [ev("a")]),
    Case("unfinished after cr", b"data: a\r\rdata: b\r", [ev("a")]),
    Case("empty stream", b"", []),
    # -- max_event_size -----------------------------------------------------
    Case(
        "line at the limit",
        b"data: 1234\n\ndata: 5678\n\n",
        [ev("1234"), ev("5678")],
        kwargs={"max_event_size": 10},
    ),
    Case(
        "limit counts one event's data only",
        b"data: 0123456789abc\n\ndata: 0123456789abc\n\n",
        [ev("0123456789abc"), ev("0123456789abc")],
        kwargs={"max_event_size": 20},
    ),
    Case(
        "long comment within the limit",
        b": " + b"x" * 18 + b"\ndata: a\n\n",
        [ev("a")],
        kwargs={"max_event_size": 20},
    ),
    Case(
        "line over the limit",
        b"data: a\n\ndata: 12345\n\n",
        [ev("a")],
        kwargs={"max_event_size": 10},
        error=True,
    ),
    Case(
        "comment over the limit",
        b"data: a\n\n: 123456789\n\n",
        [ev("a")],
        kwargs={"max_event_size": 10},
        error=True,
    ),
    Case(
        "endless line",
        b"data: a\n\n" + b"x" * 30,
        [ev("a")],
        kwargs={"max_event_size": 20},
        error=True,
    ),
    Case(
        "endless data lines",
        b"data: a\n\n" + b"data: 12345\n" * 5,
        [ev("a")],
        kwargs={"max_event_size": 20},
        error=True,
    ),
    Case(
        "line plus buffered data over the limit",
        b"data: 123456\ndata: 1\n\n",
        [],
        kwargs={"max_event_size": 13},  # 7 buffered ("123456" + LF) + 7 for "data: 1"
        error=True,
    ),
    Case(
        "line plus buffered data at the limit",
        b"data: 123456\ndata: 1\n\n",
        [ev("123456\n1")],
        kwargs={"max_event_size": 14},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id[:60] for case in CASES])
def test_decoder(case: Case) -> None:
    check(case)


def test_wpt_format_comments_full_length() -> None:
    # The WPT stream as is, with its 2 KiB comments (too long to split at
    # every position in reasonable time).
    long = b"x" * 2048
    stream = b"data:1\r:\x00\n:\r\ndata:2\n:" + long + b"\rdata:3\n:data:fail\r:" + long
    stream += b"\ndata:4\n\n"
    for chunks in ([stream], [stream[i : i + 1] for i in range(len(stream))]):
        assert run(chunks)[0] == [ev("1\n2\n3\n4")]


def test_retry_with_thousands_of_digits() -> None:
    # More digits than int() parses by default (4300): no ValueError.
    for value, retry in ((b"0" * 5000 + b"12", 12), (b"9" * 5000, 3)):
        stream = b"retry: 3\nretry: " + value + b"\n"
        for chunks in ([stream], [stream[i : i + 1] for i in range(len(stream))]):
            assert run(chunks)[1].retry == retry


def test_bom_split_across_feeds() -> None:
    assert run([b"\xef", b"\xbb", b"\xbf", b"data: 1\n\n"])[0] == [ev("1")]
    assert run([b"\xef\xbb", b"\xbfdata: 1\n\n"])[0] == [ev("1")]
    assert run([b"\xef", b"", b"\xbb\xbfdata: 1\n\n"])[0] == [ev("1")]
    # The start of a BOM that does not become one is data.
    assert run([b"\xef", b"\xbbdata: 1\n\ndata: 2\n\n"])[0] == [ev("2")]


def test_crlf_split_across_feeds_counts_once() -> None:
    events, decoder = run([b"data: a\r", b"\n", b"data: b\r", b"\n\r", b"\n"])
    assert events == [ev("a\nb")]
    # A CR ending a feed ends the line at once: a later LF is not waited for.
    decoder = Decoder()
    assert decoder.feed(b"data: a\r\r") == [ev("a")]
    assert decoder.feed(b"\ndata: b\n\n") == [ev("b")]  # that LF was the CRLF's


def test_multibyte_character_split_across_feeds() -> None:
    assert run([b"data: \xe2", b"\x80\xa6\n\n"])[0] == [ev("\u2026")]
    assert run([b"data: \xe2\x80", b"\xa6\n\n"])[0] == [ev("\u2026")]
    assert run([b"data: \xf0", b"\x9f", b"\x98", b"\x80\n", b"\n"])[0] == [ev("\U0001f600")]
    assert run([b"id: \xe2", b"\x80\xa6\ndata: x\n\n"])[0] == [ev("x", last_event_id="\u2026")]
    assert run([b"event: \xc3", b"\xa9\ndata: x\n\n"])[0] == [ev("x", "\xe9")]


def test_feed_returns_events_as_they_complete() -> None:
    decoder = Decoder()
    assert decoder.feed(b"data: a\n") == []
    assert decoder.feed(b"\n") == [ev("a")]
    assert decoder.feed(b"data: b\n\ndata: c\n\ndata: ") == [ev("b"), ev("c")]
    assert decoder.feed(b"d\n\n") == [ev("d")]
    assert decoder.feed(b"") == []


def test_close_discards_unfinished_event_and_line() -> None:
    decoder = Decoder()
    assert decoder.feed(b"id: 1\ndata: a\n\nid: 2\ndata: b\n") == [ev("a", last_event_id="1")]
    decoder.close()
    assert decoder.last_event_id == "1"  # the unfinished event's id never applied
    with pytest.raises(RuntimeError, match="close"):
        decoder.feed(b"\n")
    decoder = Decoder()
    assert decoder.feed(b"data: a\n\ndata: unfinished line") == [ev("a")]
    decoder.close()
    decoder.close()  # idempotent


def test_reconnect_with_last_event_id() -> None:
    # A client reconnects with a new decoder, starting from the old one's id.
    first = Decoder()
    first.feed(b"id: 41\ndata: a\n\nid: 42\ndata: b\n\nid: 43\ndata: lost")
    first.close()
    second = Decoder(first.last_event_id)
    assert second.feed(b"data: c\n\n") == [ev("c", last_event_id="42")]


def test_max_event_size_default() -> None:
    assert DEFAULT_MAX_EVENT_SIZE == 1024 * 1024
    decoder = Decoder()
    line = b"data: " + b"x" * (DEFAULT_MAX_EVENT_SIZE - 6)
    assert decoder.feed(line + b"\n\n") == [ev("x" * (DEFAULT_MAX_EVENT_SIZE - 6))]
    with pytest.raises(EventTooLargeError):
        decoder.feed(line + b"x")


def test_max_event_size_is_configurable() -> None:
    stream = b"data: " + b"x" * 100 + b"\n\n"
    with pytest.raises(EventTooLargeError):
        Decoder(max_event_size=50).feed(stream)
    assert Decoder(max_event_size=106).feed(stream) == [ev("x" * 100)]
    for bad in (0, -1):
        with pytest.raises(ValueError, match="max_event_size"):
            Decoder(max_event_size=bad)


def test_endless_line_in_small_feeds() -> None:
    # Linear time, and an error as soon as the line passes the limit.
    decoder = Decoder(max_event_size=100_000)
    with pytest.raises(EventTooLargeError) as info:  # noqa: PT012
        for _ in range(100_001):
            decoder.feed(b"x")
    assert info.value.size == 100_001
    assert info.value.limit == 100_000


def test_endless_data_lines() -> None:
    decoder = Decoder(max_event_size=1000)
    with pytest.raises(EventTooLargeError) as info:  # noqa: PT012
        for _ in range(1000):
            decoder.feed(b"data: 0123456789\n")
    assert info.value.size > 1000


def test_event_too_large_error() -> None:
    decoder = Decoder(max_event_size=10)
    with pytest.raises(EventTooLargeError) as info:
        decoder.feed(b"data: 0123456789\n\n")
    error = info.value
    assert isinstance(error, RemoteProtocolError)
    assert isinstance(error, SSEError)
    assert error.error_status_hint == 413
    assert (error.size, error.limit) == (16, 10)
    assert "max_event_size=10" in str(error)
    # The decoder cannot continue.
    with pytest.raises(RuntimeError):
        decoder.feed(b"data: a\n\n")


@pytest.mark.parametrize(
    "body",
    [
        "\n".join(f"line {i} " + "y" * (i % 70) for i in range(300)),
        # With empty lines, which our encoder writes as a bare "data:".
        "\n".join("" if i % 7 == 0 else f"line {i}" for i in range(300)),
        # Spaces and colons where the parser looks for them.
        "\n".join(f" {i}: data: \u2026" for i in range(300)),
    ],
    ids=["text", "empty lines", "spaces and colons"],
)
def test_long_events_in_small_feeds(body: str) -> None:
    # Large multi-line events, fed in pieces smaller than a line or larger
    # than an event, cross every path of feed(): the bulk data runs, the line
    # rules, the whole-event paths.
    stream = b"".join(
        Event(body, event="doc", id=str(n)).encode() + Event(comment="ping").encode()
        for n in range(5)
    )
    expected = [ev(body, "doc", str(n)) for n in range(5)]
    for size in (1, 7, 64, 1000, 4096, 10_000, len(stream)):
        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
        assert run(chunks)[0] == expected, size


def test_many_small_events_in_large_feeds() -> None:
    stream = b"".join(b'event: tick\nid: %d\ndata: {"n": %d}\n\n' % (i, i) for i in range(2000))
    expected = [ev(f'{{"n": {i}}}', "tick", str(i)) for i in range(2000)]
    for size in (100, 4096, 65536):
        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
        assert run(chunks)[0] == expected, size


def test_message_event() -> None:
    event = MessageEvent("message", "a", "1")
    assert (event.type, event.data, event.last_event_id) == ("message", "a", "1")
    assert event == MessageEvent("message", "a", "1")
    assert hash(event) == hash(MessageEvent("message", "a", "1"))
    assert repr(event) == "MessageEvent(type='message', data='a', last_event_id='1')"
    with pytest.raises(AttributeError):
        event.data = "b"  # type: ignore[misc]
