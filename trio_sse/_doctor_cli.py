"""``trio-sse doctor URL``: the command line around :func:`~trio_sse.diagnose`.

Strategy: the subcommand only parses its arguments, runs :func:`diagnose` in
:func:`trio.run`, and prints the report: one line of figures, then each
finding with its fix. The exit status says what a script needs to know:
``0`` no problem, ``1`` a problem found, ``2`` no answer (a bad URL, a
server that cannot be reached), each with a one-line message, never a
traceback.
"""

from __future__ import annotations

import sys
from functools import partial
from typing import Any

import trio

from ._doctor import diagnose

__all__ = ["add_doctor_parser", "doctor"]


def add_doctor_parser(sub: Any) -> None:
    """Add the ``doctor`` subcommand to the ``trio-sse`` parser's subparsers."""
    p = sub.add_parser(
        "doctor",
        help="check what stands between a stream and browsers: trio-sse doctor URL",
        description=(
            "Connect to an event stream as a browser does and report what a proxy or "
            "the server does to it (buffering, compression, headers, idle cut-offs, "
            "heartbeats, Last-Event-ID, HTTP version), with a fix for each finding. "
            "Point it at a diagnostics_stream() route for the full check."
        ),
    )
    p.add_argument("url", metavar="URL", help="the stream's URL")
    p.add_argument(
        "--duration",
        type=float,
        default=20.0,
        metavar="S",
        help="seconds to watch the stream (default 20; longer than the heartbeat interval)",
    )


def doctor(args: Any) -> int:
    """Run ``trio-sse doctor``; the exit status is 1 when it found a problem, 2 on no answer."""
    try:
        report = trio.run(partial(diagnose, args.url, duration=args.duration))
    except ValueError as exc:
        print(f"trio-sse doctor: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"trio-sse doctor: cannot connect to {args.url}: {exc}", file=sys.stderr)
        return 2
    print(f"trio-sse doctor {report.url}")
    print(f"  HTTP/{report.http_version or '?'} {report.status}", end="")
    if report.time_to_headers is not None:
        print(f", headers after {report.time_to_headers * 1000:.0f} ms", end="")
    if report.time_to_first_event is not None:
        print(f", first event {report.time_to_first_event * 1000:.0f} ms later", end="")
    print()
    if report.probes:
        print(f"  {len(report.probes)} probes, latency spread {max(report.probes) * 1000:.0f} ms")
    for finding in report.findings:
        print(f"{finding.severity.upper()} {finding.code}: {finding.summary}")
        print(f"    fix: {finding.fix}")
    if not report.problems:
        print("no problems found")
    return 1 if report.problems else 0
