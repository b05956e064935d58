"""Config: defaults and validation of every limit and deadline."""

from __future__ import annotations

import dataclasses

import pytest

from trio_sse import Config, Event


def test_defaults() -> None:
    cfg = Config()
    assert cfg.heartbeat_interval == 15.0
    assert cfg.max_stream_lifetime is None
    assert cfg.stream_end_retry == 1000
    assert cfg.heartbeat_bytes() == b":\n\n"
    assert Config(heartbeat_comment="ka").heartbeat_bytes() == b": ka\n\n"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.max_connections = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "name",
    ["heartbeat_interval", "max_stream_lifetime", "stream_end_retry", "backlog"],
)
def test_optional_settings_accept_none(name: str) -> None:
    assert getattr(Config(**{name: None}), name) is None  # type: ignore[arg-type]


def test_stream_end_retry_may_be_zero() -> None:
    assert Config(stream_end_retry=0).stream_end_retry == 0


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"header_timeout": None}, ValueError, "Config.header_timeout must not be None"),
        ({"header_timeout": 0}, ValueError, "header_timeout must be a positive"),
        ({"write_timeout": -1.0}, ValueError, "write_timeout must be a positive"),
        ({"keep_alive_timeout": float("inf")}, ValueError, "keep_alive_timeout"),
        ({"body_timeout": float("nan")}, ValueError, "body_timeout"),
        ({"max_stream_lifetime": 0}, ValueError, "max_stream_lifetime"),
        ({"stream_end_retry": -1}, ValueError, "stream_end_retry"),
        ({"max_connections": 1.5}, TypeError, "max_connections must be an int"),
        ({"max_body_size": True}, TypeError, "max_body_size must be a number"),
        ({"read_size": "64k"}, TypeError, "read_size must be a number"),
        ({"heartbeat_comment": 1}, TypeError, "comment"),
    ],
)
def test_invalid_settings_name_the_field(
    changes: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Config(**changes)  # type: ignore[arg-type]


def test_stream_end_retry_jitter_default_spreads_over_five_seconds() -> None:
    assert Config().stream_end_retry_jitter == 5000


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (-1, ValueError, "stream_end_retry_jitter must be a non-negative int, got -1"),
        (1.5, TypeError, "stream_end_retry_jitter must be an int"),
        (0.0, TypeError, "stream_end_retry_jitter must be an int"),
        (float("inf"), ValueError, "stream_end_retry_jitter must be a non-negative int"),
        (None, ValueError, "stream_end_retry_jitter must not be None"),
        (True, TypeError, "stream_end_retry_jitter must be a number"),
        ("5s", TypeError, "stream_end_retry_jitter must be a number"),
    ],
)
def test_stream_end_retry_jitter_validation(
    value: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Config(stream_end_retry_jitter=value)  # type: ignore[arg-type]


def test_stream_end_event_is_uniform_in_the_window() -> None:
    cfg = Config(stream_end_retry=1000, stream_end_retry_jitter=100)
    retries = []
    for _ in range(2000):
        event = cfg.stream_end_event()
        assert event is not None
        assert event.retry is not None
        assert event.encode() == b"retry: %d\n\n" % event.retry
        retries.append(event.retry)
    assert min(retries) >= 1000
    assert max(retries) <= 1100
    # Both ends are reachable and the values spread (2000 draws of 101 values:
    # each value is missed with probability (100/101)**2000, about 2e-9).
    assert set(retries) == set(range(1000, 1101))


def test_stream_end_event_without_jitter_or_retry() -> None:
    exact = Config(stream_end_retry=1500, stream_end_retry_jitter=0)
    assert {exact.stream_end_event() for _ in range(50)} == {Event(retry=1500)}
    assert Config(stream_end_retry=0, stream_end_retry_jitter=0).stream_end_event() == Event(
        retry=0
    )
    assert Config(stream_end_retry=None).stream_end_event() is None
    assert Config(stream_end_retry=None, stream_end_retry_jitter=0).stream_end_event() is None
