"""Client benchmark: trio-sse's ``open_event_source`` against httpx-sse, end to end.

Run it with ``python3 noxfile.py -s bench-client`` (``-- --quick`` for a short
run); the nox session installs trio-sse with its client extra and httpx-sse.

What is compared
----------------

Decoding speed as a user sees it: from sending the request to the last event
of a stream read over a real TCP socket on 127.0.0.1, events per second.

* trio-sse: ``async with open_event_source(url, client=...) as source`` then
  ``async for event in source`` (``reconnect=False``: the iteration ends with
  the response);
* httpx-sse: ``async with aconnect_sse(client, "GET", url) as source`` then
  ``async for event in source.aiter_sse()``.

Both run under trio, on the same ``httpx.AsyncClient`` settings (HTTP/1.1, no
timeouts), read each event's ``data``, and must count the same events. The
server is a separate process (so that it does not share the client's
interpreter) that answers every request with the same pre-encoded chunked
body, written in 64 KiB chunks: its cost is a few ``sendall`` calls.

Workloads: many small events (``event``, ``id`` and a JSON ``data``, as a
price feed sends) and a few large multi-line events (1,000 lines each).

Method: the two clients run interleaved (trio-sse, httpx-sse, trio-sse, ...),
a ``gc.collect()`` before each run. The ratio that judges the goal (≥ 2x) is
the median over rounds of each round's pair of runs, which ran back to back
and so saw about the same machine; its spread (lowest and highest round) is
printed beside it.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import trio
from httpx_sse import aconnect_sse

sys.path.insert(0, str(Path(__file__).parent))
from bench_codec import machine

from trio_sse import Event, open_event_source

CHUNK = 64 * 1024
GOAL = 2.0


def small_events(n: int) -> bytes:
    return b"".join(
        Event(
            f'{{"seq": {i}, "price": {100 + i % 997 / 100}, "symbol": "TRIO"}}',
            event="tick",
            id=str(i),
        ).encode()
        for i in range(n)
    )


def large_events(n: int) -> bytes:
    body = "\n".join(f"{i:04d} " + "lorem ipsum dolor sit amet " * 2 for i in range(1000))
    return b"".join(Event(body, event="document", id=str(i)).encode() for i in range(n))


def chunked(body: bytes) -> bytes:
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    pieces = [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)]
    return head + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def serve(sock: socket.socket, responses: dict[str, bytes]) -> None:
    """The server process: answer each request on its own connection, then close it."""
    while True:
        conn, _ = sock.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                data = conn.recv(65536)
                if not data:
                    break
                request += data
            if not request:
                continue
            path = request.split(b" ", 2)[1].decode()
            conn.sendall(responses[path])


async def read_ours(client: httpx.AsyncClient, url: str) -> int:
    count = 0
    async with open_event_source(url, client=client, reconnect=False) as source:
        async for event in source:
            event.data  # noqa: B018 - read it, as a user would
            count += 1
    return count


async def read_httpx_sse(client: httpx.AsyncClient, url: str) -> int:
    count = 0
    async with aconnect_sse(client, "GET", url) as source:
        async for event in source.aiter_sse():
            event.data  # noqa: B018
            count += 1
    return count


@dataclass
class Row:
    workload: str
    events: int
    path: str
    walls: dict[str, list[float]] = field(default_factory=dict)

    def ratios(self) -> list[float]:
        return [p / o for p, o in zip(self.walls["httpx-sse"], self.walls["trio-sse"], strict=True)]

    def line(self) -> str:
        ours, peer = min(self.walls["trio-sse"]), min(self.walls["httpx-sse"])
        ratios = self.ratios()
        median = statistics.median(ratios)
        verdict = f"≥ {GOAL:g}x: {'met' if median >= GOAL else 'MISSED'}"
        return (
            f"| {self.workload} | {self.events / ours:,.0f} events/s "
            f"| {self.events / peer:,.0f} events/s | **{median:.2f}x** "
            f"| {min(ratios):.2f}x to {max(ratios):.2f}x | {verdict} |"
        )


async def run(base: str, rows: list[Row], rounds: int) -> None:
    clients: dict[str, Callable[[httpx.AsyncClient, str], Awaitable[int]]] = {
        "trio-sse": read_ours,
        "httpx-sse": read_httpx_sse,
    }
    async with httpx.AsyncClient(timeout=None) as client:
        for row in rows:  # a warm-up run, and both count the same events
            for name, read in clients.items():
                count = await read(client, base + row.path)
                assert count == row.events, (name, count, row.events)
        for round_ in range(rounds):
            if sys.stderr.isatty():
                print(f"\rround {round_ + 1}/{rounds}", end="", file=sys.stderr, flush=True)
            for row in rows:
                for name, read in clients.items():
                    gc.collect()
                    start = time.perf_counter()
                    await read(client, base + row.path)
                    row.walls.setdefault(name, []).append(time.perf_counter() - start)
    if sys.stderr.isatty():
        print("\r" + " " * 20 + "\r", end="", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer events and rounds")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 15, quick 3)")
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 15)
    small, large = (20_000, 20) if args.quick else (200_000, 200)
    rows = [
        Row(f"{small:,} small events", small, "/small"),
        Row(f"{large} large events (1,000 lines)", large, "/large"),
    ]
    responses = {"/small": chunked(small_events(small)), "/large": chunked(large_events(large))}

    sock = socket.create_server(("127.0.0.1", 0), backlog=16)
    port = sock.getsockname()[1]
    server = multiprocessing.get_context("fork").Process(
        target=serve, args=(sock, responses), daemon=True
    )
    server.start()
    sock.close()
    try:
        trio.run(run, f"http://127.0.0.1:{port}", rows, rounds)
    finally:
        server.kill()
        server.join()

    print("trio-sse client benchmark (end to end over a loopback socket)\n")
    for key, value in machine():
        print(f"- {key}: {value}")
    print(f"- Method: {rounds} interleaved rounds; server in its own process, 64 KiB chunks")
    print(f"- Load average after the run: {'/'.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print("| Workload | trio-sse | httpx-sse | Ratio, median round | Spread (rounds) | Goal |")
    print("|---|---:|---:|---:|---:|---|")
    for row in rows:
        print(row.line())
    print(
        "\nRates are the best of all rounds. Ratios are httpx-sse's time over trio-sse's"
        "\n(higher is better) for each round's pair of runs: the median, and the lowest"
        "\nand highest round."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
