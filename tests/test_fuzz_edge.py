"""Issue 11: a bounded fuzz and flood run of the raw server, in the suite.

The engine is ``benchmarks/fuzz_edge.py``; ``python3 noxfile.py -s fuzz``
runs it long (20,000 requests, 5,000 flooding connections; figures in
docs/security.md). Here: 1,500 mutated requests over memory streams and 1,000
flooding connections on loopback, a few seconds in all.
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import fuzz_edge


async def test_fuzzed_requests_get_clean_4xx_and_nothing_leaks() -> None:
    with trio.fail_after(60):
        report = await fuzz_edge.fuzz(1500, seed=11)
    assert report.errors_logged == 0, report
    assert report.bad_status_lines == 0, report
    assert "500" not in report.statuses, report
    assert report.connections_left == 0, report
    # Only an input without any request in it may go unanswered.
    assert report.closed_without_response <= 2, report
    # Most mutations are refused, some still are valid requests.
    assert report.statuses.get("400", 0) > 500
    assert report.statuses.get("200", 0) > 50


async def test_flood_is_answered_503_and_subscribers_lose_nothing() -> None:
    with trio.fail_after(60):
        # 150 at a time: about 350 descriptors, well under a 1,024 limit.
        report = await fuzz_edge.flood(1000, subscribers=20, events=50, concurrency=150)
    assert report.outcomes == {"503": 1000}, report
    assert report.subscribers_complete == 20, report
    assert report.refusals["refusal_not_awaited"] > 0, report
