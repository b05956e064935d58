"""Tests for :class:`trio_sse.Event`: exact wire bytes, validation, caching."""

from __future__ import annotations

import copy
import dataclasses
import enum
import pickle

import h11
import pytest

from trio_sse import Decoder, Event, MessageEvent

# (Event, its exact bytes, the data a browser dispatches or None for nothing)
WIRE = [
    (Event("hello"), b"data: hello\n\n", "hello"),
    (Event(""), b"data:\n\n", ""),
    (Event("a\nb"), b"data: a\ndata: b\n\n", "a\nb"),
    (Event("a\rb"), b"data: a\ndata: b\n\n", "a\nb"),
    (Event("a\r\nb"), b"data: a\ndata: b\n\n", "a\nb"),
    (Event("a\r\n\rb\n"), b"data: a\ndata:\ndata: b\ndata:\n\n", "a\n\nb\n"),
    (Event("a\n\nb"), b"data: a\ndata:\ndata: b\n\n", "a\n\nb"),
    (Event("\n"), b"data:\ndata:\n\n", "\n"),
    (Event("a\n"), b"data: a\ndata:\n\n", "a\n"),
    (Event("\na"), b"data:\ndata: a\n\n", "\na"),
    # The parser removes one space after the colon, so the encoder writes one.
    (Event(" a"), b"data:  a\n\n", " a"),
    (Event("a "), b"data: a \n\n", "a "),
    (Event("a\n b"), b"data: a\ndata:  b\n\n", "a\n b"),
    (Event(":"), b"data: :\n\n", ":"),
    (Event("data: x"), b"data: data: x\n\n", "data: x"),
    # Only CR and LF end lines in an event stream.
    (Event("a\u2028b\x85c\x0bd"), "data: a\u2028b\x85c\x0bd\n\n".encode(), "a\u2028b\x85c\x0bd"),
    (Event("\u00e9\u2026\U0001f600"), "data: \u00e9\u2026\U0001f600\n\n".encode(), "é…😀"),
    (Event("\x00"), b"data: \x00\n\n", "\x00"),
    (
        Event("x", event="tick", id="1", retry=100, comment="c"),
        b": c\nevent: tick\nid: 1\nretry: 100\ndata: x\n\n",
        "x",
    ),
    (Event("x", event=""), b"event: \ndata: x\n\n", "x"),
    (Event("x", id=""), b"id: \ndata: x\n\n", "x"),
    (Event("x", event="a:b c"), b"event: a:b c\ndata: x\n\n", "x"),
    (Event("x", id=" 1"), b"id:  1\ndata: x\n\n", "x"),
    (Event(retry=0), b"retry: 0\n\n", None),
    (Event(retry=2**64 - 1), b"retry: 18446744073709551615\n\n", None),
    (Event(id="7"), b"id: 7\n\n", None),
    (Event(comment="keep-alive"), b": keep-alive\n\n", None),
    (Event(comment=""), b":\n\n", None),
    (Event(comment="a\nb\r\nc\rd"), b": a\n: b\n: c\n: d\n\n", None),
    (Event(comment="\n"), b":\n:\n\n", None),
    (Event(), b"\n", None),
]


@pytest.mark.parametrize(("event", "wire", "data"), WIRE, ids=[repr(e) for e, _, _ in WIRE])
def test_exact_bytes(event: Event, wire: bytes, data: str | None) -> None:
    assert event.encode() == wire
    # What a browser-exact parser makes of them.
    events = Decoder().feed(wire)
    if data is None:
        assert events == []
    else:
        assert events == [MessageEvent(event.event or "message", data, event.id or "")]


def test_fields_round_trip() -> None:
    decoder = Decoder()
    stream = Event("x", event="e", id="1", retry=5).encode() + Event("y").encode()
    assert decoder.feed(stream) == [MessageEvent("e", "x", "1"), MessageEvent("message", "y", "1")]
    assert decoder.retry == 5
    assert decoder.last_event_id == "1"


@pytest.mark.parametrize("name", ["event", "id"])
@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\r\nb", "\n", "end\r"])
def test_line_break_in_event_or_id(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"Event {name} must not contain CR or LF"):
        Event("x", **{name: value})


def test_nul_in_id() -> None:
    with pytest.raises(ValueError, match="Event id must not contain NUL"):
        Event("x", id="1\x002")
    # NUL is fine elsewhere (browsers keep it in data and event types).
    assert Event("\x00", event="a\x00").encode() == b"event: a\x00\ndata: \x00\n\n"


def test_negative_retry() -> None:
    with pytest.raises(ValueError, match="Event retry must be a non-negative"):
        Event(retry=-1)


@pytest.mark.parametrize("retry", [True, False, "5", 5.0, 1.5])
def test_retry_type(retry: object) -> None:
    with pytest.raises(TypeError, match="Event retry must be an int"):
        Event(retry=retry)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["data", "event", "id", "comment"])
@pytest.mark.parametrize("value", [b"x", 5, ["x"]])
def test_str_fields_type(name: str, value: object) -> None:
    with pytest.raises(TypeError, match=f"Event {name} must be a str"):
        Event(**{name: value})  # type: ignore[arg-type]


def test_str_subclass_encoded_by_value() -> None:
    class Kind(enum.StrEnum):
        TICK = "tick"

    class Sneaky(str):
        def __format__(self, spec: str) -> str:
            return "injected\ndata: evil"

        def __str__(self) -> str:
            return "injected\ndata: evil"

    assert Event("x", event=Kind.TICK).encode() == b"event: tick\ndata: x\n\n"
    assert Event(Sneaky("a"), event=Sneaky("b"), id=Sneaky("c"), comment=Sneaky("d")).encode() == (
        b": d\nevent: b\nid: c\ndata: a\n\n"
    )


def test_lone_surrogate_is_a_value_error() -> None:
    # Not encodable as UTF-8: UnicodeEncodeError, a ValueError.
    with pytest.raises(ValueError, match="surrogate"):
        Event("\ud800")


def test_encode_is_cached() -> None:
    event = Event("x" * 1000, event="e")
    assert event.encode() is event.encode()
    assert event.encode_chunk() is event.encode_chunk()


def parse_chunked(body: bytes) -> bytes:
    """Read body as the chunked body of an HTTP/1.1 response, with h11."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    client.receive_data(b"")
    received = b""
    while True:
        event = client.next_event()
        if isinstance(event, h11.Data):
            received += event.data
        elif isinstance(event, h11.EndOfMessage):
            return received
        else:
            assert isinstance(event, h11.Response)


def test_encode_chunk_is_valid_http_chunked_framing() -> None:
    events = [
        Event("x"),
        Event(""),
        Event(comment="ping"),
        Event("\u2026" * 100, event="unicode", id="1"),
        Event("y" * 5000),  # a size of several hex digits
        Event("z" * 0xFFFF),
        Event("\n".join(["line"] * 1000)),
    ]
    for event in events:
        chunk = event.encode_chunk()
        size, _, rest = chunk.partition(b"\r\n")
        assert int(size, 16) == len(event.encode())
        assert size == size.lower()
        assert rest == event.encode() + b"\r\n"
        assert parse_chunked(chunk + b"0\r\n\r\n") == event.encode()
    body = b"".join(e.encode_chunk() for e in events) + b"0\r\n\r\n"
    assert parse_chunked(body) == b"".join(e.encode() for e in events)


def test_immutable_value() -> None:
    event = Event("x", event="e", id="1", retry=5, comment="c")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.data = "y"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        event._wire = b""  # type: ignore[misc]
    with pytest.raises(AttributeError):
        event.__dict__  # noqa: B018 - slotted: no per-instance dict
    assert event == Event("x", event="e", id="1", retry=5, comment="c")
    assert event != Event("y", event="e", id="1", retry=5, comment="c")
    assert hash(event) == hash(Event("x", event="e", id="1", retry=5, comment="c"))
    assert repr(event) == "Event(data='x', event='e', id='1', retry=5, comment='c')"
    assert [f.name for f in dataclasses.fields(event)] == [
        "data",
        "event",
        "id",
        "retry",
        "comment",
    ]
    assert dataclasses.asdict(event) == {
        "data": "x",
        "event": "e",
        "id": "1",
        "retry": 5,
        "comment": "c",
    }
    assert Event("x", "e", "1", 5, "c") == event  # positional, in field order


def test_replace_and_copies_encode_again() -> None:
    event = Event("x", event="e", id="1")
    event.encode_chunk()
    changed = dataclasses.replace(event, data="y")
    assert changed.encode() == b"event: e\nid: 1\ndata: y\n\n"
    assert changed.encode_chunk() == b"18\r\nevent: e\nid: 1\ndata: y\n\n\r\n"
    with pytest.raises(ValueError, match="Event id"):
        dataclasses.replace(event, id="a\nb")
    for clone in (copy.copy(event), copy.deepcopy(event), pickle.loads(pickle.dumps(event))):
        assert clone == event
        assert clone.encode() == event.encode()
        assert clone.encode_chunk() == event.encode_chunk()
