"""Memory per open topic stream, and after churn: trio-sse against the bare-Python floor.

Run it with ``python3 noxfile.py -s bench-memory`` (arguments after ``--``):

    --streams 1000,10000,19000   open streams, in total, one measurement each
    --processes 1                server processes the streams are spread over
    --churn-rounds 10            rounds of connecting and dropping --churn streams
    --hold 12 --settle 16        seconds before sampling a loaded / a disconnected server
    --churn 10000                streams per churn round (spread as above)
    --peers trio-sse,floor       servers to measure (the floor: one process only)
    --trio-sse REV               a git revision of trio_sse/ instead of the work tree
    --gc                         also count the servers' tracked objects and time a
                                 full collection while the streams are held
    --workers N                  trio-sse only: one `trio-sse serve --workers N` on one
                                 port, its topic on a private redis-server (RSS of the
                                 supervisor, the workers and redis-server, summed)
    --malloc                     start the servers with PYTHONMALLOC=malloc
    --release-every S            trio-sse servers run the memory recipe of
                                 docs/deploying.md every S seconds (gc.collect(1),
                                 gc.freeze(), gc.collect(), trio_sse.release_memory())

Strategy
--------

Each server process is ``servers/trio_sse_server.py`` (a ``Broker`` topic,
``topic_stream``, the raw server, default ``Config`` apart from
``max_connections``: heartbeats every 15 s) publishing ``--rate`` events per
second (0.1). Streams are held by *holder* processes (this file, ``--hold``):
plain non-blocking sockets that send ``GET /sub`` and read and drop what
comes. Client ``i`` connects to server ``i mod processes`` from source address
``127.0.0.<10 + i // per_holder>``: one source address has about 28,000
ephemeral ports, and one process may hold at most ``RLIMIT_NOFILE``
descriptors (20,000 on the development machine, which is why 100,000 streams
need several server and holder processes there).

For each N: start the servers, open and drop 100 streams (lazy imports,
first-request caches), sample every server's ``VmRSS`` (the baseline), open
N streams, wait until every holder has its response heads and the servers have
delivered ``--events`` events more, sample again. Bytes per stream is
(RSS at N - RSS at 0) / N, summed over the server processes. Churn: with the
same servers, ``--churn-rounds`` rounds of opening ``--churn`` streams and
closing them all; RSS afterwards against the baseline.

Nothing here changes the servers' GC settings, unless ``--release-every`` asks
for the recipe (which freezes what is tracked).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SERVERS = HERE / "servers"
RESULTS = HERE / "results"
HOST = "127.0.0.1"
#: Streams one holder process opens (below its descriptor limit and the
#: ephemeral ports of one source address).
PER_HOLDER = 15_000


# ------------------------------------------------------------------ holders


def hold(port_list: str, count: int, source: str, inflight: int = 256) -> None:
    """Open ``count`` streams (round robin over ports) and hold them; print ``ready``."""
    ports = [int(p) for p in port_list.split(",")]
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sel = selectors.EpollSelector()
    request = b"GET /sub HTTP/1.1\r\nHost: bench\r\n\r\n"
    started = headed = 0
    connecting: set[socket.socket] = set()
    failed: dict[str, int] = {}
    waiting: set[socket.socket] = set()
    deadline = time.monotonic() + 120
    while (started < count or connecting or waiting) and time.monotonic() < deadline:
        while started < count and len(connecting) + len(waiting) < inflight:
            s = socket.socket()
            s.setblocking(False)
            try:
                s.bind((source, 0))
            except OSError as exc:  # ports of this address in TIME_WAIT: say so
                print(f"bench-memory: {source}: {exc}", file=sys.stderr)
                s.close()
                count = started
                break
            with contextlib.suppress(BlockingIOError):
                s.connect((HOST, ports[started % len(ports)]))
            sel.register(s, selectors.EVENT_WRITE)
            connecting.add(s)
            started += 1
        for key, _ in sel.select(0.5):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            if s in connecting:
                connecting.discard(s)
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    failed[os.strerror(err)] = failed.get(os.strerror(err), 0) + 1
                    sel.unregister(s)
                    s.close()
                    continue
                s.send(request)
                waiting.add(s)
                sel.modify(s, selectors.EVENT_READ)
                continue
            data = _recv(s)
            if s in waiting and data:
                waiting.discard(s)
                if data.startswith(b"HTTP/1.1 200"):
                    headed += 1
                else:  # a 503 (max_connections) is an answer, not a stream
                    status = data[:12].decode("latin-1")
                    failed[status] = failed.get(status, 0) + 1
            elif not data:
                if s in waiting:
                    failed["closed before the head"] = failed.get("closed before the head", 0) + 1
                waiting.discard(s)
                sel.unregister(s)
                s.close()
    left = len(connecting) + len(waiting)
    if left:
        failed["still waiting at the deadline"] = left
    if failed:
        print(f"bench-memory: {source}: not served: {failed}", file=sys.stderr, flush=True)
    print(f"ready {headed}", flush=True)
    while True:  # read and drop until killed
        for key, _ in sel.select(1):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            if not _recv(s):
                sel.unregister(s)
                s.close()


def _recv(s: socket.socket) -> bytes:
    try:
        return s.recv(65536)
    except BlockingIOError:
        return b"-"
    except OSError:
        return b""


@contextlib.contextmanager
def holders(ports: list[int], total: int, source: int = 10) -> Iterator[int]:
    """Open ``total`` streams over ``ports`` from several holder processes; yields how many.

    Holder ``k`` connects from ``127.0.0.<source + k>``: a closed connection
    keeps its port in TIME_WAIT for a minute, so churn rounds use fresh
    source addresses.
    """
    procs: list[subprocess.Popen[bytes]] = []
    try:
        k = 0
        left = total
        while left > 0:
            n = min(PER_HOLDER, left)
            # Rotate the ports so that every server gets its share.
            rotated = ports[(total - left) % len(ports) :] + ports[: (total - left) % len(ports)]
            argv = [sys.executable, __file__, "--hold", ",".join(map(str, rotated)), str(n)]
            argv.append(f"127.0.0.{source + k}")
            procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE))
            left -= n
            k += 1
        ready = 0
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline().decode().split()
            ready += int(line[1]) if len(line) == 2 else 0
        yield ready
    finally:
        for p in procs:
            p.kill()
            p.wait()


# ------------------------------------------------------------------ servers


def rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` and of its child processes (a supervisor's workers), in kB."""
    total = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                total = int(line.split()[1])
    # Children are listed under the thread that started them: read every thread's.
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            total += sum(rss_kb(int(child)) for child in task.read_text().split())
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def servers(
    peer: str, count: int, rate: float, log: Path, source: Path, extra_env: dict[str, str]
) -> Iterator[list[tuple[int, int]]]:
    """Start ``count`` server processes (trio-sse from ``source``); yields ``(pid, port)``."""
    script = {"trio-sse": "trio_sse_server.py", "floor": "floor.py"}[peer]
    procs: list[tuple[subprocess.Popen[bytes], int]] = []
    env = {**os.environ, "PYTHONPATH": str(source), **extra_env}
    try:
        with log.open("ab") as out:
            for _ in range(count):
                port = free_port()
                argv = [sys.executable, str(SERVERS / script), "--port", str(port)]
                argv += ["--rate", str(rate)]
                p = subprocess.Popen(argv, cwd=SERVERS, stdout=out, stderr=out, env=env)
                procs.append((p, port))
        for p, port in procs:
            _wait_listening(p, port)
        yield [(p.pid, port) for p, port in procs]
    finally:
        for p, _ in procs:
            p.kill()
            p.wait()


@contextlib.contextmanager
def worker_servers(
    workers: int, rate: float, log: Path, source: Path, extra_env: dict[str, str]
) -> Iterator[list[tuple[int, int]]]:
    """``trio-sse serve --workers N`` on Redis; yields ``[(supervisor, port), (redis, 0)]``."""
    sys.path.insert(0, str(HERE))
    from scale_procs import Redis

    redis = Redis(appendonly=False)
    redis.start()
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(source), str(SERVERS)]),
        "BENCH_REDIS": redis.url,
        "BENCH_RATE": str(rate),
        "BENCH_WORKERS": str(workers),
        **extra_env,
    }
    argv = [sys.executable, "-m", "trio_sse", "serve", "trio_sse_workers_server:app"]
    argv += ["--workers", str(workers), "--port", str(port), "--log-level", "warning"]
    try:
        with log.open("ab") as out:
            p = subprocess.Popen(argv, cwd=SERVERS, stdout=out, stderr=out, env=env)
        try:
            _wait_listening(p, port)
            yield [(p.pid, port), (redis.pid, 0)]
        finally:
            p.terminate()  # the supervisor stops its workers
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    finally:
        redis.close()


def _wait_listening(p: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise RuntimeError(f"server exited with {p.returncode}")
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not listen")


def probe(port: int, path: str) -> dict[str, float]:
    """GET a trio-sse server's JSON probe: ``/gc`` (tracked objects, one full
    collection timed) or ``/releases`` (runs of the memory recipe, the longest)."""
    with socket.create_connection((HOST, port), timeout=30) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    result: dict[str, float] = json.loads(data.partition(b"\r\n\r\n")[2])
    return result


def settle(pids: list[int], seconds: float) -> int:
    """Wait, then the summed RSS in kB (the lowest of a few samples: noise is upward)."""
    time.sleep(seconds)
    samples = []
    for _ in range(3):
        samples.append(sum(rss_kb(pid) for pid in pids))
        time.sleep(0.3)
    return min(samples)


# ------------------------------------------------------------------ driver


#: Source addresses used so far: each measurement takes fresh ones, since the
#: ports of a closed connection stay in TIME_WAIT for a minute.
_next_source = [30]


def _sources(total: int) -> int:
    first = _next_source[0]
    _next_source[0] += -(-total // PER_HOLDER)
    if _next_source[0] > 250:
        _next_source[0] = 30
        first = 30
    return first


def measure(peer: str, n: int, args: argparse.Namespace, log: Path) -> dict[str, Any]:
    processes = 1 if peer == "floor" else args.processes
    env = {"PYTHONMALLOC": "malloc"} if args.malloc else {}
    if args.release_every and peer != "floor":
        env["BENCH_RELEASE_EVERY"] = str(args.release_every)
    if args.workers and peer != "floor":
        processes = args.workers
        launch = worker_servers(args.workers, args.rate, log, args.source, env)
    else:
        launch = servers(peer, processes, args.rate, log, args.source, env)
    with launch as procs:
        pids = [pid for pid, _ in procs]
        ports = [port for _, port in procs if port]
        with holders(ports, 100, source=9):
            settle(pids, 1.0)
        base = settle(pids, 1.0)
        # Summed over the servers, like RSS.
        probing = args.gc and peer != "floor"
        base_objects = sum(probe(port, "/gc")["objects"] for port in ports) if probing else 0
        started = time.monotonic()
        with holders(ports, n, source=_sources(n)) as ready:
            connected_s = time.monotonic() - started
            # Let a few events and (for 15 s heartbeats) the first heartbeats go out.
            loaded = settle(pids, args.hold)
            probes = [probe(port, "/gc") for port in ports for _ in range(3)] if probing else []
        row: dict[str, Any] = {
            "peer": peer,
            "streams": n,
            "served": ready,
            "processes": processes,
            "workers": bool(args.workers and peer != "floor"),
            "rss_base_mb": base / 1024,
            "rss_mb": loaded / 1024,
            "bytes_per_stream": (loaded - base) * 1024 / max(ready, 1),
            "connect_s": connected_s,
            "allocator": "malloc" if args.malloc else "pymalloc",
            "release_every_s": args.release_every if peer != "floor" else 0,
        }
        if probes:
            row["gc_objects_per_stream"] = (
                sum(p["objects"] for p in probes) / 3 - base_objects
            ) / max(ready, 1)
            row["gc_full_collection_ms"] = [round(p["full_collection_ms"]) for p in probes]
        if args.churn_rounds:
            # The high-water mark: freed memory stays with the allocator
            # (pymalloc arenas with a survivor are not returned), so rounds
            # are compared with the RSS after the first round too.
            first = settle(pids, args.settle)
            for _ in range(args.churn_rounds):
                with holders(ports, args.churn, source=_sources(args.churn)):
                    pass
            after = settle(pids, args.settle)
            row["churn"] = {
                "rounds": args.churn_rounds,
                "streams_per_round": args.churn,
                "rss_before_mb": base / 1024,
                "rss_after_first_mb": first / 1024,
                "rss_after_mb": after / 1024,
                "growth_percent": 100 * (after - first) / first,
                "over_cold_percent": 100 * (after - base) / base,
            }
            if args.release_every and peer != "floor":
                runs = [probe(port, "/releases") for port in ports]
                row["churn"]["releases"] = sum(r["count"] for r in runs)
                row["churn"]["release_max_ms"] = max(r["max_ms"] for r in runs)
        return row


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--hold":
        hold(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="1000,10000", help="comma-separated totals")
    parser.add_argument("--processes", type=int, default=1, help="trio-sse server processes")
    parser.add_argument("--churn-rounds", type=int, default=0)
    parser.add_argument("--churn", type=int, default=10_000, help="streams per churn round")
    parser.add_argument("--peers", default="trio-sse,floor")
    parser.add_argument("--rate", type=float, default=0.1, help="events/s per server")
    parser.add_argument(
        "--gc",
        action="store_true",
        help="trio-sse only: tracked objects per stream and three full collections timed",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="trio-sse: one `trio-sse serve --workers N` on Redis instead of --processes",
    )
    parser.add_argument(
        "--malloc", action="store_true", help="start the servers with PYTHONMALLOC=malloc"
    )
    parser.add_argument(
        "--release-every",
        type=float,
        default=0.0,
        metavar="S",
        help="trio-sse: run docs/deploying.md's memory recipe every S seconds (0: never)",
    )
    parser.add_argument("--hold", type=float, default=12.0, help="seconds held before sampling")
    parser.add_argument(
        "--settle",
        type=float,
        default=16.0,
        help="seconds after a disconnect before sampling (deadlines of the closed streams, "
        "up to the 15 s heartbeat, expire: trio drops them from its heap then)",
    )
    parser.add_argument(
        "--trio-sse",
        default="worktree",
        metavar="REV",
        help="git revision of trio_sse/ to measure, or 'worktree' (default): the files as they are",
    )
    args = parser.parse_args()
    if args.workers and (args.gc or args.release_every):
        # servers/trio_sse_workers_server.py has no /gc or /releases probe.
        parser.error("--gc and --release-every measure trio_sse_server.py, not --workers")
    if args.gc and args.churn_rounds:
        # A full collection empties CPython's free lists: it changes churn's RSS.
        parser.error("--gc and --churn-rounds measure one at a time")
    args.source = HERE.parent
    if args.trio_sse != "worktree":
        sys.path.insert(0, str(HERE))
        from bench_load import export_trio_sse

        args.source, commit = export_trio_sse(args.trio_sse)
        print(f"bench-memory: trio-sse at commit {commit[:12]}")
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log = RESULTS / "logs"
    log.mkdir(exist_ok=True)
    rows = []
    for n in [int(x) for x in args.streams.split(",")]:
        for peer in args.peers.split(","):
            row = measure(peer, n, args, log / f"memory-{stamp}.log")
            rows.append(row)
            churn = row.get("churn")
            print(
                f"{peer:9} N={n:>7,} served {row['served']:>7,} on {row['processes']} proc: "
                f"RSS {row['rss_base_mb']:6.1f} -> {row['rss_mb']:7.1f} MB, "
                f"{row['bytes_per_stream']:7,.0f} B/stream (connect {row['connect_s']:.0f} s)"
                + (
                    f"; churn {churn['rounds']}x{churn['streams_per_round']:,}: "
                    f"RSS {churn['rss_before_mb']:.1f} (cold) / {churn['rss_after_first_mb']:.1f} "
                    f"(after the first {n:,}) -> {churn['rss_after_mb']:.1f} MB "
                    f"({churn['growth_percent']:+.1f} % over the first, "
                    f"{churn['over_cold_percent']:+.1f} % over cold)"
                    + (
                        f"; recipe ran {churn['releases']} times, longest "
                        f"{churn['release_max_ms']:.1f} ms"
                        if "releases" in churn
                        else ""
                    )
                    if churn
                    else ""
                )
                + (
                    f"; {row['gc_objects_per_stream']:.1f} tracked objects per stream, "
                    f"full collection {row['gc_full_collection_ms']} ms"
                    if "gc_full_collection_ms" in row
                    else ""
                ),
                flush=True,
            )
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)
    out = RESULTS / f"memory-{stamp}.json"
    meta = {
        "argv": sys.argv[1:],
        "trio_sse": args.trio_sse,
        "rlimit_nofile": limit,
        "python": sys.version.split()[0],
    }
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    print(f"bench-memory: wrote {out.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
