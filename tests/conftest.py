"""Shared fixtures for the trio-sse test suite."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

# Real redis-server processes (one server, more servers, a cluster); see redis_servers.py.
from redis_servers import redis_cluster, redis_server, redis_server_factory  # noqa: F401

# The App-on-both-servers fixtures (raw h11 server and hypercorn); see servers.py.
from servers import serve_app, server_kind  # noqa: F401

# CI gets more examples than a local run, but stays within minutes.
settings.register_profile(
    "ci", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture
def time_bound() -> Iterator[None]:
    """Ends a synchronous (browser) test within 45 s, whatever hangs (SIGALRM, main thread)."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError("browser test took more than 45 s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(45)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
