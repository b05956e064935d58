"""The load benchmark's instruments: the C load generator and the floor server.

These run real sockets on 127.0.0.1 for about a second each: the benchmark's
numbers are only as good as the load generator's counting, so a parser or
phase bug must fail here, not show up as a suspiciously good result.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler (cc)")


@pytest.fixture(scope="module")
def loadgen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    exe = tmp_path_factory.mktemp("build") / "loadgen"
    subprocess.run(
        ["cc", "-O2", "-Wall", "-Werror", "-o", str(exe), str(BENCH / "loadgen.c")], check=True
    )
    return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the floor server exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise AssertionError("the floor server did not listen")


@pytest.fixture
def floor(tmp_path: Path) -> Iterator[Callable[..., int]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(rate: float, padding: int = 64) -> int:
        port = free_port()
        with open(tmp_path / f"floor-{port}.log", "wb") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    str(BENCH / "servers" / "floor.py"),
                    "--port",
                    str(port),
                    "--rate",
                    str(rate),
                    "--padding",
                    str(padding),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        procs.append(proc)
        wait_listening(port, proc)
        return port

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def run_loadgen(exe: Path, port: int | str, *args: str) -> tuple[dict[str, Any], list[str]]:
    out = subprocess.run(
        [str(exe), "--port", str(port), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    lines = out.stdout.splitlines()
    return json.loads(lines[-1]), [line for line in lines if line.startswith("#")]


def test_counts_every_event_and_its_latency(loadgen: Path, floor: Callable[..., int]) -> None:
    port = floor(rate=50)
    r, marks = run_loadgen(loadgen, port, "--clients", "20", "--warmup", "0.3", "--duration", "1")
    assert marks == ["#warmup", "#window", "#end"]
    assert r["connected_at_window"] == 20
    assert r["never_connected"] == r["cut"] == r["starved"] == 0
    # 20 clients x 50 ev/s x 1 s, give or take a tick at each edge of the window
    # (and a few late ticks of the floor's publisher on a loaded machine).
    assert 20 * 44 <= r["events"] <= 20 * 52
    assert r["latency_us"]["count"] == r["events"]
    assert 0 < r["latency_us"]["p50"] <= r["latency_us"]["p99"] <= r["latency_us"]["max"]
    assert r["latency_us"]["max"] < 1_000_000
    assert r["gaps"] == r["reorders"] == r["bad_lines"] == 0
    assert 42 <= r["published_per_s"] <= 55
    # What the clients counted is what the server published while they watched.
    assert abs(r["events"] - 20 * r["published_per_s"]) <= 20 * 3
    assert r["cpu_s"] >= 0


def _crafted_server(listener: socket.socket, events: int, ready: threading.Event) -> None:
    """Two clients: one chunked with awkward splits, one close-delimited with CRLFs.

    Both streams end inside the load generator's window.
    """
    conns: list[socket.socket] = []
    try:
        _serve_crafted(listener, events, ready, conns)
    except OSError:
        pass  # the load generator went away: its JSON tells the test what happened
    finally:
        for conn in conns:
            conn.close()


def _serve_crafted(
    listener: socket.socket, events: int, ready: threading.Event, conns: list[socket.socket]
) -> None:
    for _ in range(2):
        conn, _ = listener.accept()
        conns.append(conn)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.recv(4096)
    chunked, plain = conns
    chunked.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n")
    plain.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
    ready.wait(5)  # the load generator's window has begun
    for seq in range(1, events + 1):
        body = f": comment\nid: {seq}\ndata: {time.monotonic_ns()} {seq} pad\n\n".encode()
        half = len(body) // 2  # splits the data line across two chunks
        wire = b"%x;ext=1\r\n%b\r\n%X\r\n%b\r\n" % (
            half,
            body[:half],
            len(body) - half,
            body[half:],
        )
        for i in range(0, len(wire), 7):  # and across writes
            chunked.sendall(wire[i : i + 7])
        plain.sendall(body.replace(b"\n", b"\r\n"))
        time.sleep(0.01)
    chunked.sendall(b"0\r\n\r\n")  # the last chunk ends that stream
    time.sleep(0.1)


def test_parses_chunked_and_close_delimited_bodies(loadgen: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(10)  # accept() must not wait for ever if the client fails
        ready = threading.Event()
        server = threading.Thread(target=_crafted_server, args=(listener, 30, ready), daemon=True)
        server.start()
        proc = subprocess.Popen(
            [
                str(loadgen),
                "--port",
                str(listener.getsockname()[1]),
                "--clients",
                "2",
                "--warmup",
                "0",
                "--duration",
                "0.8",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        with proc.stdout:
            lines = []
            for line in proc.stdout:
                lines.append(line)
                if line.startswith("#window"):
                    ready.set()
        proc.wait(10)
        server.join(10)
    r = json.loads(lines[-1])
    assert r["events"] == 60
    assert r["gaps"] == r["bad_lines"] == 0
    # Both streams ended inside the window: one by its terminating chunk, one by close.
    assert r["cut"] == 2


def test_the_floor_evicts_a_stalled_client(loadgen: Path, floor: Callable[..., int]) -> None:
    port = floor(rate=100, padding=32 * 1024)  # 3.2 MB/s per client
    r, marks = run_loadgen(
        loadgen,
        port,
        *[
            "--clients",
            "10",
            "--warmup",
            "0.2",
            "--duration",
            "1.5",
            "--stalled",
            "1",
            "--stall-at",
            "0.3",
            "--drain",
            "2",
        ],
    )
    assert marks == ["#warmup", "#window", "#stall", "#end"]
    stall = r["stall"]
    assert stall["clients"] == 1
    assert stall["evicted"] == 1
    assert stall["still_open"] == 0
    assert stall["others_during_us"]["count"] > 0
    assert r["cut"] == 0  # an evicted stalled client is not counted as cut


def test_churn_reconnects_clients(loadgen: Path, floor: Callable[..., int]) -> None:
    port = floor(rate=20)
    r, marks = run_loadgen(
        loadgen,
        port,
        *[
            "--clients",
            "20",
            "--warmup",
            "0.2",
            "--duration",
            "1",
            "--churn",
            "100",
            "--settle",
            "0.2",
        ],
    )
    assert marks == ["#warmup", "#window", "#end", "#settled"]
    assert 10 <= r["churned"] <= 30  # 100% of 20 clients per second, for a second
    assert r["reconnect_us"]["count"] >= r["churned"] - 2
    assert r["connected_at_end"] == 20
    assert r["cut"] == 0
    assert r["events"] > 20 * 20 * 0.5


def test_spreads_clients_over_several_ports(loadgen: Path, floor: Callable[..., int]) -> None:
    first, second = floor(rate=50), floor(rate=50)
    # One port: per_port has one entry, with every event.
    r, _ = run_loadgen(loadgen, first, "--clients", "9", "--warmup", "0.3", "--duration", "1")
    assert [p["events"] for p in r["per_port"]] == [r["events"]]
    ports = f"{first},{second}"
    r, marks = run_loadgen(loadgen, ports, "--clients", "9", "--warmup", "0.3", "--duration", "1")
    assert marks == ["#warmup", "#window", "#end"]
    one, two = r["per_port"]
    assert (one["port"], two["port"]) == (first, second)
    # Client i goes to port i mod 2: five on the first, four on the second.
    assert (one["connected_at_window"], two["connected_at_window"]) == (5, 4)
    assert one["events"] + two["events"] == r["events"]
    assert 5 * 48 <= one["events"] <= 5 * 52
    assert 4 * 48 <= two["events"] <= 4 * 52
    for p in (one, two):
        assert p["latency_us"]["count"] == p["events"]
    assert r["gaps"] == r["reorders"] == 0
