"""What every Python peer shares: command-line arguments and the event payload.

Every server publishes the same event, ``data: <CLOCK_MONOTONIC ns> <seq>
<padding>`` followed by a blank line, so the bytes on the wire are the same
apart from each server's HTTP framing. ``time.monotonic_ns()`` is
CLOCK_MONOTONIC on Linux, the clock the C load generator reads.
"""

from __future__ import annotations

import argparse
import os
import time


def parse_args(description: str) -> argparse.Namespace:
    """``--host``, ``--port``, ``--rate`` (events/s) and ``--padding`` (bytes).

    Defaults come from ``BENCH_PORT``, ``BENCH_RATE`` and ``BENCH_PADDING``, so
    a server started by a third-party runner (hypercorn) gets them too.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("BENCH_PORT", "8000")))
    parser.add_argument(
        "--rate", type=float, default=float(os.environ.get("BENCH_RATE", "10")), help="events/s"
    )
    parser.add_argument(
        "--padding",
        type=int,
        default=int(os.environ.get("BENCH_PADDING", "64")),
        help="bytes of padding per event",
    )
    return parser.parse_args()


def env_settings() -> tuple[float, int]:
    """``(rate, padding)`` from the environment, for apps loaded by a runner."""
    return float(os.environ.get("BENCH_RATE", "10")), int(os.environ.get("BENCH_PADDING", "64"))


def payload(seq: int, pad: str) -> str:
    """The event's data: publish time (CLOCK_MONOTONIC ns), sequence, padding."""
    return f"{time.monotonic_ns()} {seq} {pad}"
