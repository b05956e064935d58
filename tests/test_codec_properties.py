"""Property tests for the codec: round trips, arbitrary splits, arbitrary bytes.

* ``decode(encode(events)) == events`` for arbitrary valid events, under
  arbitrary chunk splits and with the line endings rewritten to an arbitrary
  mix of CR, LF and CRLF;
* on arbitrary bytes the decoder agrees with ``reference_decode``, a naive,
  line-by-line transcription of the WHATWG rules on the decoded text, and
  splitting the input never changes the result; nothing but
  :class:`~trio_sse.EventTooLargeError` is ever raised.
"""

from __future__ import annotations

import itertools
import re

from hypothesis import example, given
from hypothesis import strategies as st

from trio_sse import Decoder, Event, EventTooLargeError, MessageEvent

# -- A reference parser, as literal as possible ------------------------------


def reference_decode(
    stream: bytes, last_event_id: str = ""
) -> tuple[list[MessageEvent], str, int | None]:
    """Parse a whole stream the way HTML's "Interpreting an event stream" reads.

    Returns the events, the final last event ID string and the reconnection
    time (``None`` if never set).
    """
    # "The stream must then be parsed by reading everything line by line ...
    # [after] the UTF-8 decode algorithm", which strips one leading BOM.
    text = stream.decode("utf-8", "replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    # The last line has no line ending: "any pending data must be discarded".
    *lines, _ = re.split("\r\n|\r|\n", text)
    events: list[MessageEvent] = []
    data_buffer = event_type = ""
    id_buffer = last_event_id  # as Chromium does; the spec's text starts it empty
    retry: int | None = None
    for line in lines:
        if line == "":
            # Dispatch the event.
            last_event_id = id_buffer
            if data_buffer == "":
                event_type = ""
                continue
            if data_buffer.endswith("\n"):
                data_buffer = data_buffer[:-1]
            events.append(MessageEvent(event_type or "message", data_buffer, last_event_id))
            data_buffer = event_type = ""
            continue
        if line.startswith(":"):
            continue
        if ":" in line:
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
        else:
            name, value = line, ""
        if name == "event":
            event_type = value
        elif name == "data":
            data_buffer += value + "\n"
        elif name == "id":
            if "\0" not in value:
                id_buffer = value
        elif name == "retry":
            # "If the field value consists of only ASCII digits" (and, as in
            # Chromium, fits in 64 bits).
            digits = value and all(c in "0123456789" for c in value)
            retry = int(value) if digits and int(value) < 2**64 else retry
    return events, last_event_id, retry


# -- Strategies ---------------------------------------------------------------

# Bytes that mean something to the parser, to make arbitrary streams interesting.
TOKENS = [
    b"data",
    b"data:",
    b"data: ",
    b"event:",
    b"event: ",
    b"id:",
    b"id: ",
    b"retry:",
    b"retry: ",
    b":",
    b" ",
    b"\n",
    b"\r",
    b"\r\n",
    b"\n\n",
    b"\xef\xbb\xbf",
    b"\x00",
    b"0",
    b"12",
    b"x",
    b"\xe2\x80\xa6",
    b"\xe2\x80",
    b"\xff",
    b"\xc3",
]
sse_bytes = st.lists(st.sampled_from(TOKENS) | st.binary(max_size=4), max_size=40).map(b"".join)
arbitrary_bytes = sse_bytes | st.binary(max_size=200)

field_text = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]))
events_strategy = st.lists(
    st.builds(
        Event,
        data=st.text(st.characters(blacklist_categories=["Cs"])),
        event=st.none() | field_text,
        id=st.none() | field_text.filter(lambda s: "\0" not in s),
        retry=st.none() | st.integers(min_value=0, max_value=2**64 - 1),
        comment=st.none() | st.text(st.characters(blacklist_categories=["Cs"])),
    ),
    max_size=8,
)


@st.composite
def split(draw: st.DrawFn, stream: bytes) -> list[bytes]:
    """Split stream at arbitrary positions."""
    cuts = sorted(draw(st.sets(st.integers(0, len(stream)), max_size=12)))
    bounds = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]


def decode(chunks: list[bytes], **kwargs: object) -> tuple[list[MessageEvent], Decoder]:
    decoder = Decoder(**kwargs)  # type: ignore[arg-type]
    events: list[MessageEvent] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events, decoder


def expected(events: list[Event], last_event_id: str = "") -> list[MessageEvent]:
    """What a browser dispatches for events (whose data is not None)."""
    result = []
    for event in events:
        if event.id is not None:
            last_event_id = event.id
        assert event.data is not None
        data = event.data.replace("\r\n", "\n").replace("\r", "\n")
        result.append(MessageEvent(event.event or "message", data, last_event_id))
    return result


def last_retry(events: list[Event]) -> int | None:
    retries = [e.retry for e in events if e.retry is not None]
    return retries[-1] if retries else None


# -- Round trips ----------------------------------------------------------------


@given(events_strategy, st.sampled_from(["", "resume"]), st.data())
def test_round_trip_under_arbitrary_splits(
    events: list[Event], last_event_id: str, data: st.DataObject
) -> None:
    stream = b"".join(e.encode() for e in events)
    got, decoder = decode(data.draw(split(stream)), last_event_id=last_event_id)
    assert got == expected(events, last_event_id)
    assert decoder.retry == last_retry(events)
    assert decoder.last_event_id == (got[-1].last_event_id if got else last_event_id)


@st.composite
def rewrite_line_endings(draw: st.DrawFn, stream: bytes) -> bytes:
    """Replace each LF that the encoder wrote by a CR, LF or CRLF.

    One combination would change the meaning: a bare CR followed by an empty
    line ending in LF reads as one CRLF, so the blank line would vanish. An
    encoder can never write that, so the blank line then ends in CR or CRLF.
    """
    lines = stream.split(b"\n")
    out = []
    previous = b""
    for line in lines[:-1]:
        choices = [b"\n", b"\r", b"\r\n"]
        if previous == b"\r" and line == b"":
            choices.remove(b"\n")
        previous = draw(st.sampled_from(choices))
        out.append(line + previous)
    return b"".join(out) + lines[-1]


@given(events_strategy, st.data())
def test_round_trip_with_mixed_line_endings(events: list[Event], data: st.DataObject) -> None:
    stream = data.draw(rewrite_line_endings(b"".join(e.encode() for e in events)))
    got, decoder = decode(data.draw(split(stream)))
    assert got == expected(events)
    assert decoder.retry == last_retry(events)


# -- Arbitrary bytes ------------------------------------------------------------


@given(arbitrary_bytes, st.data())
@example(b"id: 1\n\nid\x00\ndata\n\n", None)
@example(b"data:a\n\ndata: b\ndata\n\n", None)
@example(b"retry: 1\n\nretry: 18446744073709551616\ndata\n\n", None)
def test_arbitrary_bytes_match_the_reference(stream: bytes, data: st.DataObject | None) -> None:
    want, want_id, want_retry = reference_decode(stream)
    splits = [[stream], [stream[i : i + 1] for i in range(len(stream))]]
    if data is not None:
        splits.append(data.draw(split(stream)))
    for chunks in splits:
        got, decoder = decode(chunks)
        assert got == want
        assert decoder.last_event_id == want_id
        assert decoder.retry == want_retry


NAMES = ["data", "event", "id", "retry", "", "foo", "Data"]
SEPARATORS = [":", ": ", ":  ", ""]
VALUES = st.text(st.sampled_from("ab \x00:\u2026\ufeff09"), max_size=6) | st.sampled_from(
    ["18446744073709551615", "18446744073709551616"]  # retry: the largest, then ignored
)


@st.composite
def structured_stream(draw: st.DrawFn) -> bytes:
    """Events as servers send them: often every event with the same fields.

    That is what the decoder's bulk paths (columns, one match per event)
    handle, so these streams check the shortcuts against the reference.
    """
    shape = draw(
        st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(SEPARATORS)), max_size=5)
    )
    blocks = []
    for _ in range(draw(st.integers(0, 12))):
        if not draw(st.integers(0, 4)):  # now and then, a different event
            shape = draw(
                st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(SEPARATORS)), max_size=5)
            )
        lines = [
            name + sep + (draw(VALUES) if sep else "")
            for name, sep in shape
            if name or sep  # an empty name with no colon would be a blank line
        ]
        blank = draw(st.sampled_from(["\n", "\n", "\n\n"]))
        blocks.append("".join(line + "\n" for line in lines) + blank)
    return "".join(blocks).encode()


@given(structured_stream(), st.data())
def test_structured_streams_match_the_reference(stream: bytes, data: st.DataObject) -> None:
    want = reference_decode(stream)
    for chunks in ([stream], data.draw(split(stream))):
        got, decoder = decode(chunks)
        assert (got, decoder.last_event_id, decoder.retry) == want


@given(arbitrary_bytes, st.integers(1, 64), st.data())
def test_arbitrary_bytes_only_raise_event_too_large(
    stream: bytes, max_event_size: int, data: st.DataObject
) -> None:
    # With a small limit, whether the error is raised must not depend on the
    # splits; the events returned before it are those of the whole stream.
    want, _, _ = reference_decode(stream)

    def outcome(chunks: list[bytes]) -> tuple[list[MessageEvent], bool]:
        decoder = Decoder(max_event_size=max_event_size)
        events: list[MessageEvent] = []
        try:
            for chunk in chunks:
                events += decoder.feed(chunk)
        except EventTooLargeError:
            return events, True
        return events, False

    whole_events, whole_failed = outcome([stream])
    split_events, split_failed = outcome(data.draw(split(stream)))
    assert whole_failed == split_failed
    if not whole_failed:
        assert whole_events == split_events == want
    else:
        assert split_events == want[: len(split_events)]
        assert whole_events == []


# -- Cross-checks with independent implementations -------------------------------


def starlette_bytes(event: Event) -> bytes:
    """The same event, encoded by sse-starlette (CRLF, its own field order)."""
    from sse_starlette.event import ServerSentEvent

    return ServerSentEvent(
        event.data, event=event.event, id=event.id, retry=event.retry, comment=event.comment
    ).encode()


@given(
    st.lists(
        st.builds(
            Event,
            data=st.none() | st.text(st.characters(blacklist_categories=["Cs"])),
            event=st.none() | field_text,
            id=st.none() | field_text.filter(lambda s: "\0" not in s),
            retry=st.none() | st.integers(min_value=0, max_value=2**64 - 1),
            comment=st.none() | st.text(st.characters(blacklist_categories=["Cs"])),
        ),
        max_size=8,
    ),
    st.data(),
)
def test_sse_starlette_encodes_what_we_encode(events: list[Event], data: st.DataObject) -> None:
    # An independent encoder: our decoder must read its bytes (CRLF, id
    # before event, retry after data, ": " before empty comments) exactly as
    # it reads ours, for any event, with or without data.
    ours, our_decoder = decode([b"".join(e.encode() for e in events)])
    theirs, their_decoder = decode(data.draw(split(b"".join(map(starlette_bytes, events)))))
    assert theirs == ours
    assert their_decoder.last_event_id == our_decoder.last_event_id
    assert their_decoder.retry == our_decoder.retry


def httpx_sse_decode(chunks: list[bytes]) -> list[tuple[str, str, str, int | None]]:
    """Decode with httpx-sse, through its public API, as aconnect_sse() would."""
    import httpx
    from httpx_sse import EventSource

    response = httpx.Response(
        200, headers={"content-type": "text/event-stream"}, content=iter(chunks)
    )
    return [(e.event, e.data, e.id, e.retry) for e in EventSource(response).iter_sse()]


# httpx-sse (0.4) deviates from the WHATWG rules on these inputs, so the
# cross-check stays where it is correct: streams as our encoder writes them,
# for events that have data.
#
# - A blank line after an event with no data (only event/id/retry) still
#   yields an event, with data "" (the spec dispatches nothing).
# - retry is parsed with int(): "+1", "-1", " 1", "1_000" and non-ASCII digits
#   are accepted (the spec takes ASCII digits only); and it is reported per
#   event, not kept as the stream's reconnection time.
# - A leading BOM is not stripped, so the first line's field name starts with
#   U+FEFF and the first event is lost.
@given(events_strategy, st.data())
def test_httpx_sse_decodes_what_we_encode(events: list[Event], data: st.DataObject) -> None:
    stream = b"".join(e.encode() for e in events)
    if data.draw(st.booleans()):
        stream = data.draw(rewrite_line_endings(stream))
    theirs = httpx_sse_decode(data.draw(split(stream)))
    ours = decode([stream])[0]
    assert theirs == [
        (m.type, m.data, m.last_event_id, e.retry) for m, e in zip(ours, events, strict=True)
    ]
