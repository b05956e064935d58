"""Codec benchmark: trio-sse's encoder and decoder side by side with their peers.

Run it with ``python3 noxfile.py -s bench-codec`` (``-- --quick`` for a short
run); the nox session installs trio-sse, sse-starlette and httpx-sse.

What is compared
----------------

* Encode (events/s): ``Event(data, event=..., id=...).encode()`` against
  sse-starlette's ``ServerSentEvent(data, event=..., id=...).encode()``: the
  same call a server makes for each event it sends.
* Decode (MB/s of stream): ``Decoder.feed()`` against httpx-sse, through its
  public API: ``EventSource(response).iter_sse()`` over an ``httpx.Response``
  whose body arrives in the same chunks. That is the path ``connect_sse()`` /
  ``aconnect_sse()`` take (``aiter_sse`` is the async twin of the same code):
  httpx's incremental UTF-8 decoder, httpx-sse's own line splitter
  (``SSELineDecoder``), then ``SSEDecoder.decode()`` line by line. The same
  three stages driven directly, without ``httpx.Response``, are timed too,
  and the faster httpx-sse variant is the one compared. Both sides consume
  every event (they read its ``data``).

Both decoders get the same bytes in 64 KiB chunks (what trio's and httpcore's
socket reads return at most), on two workloads: many small events (a JSON
payload with ``event`` and ``id``) and a few large multi-line events (2000
lines each). The decode workloads use trio-sse's encoding, and once more
sse-starlette's (CRLF, another field order), since that is what a client
meets in the wild.

Method: everything runs in one process, interleaved (ours, theirs, ours,
theirs, ...); ``gc.collect()`` runs before each timed run. Rates are the best
of the rounds. Two ratios are printed: of the best times, and the median over
rounds of the ratio of each round's pair of runs, which ran back to back and
so saw about the same machine; on a busy machine the second is the steadier,
and the goals are judged on it. Times are wall-clock; the median ratio is
also given in the thread's CPU time.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata

import httpx
from httpx._decoders import TextDecoder
from httpx_sse import EventSource
from httpx_sse._decoders import SSEDecoder, SSELineDecoder
from sse_starlette.event import ServerSentEvent

from trio_sse import Decoder, Event

CHUNK = 64 * 1024
GOALS = {"encode": 2.0, "decode": 3.0}


def machine() -> list[tuple[str, str]]:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:  # pragma: no cover - not Linux
        pass
    versions = ", ".join(
        f"{name} {metadata.version(name)}"
        for name in ("trio-sse", "sse-starlette", "httpx-sse", "httpx")
    )
    return [
        ("CPU", f"{cpu} ({os.cpu_count()} logical CPUs, nproc {len(os.sched_getaffinity(0))})"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("OS", platform.platform()),
        ("Packages", versions),
    ]


# -- Workloads ----------------------------------------------------------------


def small_events(n: int) -> list[tuple[str, str, str]]:
    return [
        (f'{{"seq": {i}, "price": {100 + i % 997 / 100}, "symbol": "TRIO"}}', "tick", str(i))
        for i in range(n)
    ]


def large_events(n: int) -> list[tuple[str, str, str]]:
    body = "\n".join(f"{i:04d} " + "lorem ipsum dolor sit amet " * 2 for i in range(2000))
    return [(f"{body}\nevent {i}", "document", str(i)) for i in range(n)]


def chunks(stream: bytes) -> list[bytes]:
    return [stream[i : i + CHUNK] for i in range(0, len(stream), CHUNK)]


# -- The contenders -----------------------------------------------------------


def encode_ours(events: list[tuple[str, str, str]]) -> None:
    for data, event, id in events:
        Event(data, event=event, id=id).encode()


def encode_starlette(events: list[tuple[str, str, str]]) -> None:
    for data, event, id in events:
        ServerSentEvent(data, event=event, id=id).encode()


def decode_ours(pieces: list[bytes]) -> int:
    decoder = Decoder()
    total = 0
    for piece in pieces:
        for event in decoder.feed(piece):
            total += len(event.data)
    return total


def decode_httpx_sse(pieces: list[bytes]) -> int:
    response = httpx.Response(
        200, headers={"content-type": "text/event-stream"}, content=iter(pieces)
    )
    total = 0
    for event in EventSource(response).iter_sse():
        total += len(event.data)
    return total


def decode_httpx_sse_direct(pieces: list[bytes]) -> int:
    # iter_sse()'s three stages without httpx.Response around them.
    text = TextDecoder("utf-8")
    lines = SSELineDecoder()
    decoder = SSEDecoder()
    total = 0
    for piece in pieces:
        for line in lines.decode(text.decode(piece)):
            event = decoder.decode(line.rstrip("\n"))
            if event is not None:
                total += len(event.data)
    for line in lines.decode(text.flush()) + lines.flush():  # pragma: no cover - no tail here
        event = decoder.decode(line.rstrip("\n"))
        if event is not None:
            total += len(event.data)
    return total


# -- Timing -------------------------------------------------------------------


@dataclass
class Timing:
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)

    def run(self, fn: Callable[[], object]) -> None:
        gc.collect()
        wall, cpu = time.perf_counter(), time.thread_time()
        fn()
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
        self.walls.append(wall)
        self.cpus.append(cpu)

    @property
    def wall(self) -> float:
        return min(self.walls)


@dataclass
class Row:
    workload: str
    op: str  # "encode" or "decode"
    size: int  # events (encode) or bytes of stream (decode)
    goal: float | None  # the ratio to reach, or None for an informative row
    ours: Callable[[], object]
    peers: dict[str, Callable[[], object]]
    timings: dict[str, Timing] = field(default_factory=dict)

    def run_once(self) -> None:
        # Interleaved: ours, then each peer, every round.
        for name, fn in [("trio-sse", self.ours), *self.peers.items()]:
            self.timings.setdefault(name, Timing()).run(fn)

    def rate(self, t: float) -> str:
        if self.op == "encode":
            return f"{self.size / t:,.0f} events/s"
        return f"{self.size / t / 1e6:,.1f} MB/s"

    def line(self) -> str:
        ours = self.timings["trio-sse"]
        peer_name = min(self.peers, key=lambda name: self.timings[name].wall)
        peer = self.timings[peer_name]
        best = peer.wall / ours.wall
        # Each round's pair of runs, back to back, saw about the same machine:
        # the median of their ratios shrugs off a lucky or unlucky round.
        paired = statistics.median(p / o for p, o in zip(peer.walls, ours.walls, strict=True))
        cpu = statistics.median(p / o for p, o in zip(peer.cpus, ours.cpus, strict=True))
        if self.goal is None:
            verdict = "(not a goal)"
        else:
            verdict = f"≥ {self.goal:g}x: {'met' if paired >= self.goal else 'MISSED'}"
        return (
            f"| {self.op} | {self.workload} | {self.rate(ours.wall)} | {peer_name} "
            f"| {self.rate(peer.wall)} | {best:.2f}x | **{paired:.2f}x** ({cpu:.2f}x) "
            f"| {verdict} |"
        )


def rows(small: list[tuple[str, str, str]], large: list[tuple[str, str, str]]) -> list[Row]:
    result = []
    for name, events in (
        (f"{len(small):,} small events", small),
        (f"{len(large)} large events", large),
    ):
        result.append(
            Row(
                name,
                "encode",
                len(events),
                GOALS["encode"],
                lambda e=events: encode_ours(e),
                {"sse-starlette": lambda e=events: encode_starlette(e)},
            )
        )
    for name, events in (
        (f"{len(small):,} small events", small),
        (f"{len(large)} large events", large),
    ):
        for encoder, goal, encode in (
            ("", GOALS["decode"], lambda d, e, i: Event(d, event=e, id=i).encode()),
            (
                " (sse-starlette's bytes: CRLF)",
                None,
                lambda d, e, i: ServerSentEvent(d, event=e, id=i).encode(),
            ),
        ):
            pieces = chunks(b"".join(encode(*event) for event in events))
            # The same work on both sides: the same events come out.
            want = sum(len(data) for data, _, _ in events)
            assert decode_ours(pieces) == decode_httpx_sse(pieces) == want
            assert decode_httpx_sse_direct(pieces) == want
            result.append(
                Row(
                    name + encoder,
                    "decode",
                    sum(map(len, pieces)),
                    goal,
                    lambda p=pieces: decode_ours(p),
                    {
                        "httpx-sse iter_sse()": lambda p=pieces: decode_httpx_sse(p),
                        "httpx-sse stages": lambda p=pieces: decode_httpx_sse_direct(p),
                    },
                )
            )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer events and rounds (~10 s)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 15, quick 3)")
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 15)
    table = rows(
        small_events(3_000 if args.quick else 20_000), large_events(4 if args.quick else 20)
    )

    print("trio-sse codec benchmark\n")
    for key, value in machine():
        print(f"- {key}: {value}")
    print(f"- Method: {rounds} interleaved rounds; {CHUNK // 1024} KiB feeds")
    for round_ in range(rounds):
        if sys.stderr.isatty():
            print(f"\rround {round_ + 1}/{rounds}", end="", file=sys.stderr, flush=True)
        for row in table:
            row.run_once()
    if sys.stderr.isatty():
        print("\r" + " " * 20 + "\r", end="", file=sys.stderr)
    print(f"- Load average after the run: {'/'.join(f'{x:.2f}' for x in os.getloadavg())}\n")

    print(
        "| Op | Workload | trio-sse | Fastest peer | Peer "
        "| Ratio, best of rounds | Ratio, median round (CPU time) | Goal |"
    )
    print("|---|---|---:|---|---:|---:|---:|---|")
    for row in table:
        print(row.line())
    print(
        "\nRates are the best of all rounds. Ratios are the peer's time over trio-sse's"
        "\n(higher is better): of the best times, and the median over rounds of each"
        "\nround's pair of runs, in wall-clock time (thread CPU time in parentheses)."
        "\nGoals are judged on the median round."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
