"""HTTP/2 on the raw server: fan-out CPU per delivery, and a client that never grants window.

Run with ``python3 noxfile.py -s bench-h2`` (``-- --quick``: about a minute).

Part 1, fan-out, side by side in one run: the same App (one topic, ``--rate``
events a second, ``--streams`` subscribers) served by

* ``raw http/1.1``: trio-sse's own server, plain TCP, one connection per stream;
* ``raw http/1.1 (TLS)``: the same over TLS (the cost of encryption alone);
* ``raw h2``: trio-sse's own server, TLS and HTTP/2, ``--per-conn`` streams per connection;
* ``hypercorn h2``: the App under hypercorn's trio worker, TLS and HTTP/2, same clients.

Each server runs in its own process (``benchmarks/servers/h2_fanout_server.py``);
its CPU time (``/proc/<pid>/stat``) over the measuring window, divided by the
events the clients received in that window, is the CPU per delivery. The
clients run in this process.

Part 2, a client that never grants window: one HTTP/2 connection whose
``SETTINGS_INITIAL_WINDOW_SIZE`` is 0 holds ``--soak-streams`` streams open on
the topic (re-opening each one the server resets) while the server publishes
1 KiB events at 200 a second. The server's resident memory is sampled every
second for ``--soak`` seconds (60 by default): it must stay flat. With
``--soak-hypercorn`` the same client runs against hypercorn too (for at most
15 s, and stopped beyond 1 GiB).

Results go to stdout and ``benchmarks/results/h2-<time>.json`` with the
machine and versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import ssl
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.settings
import trio
import trustme

HERE = Path(__file__).parent
SERVER = HERE / "servers" / "h2_fanout_server.py"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Server:
    """A server process of one kind, with its port."""

    def __init__(self, kind: str, cert: str, rate: float, size: int) -> None:
        cmd = [sys.executable, str(SERVER), "--kind", kind, "--rate", str(rate)]
        cmd += ["--size", str(size), "--cert", cert]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.proc.kill()
            raise RuntimeError(f"{kind} server did not start: {line!r}")
        self.port = int(line.split()[1])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Counter:
    deliveries = 0
    resets = 0


def count_events(previous: bytes, chunk: bytes) -> int:
    """Events ended in ``chunk`` (a blank line), given the byte before it."""
    return (previous[-1:] + chunk).count(b"\n\n")


async def h1_stream(port: int, counter: Counter, context: ssl.SSLContext | None = None) -> None:
    stream: trio.abc.Stream = await trio.open_tcp_stream("127.0.0.1", port)
    if context is not None:
        stream = trio.SSLStream(stream, context, server_hostname="127.0.0.1")
    await stream.send_all(b"GET /events/t HTTP/1.1\r\nhost: bench\r\n\r\n")
    last = b""
    async with stream:
        while chunk := await stream.receive_some(65536):
            # Chunked framing adds "\r\n", never a blank line: counts hold.
            counter.deliveries += count_events(last, chunk)
            last = chunk


async def h2_connection(
    port: int, context: ssl.SSLContext, streams: int, counter: Counter | None, window: int
) -> None:
    """``streams`` event streams on one HTTP/2 connection.

    ``window``: our initial stream window; 0 never grants any (then streams
    reset by the server are opened again, keeping the pressure up).
    """
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    tls = trio.SSLStream(tcp, context, server_hostname="127.0.0.1")
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    conn.local_settings = h2.settings.Settings(
        client=True,
        initial_values={
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window,
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000,
        },
    )
    conn.initiate_connection()
    if window:
        conn.increment_flow_control_window(2**30)

    def open_stream() -> None:
        sid = conn.get_next_available_stream_id()
        headers = [
            (b":method", b"GET"),
            (b":path", b"/events/t"),
            (b":scheme", b"https"),
            (b":authority", b"127.0.0.1"),
        ]
        conn.send_headers(sid, headers, end_stream=True)

    for _ in range(streams):
        open_stream()
    last: dict[int, bytes] = {}
    async with tls:
        await tls.send_all(conn.data_to_send())
        while data := await tls.receive_some(262144):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived) and counter is not None:
                    sid = event.stream_id or 0
                    chunk = event.data or b""
                    counter.deliveries += count_events(last.get(sid, b""), chunk)
                    last[sid] = chunk
                    conn.acknowledge_received_data(event.flow_controlled_length or 0, sid)
                elif isinstance(event, h2.events.StreamReset):
                    if counter is not None:
                        counter.resets += 1
                    if window == 0:
                        open_stream()
                elif isinstance(event, h2.events.ConnectionTerminated):
                    return
            if out := conn.data_to_send():
                await tls.send_all(out)


async def fanout(
    kind: str, cert: str, context: ssl.SSLContext, args: argparse.Namespace, h1: bool
) -> dict[str, float]:
    server = Server(kind, cert, args.rate, 100)
    counter = Counter()
    try:
        async with trio.open_nursery() as nursery:
            if h1:
                h1_context = None
                if kind != "raw":
                    h1_context = ssl.create_default_context(cafile=args.ca)
                    h1_context.set_alpn_protocols(["http/1.1"])
                for _ in range(args.streams):
                    nursery.start_soon(h1_stream, server.port, counter, h1_context)
            else:
                for _ in range(args.streams // args.per_conn):
                    nursery.start_soon(
                        h2_connection, server.port, context, args.per_conn, counter, 2**24
                    )
            await trio.sleep(args.warmup)
            cpu0, n0, t0 = cpu_seconds(server.proc.pid), counter.deliveries, time.monotonic()
            await trio.sleep(args.seconds)
            cpu1, n1, t1 = cpu_seconds(server.proc.pid), counter.deliveries, time.monotonic()
            nursery.cancel_scope.cancel()
    finally:
        server.stop()
    deliveries = n1 - n0
    expected = args.rate * args.streams * (t1 - t0)
    return {
        "deliveries": deliveries,
        "expected": round(expected),
        "server_cpu_s": round(cpu1 - cpu0, 3),
        "us_per_delivery": round((cpu1 - cpu0) / max(deliveries, 1) * 1e6, 2),
    }


async def soak(
    kind: str, cert: str, context: ssl.SSLContext, seconds: float, streams: int
) -> dict[str, object]:
    server = Server(kind, cert, 200, 1024)
    samples: list[float] = []
    counter = Counter()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(h2_connection, server.port, context, streams, counter, 0)
            for _ in range(int(seconds)):
                await trio.sleep(1)
                samples.append(round(rss_mib(server.proc.pid), 1))
                if samples[-1] > 1024:
                    break
            nursery.cancel_scope.cancel()
    finally:
        server.stop()
    settled = samples[min(5, len(samples) - 1) :]
    return {
        "seconds": len(samples),
        "rss_mib": samples,
        "growth_mib_per_s_after_5s": round(
            (settled[-1] - settled[0]) / max(len(settled) - 1, 1), 3
        ),
        "streams_reset_by_server": counter.resets,
        "events_received": counter.deliveries,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs (about a minute)")
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--per-conn", type=int, default=50)
    parser.add_argument("--rate", type=float, default=20, help="events/s")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--soak", type=float, default=60)
    parser.add_argument("--soak-streams", type=int, default=50)
    parser.add_argument("--soak-hypercorn", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.streams, args.seconds, args.warmup, args.soak = 100, 5, 2, 20
    with tempfile.TemporaryDirectory() as tmp:
        ca = trustme.CA()
        cert = str(Path(tmp) / "server.pem")
        ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(cert)
        context = ssl.create_default_context()
        ca.configure_trust(context)
        context.set_alpn_protocols(["h2"])
        results: dict[str, object] = {}
        args.ca = str(Path(tmp) / "ca.pem")
        ca.cert_pem.write_to_path(args.ca)
        for kind, label, h1 in [
            ("raw", "raw http/1.1", True),
            ("raw-tls", "raw http/1.1 (TLS)", True),
            ("raw-tls", "raw h2 (TLS)", False),
            ("hypercorn-tls", "hypercorn h2 (TLS)", False),
        ]:
            row = await fanout(kind, cert, context, args, h1)
            results[label] = row
            print(
                f"{label:20} {row['us_per_delivery']:8.2f} µs/delivery  "
                f"({row['deliveries']} of {row['expected']} expected deliveries, "
                f"{row['server_cpu_s']} s server CPU)",
                flush=True,
            )
        soaks = {"raw h2 (TLS)": await soak("raw-tls", cert, context, args.soak, args.soak_streams)}
        if args.soak_hypercorn:
            soaks["hypercorn h2 (TLS)"] = await soak(
                "hypercorn-tls", cert, context, min(args.soak, 15), args.soak_streams
            )
        for label, row in soaks.items():
            print(
                f"never-granting client, {label}: RSS {row['rss_mib']} MiB; "
                f"growth after 5 s {row['growth_mib_per_s_after_5s']} MiB/s; "
                f"{row['streams_reset_by_server']} streams reset by the server",
                flush=True,
            )
    report = {
        "invocation": os.environ.get("BENCH_INVOCATION", " ".join(sys.argv)),
        "settings": {k: v for k, v in vars(args).items() if k != "ca"},
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "versions": {p: version(p) for p in ("trio-sse", "trio", "h2", "hypercorn")},
        "fanout": results,
        "never_granting": soaks,
    }
    out = HERE / "results" / time.strftime("h2-%Y%m%d-%H%M%S.json")
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    trio.run(main)
