"""Config: defaults and validation of every limit and deadline."""

from __future__ import annotations

import dataclasses

import pytest

from trio_sse import Config


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
