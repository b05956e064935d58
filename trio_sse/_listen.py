"""``trio-sse listen URL``: print a stream's events, reconnecting like a browser.

The ``curl -N`` people reach for, but decoded and resumable: the stream is
reopened with ``Last-Event-ID`` whenever it ends or breaks (see
:func:`trio_sse.open_event_source`). Events go to stdout, one line each (or
one JSON object per line with ``--json``); reconnections are reported on
stderr. Ctrl-C exits with status 130 and no traceback; a refused stream (404,
wrong content type, ...) exits with status 1 and a one-line reason.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, TextIO

import trio

from ._errors import SSEError

__all__ = ["add_listen_parser", "listen"]


def add_listen_parser(sub: Any) -> None:
    """Add the ``listen`` subcommand to the ``trio-sse`` parser's subparsers."""
    p = sub.add_parser(
        "listen",
        help="print the events of a stream, reconnecting: trio-sse listen URL",
        description=(
            "Print the events of an event stream, one per line, reconnecting with "
            "Last-Event-ID whenever it ends or breaks (Ctrl-C to stop)."
        ),
    )
    p.add_argument("url", metavar="URL", help="the stream's URL")
    p.add_argument(
        "--json",
        action="store_true",
        help='one JSON object per event: {"type": ..., "data": ..., "id": ...}',
    )
    p.add_argument("--last-event-id", default="", metavar="ID", help="resume after this id")
    p.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="an extra request header (repeatable)",
    )
    p.add_argument(
        "--data",
        metavar="JSON",
        help="send this JSON body with POST (an LLM-style stream); not resent once sent",
    )
    p.add_argument(
        "--sentinel", metavar="DATA", help="stop at an event with this data, e.g. '[DONE]'"
    )
    p.add_argument(
        "--retry", type=float, default=3.0, metavar="S", help="reconnection time (default 3 s)"
    )
    p.add_argument(
        "--stall-timeout",
        type=float,
        default=None,
        metavar="S",
        help="reconnect when nothing (not even a heartbeat) arrived for S seconds",
    )
    p.add_argument(
        "--max-reconnects",
        type=int,
        default=None,
        metavar="N",
        help="give up after N consecutive failed connections (default: never)",
    )


def _headers(values: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for value in values:
        name, colon, rest = value.partition(":")
        if not colon or not name.strip():
            raise SystemExit(f"trio-sse listen: expected --header 'Name: value', got {value!r}")
        headers[name.strip()] = rest.strip()
    return headers


def _line(event: Any, as_json: bool) -> str:
    if as_json:
        record = {"type": event.type, "data": event.data, "id": event.last_event_id}
        return json.dumps(record, ensure_ascii=False)
    return event.data if event.type == "message" else f"{event.type}: {event.data}"


async def _listen(args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
    from ._client import open_event_source

    def on_reconnect(error: Exception | None, delay: float) -> None:
        reason = "stream ended" if error is None else f"{type(error).__name__}: {error}"
        print(f"trio-sse listen: {reason}; reconnecting in {delay:.3g} s", file=err, flush=True)

    body: Any = None
    if args.data is not None:
        try:
            body = json.loads(args.data)
        except ValueError as exc:
            raise SystemExit(f"trio-sse listen: --data is not valid JSON: {exc}") from None
    async with open_event_source(
        args.url,
        method="GET" if args.data is None else "POST",
        json=body,
        sentinel=args.sentinel,
        headers=_headers(args.header),
        last_event_id=args.last_event_id,
        retry=args.retry,
        stall_timeout=args.stall_timeout,
        max_reconnects=args.max_reconnects,
        on_reconnect=on_reconnect,
    ) as source:
        async for event in source:
            print(_line(event, args.json), file=out, flush=True)


def listen(args: argparse.Namespace) -> int:
    """Run ``trio-sse listen`` with parsed ``args``; return the exit status."""
    try:
        trio.run(_listen, args, sys.stdout, sys.stderr)
    except KeyboardInterrupt:
        return 130
    except SSEError as exc:
        print(f"trio-sse listen: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. piped into `head`: exit quietly, flushing nothing
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except ValueError as exc:  # invalid settings, e.g. a negative --retry
        print(f"trio-sse listen: {exc}", file=sys.stderr)
        return 2
    return 0
