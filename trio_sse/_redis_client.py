"""The Redis backplane's settings and its coredis client.

Strategy: :class:`~trio_sse.RedisBackplane` checks every setting when it is
made, so that a mistake is a :class:`ValueError` naming the setting at
start-up, not a failure in a background task later; then it builds one
coredis client (``Redis`` or, with ``cluster=True``, ``RedisCluster``) that
connects lazily, so that a backplane can be made and run while Redis is down.

Rule: the client never retries by itself (``NoRetryPolicy``). A command that
fails must reach the backplane, so that the reconnect check runs: a silently
retried ``XREAD`` would read on from a server that came back without its data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["check_settings", "redis_client", "require_coredis"]


def require_coredis() -> None:
    """Raise a :class:`ModuleNotFoundError` that says how to install coredis."""
    try:
        import coredis  # noqa: F401
    except ModuleNotFoundError:  # pragma: no cover - depends on the install
        raise ModuleNotFoundError(
            "RedisBackplane needs coredis: pip install 'trio-sse[redis]'"
        ) from None


def check_settings(
    *, key_prefix: str, integers: Mapping[str, int], numbers: Mapping[str, float]
) -> None:
    """Check a :class:`~trio_sse.RedisBackplane`'s settings.

    Args:
        key_prefix: must be a ``str`` without braces (they would pick the
            cluster hash slot).
        integers: settings that must be positive ints, by name (checked at
            run time too: callers may pass anything).
        numbers: settings that must be positive numbers, by name.

    Raises:
        ValueError: naming the first setting out of range.
    """
    for name, value in integers.items():
        _check_positive(name, value, integer=True)
    for name, number in numbers.items():
        _check_positive(name, number, integer=False)
    stream_min_length, read_count = integers["stream_min_length"], integers["read_count"]
    if stream_min_length < read_count:
        raise ValueError(
            f"stream_min_length ({stream_min_length}) must be at least read_count ({read_count})"
        )
    if not isinstance(key_prefix, str) or "{" in key_prefix or "}" in key_prefix:
        raise ValueError(f"key_prefix must be a str without braces, got {key_prefix!r}")


def _check_positive(name: str, value: object, *, integer: bool) -> None:
    kinds = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0:
        kind = "int" if integer else "number"
        raise ValueError(f"{name} must be a positive {kind}, got {value!r}")


def redis_client(url: str, *, cluster: bool) -> Any:
    """The coredis client for *url*: not connected yet, and never retrying."""
    import coredis

    no_retry = coredis.retry.NoRetryPolicy()
    if cluster:
        return _cluster_client(url, no_retry)
    return coredis.Redis.from_url(url, decode_responses=False, retry_policy=no_retry)


def _cluster_client(url: str, retry_policy: Any) -> Any:
    """A RedisCluster from ``redis[s]://[user:password@]host:port``."""
    import coredis
    from coredis.connection import TCPLocation

    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError(f"expected a redis:// or rediss:// URL, got {url!r}")
    return coredis.RedisCluster(
        startup_nodes=[TCPLocation(parts.hostname, parts.port or 6379)],
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        ssl=parts.scheme == "rediss",
        decode_responses=False,
        retry_policy=retry_policy,
    )
