"""The replay history on its own: plain numbers for time, no trio."""

from __future__ import annotations

from trio_sse._event import Event
from trio_sse._history import Entry, History

OWNER = "topic"


def entry(n: int, time: float = 0.0, event_id: str | None = None) -> Entry[str]:
    return Entry(Event(str(n), id=event_id or str(n)), n, n, time, OWNER)


def filled(history: History[str], *entries: Entry[str], now: float = 0.0) -> History[str]:
    for item in entries:
        history.add(item, now)
    return history


def ids(entries: list[Entry[str]] | None) -> list[str | None] | None:
    return None if entries is None else [e.event.id for e in entries]


def test_bounded_by_count() -> None:
    history = filled(History[str](2, None), entry(1), entry(2), entry(3))
    assert len(history) == 2
    assert history.trimmed
    assert ids(history.entries_after("2", 0)) == ["3"]
    assert ids(history.entries_after("1", 0)) is None  # trimmed away: reset
    assert ids(history.entries_after("3", 0)) == []


def test_bounded_by_age_at_the_time_given() -> None:
    history = History[str](10, max_age=5)
    history.add(entry(1, time=0), now=0)
    history.add(entry(2, time=4), now=4)
    assert len(history) == 2
    assert not history.trimmed
    assert ids(history.entries_after("1", now=5)) == ["2"]  # 0 is not < 5 - 5
    assert ids(history.entries_after("1", now=5.5)) is None  # entry 1 expired
    assert len(history) == 1
    history.trim(now=100)
    assert len(history) == 0


def test_the_empty_id_means_before_the_first_event() -> None:
    history = filled(History[str](3, None), entry(1), entry(2))
    assert ids(history.entries_after("", 0)) == ["1", "2"]
    history.add(entry(3), 0)
    history.add(entry(4), 0)  # entry 1 leaves: "" can no longer be answered
    assert history.entries_after("", 0) is None


def test_size_zero_keeps_nothing_and_says_so() -> None:
    history = filled(History[str](0, None), entry(1))
    assert len(history) == 0
    assert history.trimmed
    assert history.entries_after("1", 0) is None
    assert history.entries_after("", 0) is None


def test_a_repeated_id_resumes_from_its_newest_entry() -> None:
    history = filled(
        History[str](3, None), entry(1, event_id="x"), entry(2), entry(3, event_id="x")
    )
    assert ids(history.entries_after("x", 0)) == []
    history.add(entry(4), 0)  # the first "x" leaves; the index keeps the newest
    assert ids(history.entries_after("x", 0)) == ["4"]


def test_clear_forgets_everything() -> None:
    history = filled(History[str](3, None), entry(1), entry(2))
    history.clear()
    assert len(history) == 0
    assert history.entries_after("1", 0) is None
    assert history.entries_after("", 0) is None
