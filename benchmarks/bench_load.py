"""Fan-out load benchmark: trio-sse side by side with its peers, in one run.

Run it with ``python3 noxfile.py -s bench`` (``-- --quick`` for a run under two
minutes); the nox session installs the peers and builds the load generator.

Strategy
--------

Every server publishes the same broadcast (``data: <CLOCK_MONOTONIC ns> <seq>
<padding>``, see ``servers/_common.py``) to every ``GET /sub`` subscriber. For
each scenario, the peers run one after another, each alone on the machine
with the C load generator (``loadgen.c``), so that the machine's noise hits
them alike; results are reported as ratios against trio-sse.

For one run: start the server (its output goes to a file, never a pipe: a full
pipe freezes a server), wait for its port, check one event's bytes on the
wire, then start the load generator. It prints a marker at each phase change
(``#window``, ``#stall``, ``#end``, ``#settled``); at each marker this driver
samples the server's CPU time (utime + stime of the whole process tree, from
``/proc/<pid>/stat``) and RSS (``VmRSS``), so CPU is measured over exactly the
load generator's measured window. Then the server's process group gets
SIGTERM and, after a short grace, SIGKILL (some servers never exit while
streams are open).

Derived figures: delivered events/s (all clients, measured window), server CPU
microseconds per delivered event, publish-to-receive latency percentiles,
RSS, and the load generator's own CPU per event, to show it is not the
bottleneck.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import importlib.util
import io
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SERVERS = HERE / "servers"
NODE_DIR = HERE / "node"
LOADGEN_SRC = HERE / "loadgen.c"
LOADGEN = HERE / ".build" / "loadgen"
RESULTS = HERE / "results"
LOGS = RESULTS / "logs"
DOCS = ROOT / "docs"
DOC_PAGE = DOCS / "benchmarks.md"
CHART = DOCS / "bench_load.png"
SECTION = "## Fan-out load"
REFERENCE = "trio-sse"
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = 1  # VmRSS is already in kB
X = "\u00d7"  # the multiplication sign, spelled so that linters see no look-alike


# ---------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    """One load shape; every peer runs it with the same parameters."""

    name: str
    title: str
    clients: int
    rate: float
    padding: int = 64
    warmup: float = 2.0
    duration: float = 10.0
    connect_timeout: float = 30.0
    #: Connects in flight at once. A busy server answers a new connection in
    #: hundreds of ms, so too few caps the connect rate; too many overflows a
    #: small accept queue (every peer here listens with a backlog of 4096).
    inflight: int = 256
    stalled: int = 0
    stall_at: float = 0.0
    drain: float = 3.0
    churn: float = 0.0
    settle: float = 0.0

    @property
    def offered(self) -> float:
        """Deliveries per second if every client gets every event."""
        return self.clients * self.rate

    @property
    def kind(self) -> str:
        """``stall``, ``churn`` or ``fanout``: which extra columns apply."""
        if self.stalled:
            return "stall"
        if self.churn:
            return "churn"
        return "fanout"


# A stalled client only tests the server once the kernel's send buffer for it
# (hundreds of KiB, even with the internet-sized MSS the load generator sets on
# it) is full, and then the server's own queue (trio-sse: 64 events): 32 KiB
# events fill the first within seconds, and the stall lasts 17 s. The long
# warm-up lets trio-sse's topic history (100 events) fill before the stall,
# so that RSS growth during the stall is the stalled client's, not history's.
FULL = [
    Scenario("fanout-10", f"1,000 clients {X} 10 ev/s", 1000, 10),
    Scenario("fanout-40", f"1,000 clients {X} 40 ev/s", 1000, 40),
    Scenario("many-1", f"10,000 clients {X} 1 ev/s", 10_000, 1, warmup=3, connect_timeout=60),
    Scenario(
        "stall",
        "1 client stops reading among 1,000 (10 ev/s, 32 KiB events)",
        1000,
        10,
        padding=32 * 1024,
        warmup=8,
        duration=20,
        stalled=1,
        stall_at=3,
    ),
    Scenario(
        "churn", "churn: 5% of 1,000 clients reconnect per second", 1000, 10, churn=5, settle=3
    ),
]

QUICK = [
    Scenario("fanout-10", f"300 clients {X} 10 ev/s (quick)", 300, 10, warmup=1, duration=3),
    Scenario(
        "stall",
        "1 client stops reading among 50 (40 ev/s, 16 KiB events, quick)",
        50,
        40,
        padding=16 * 1024,
        warmup=1,
        duration=5,
        stalled=1,
        stall_at=1,
        drain=1.5,
    ),
]


# -------------------------------------------------------------------- peers


def _modules(*names: str) -> Callable[[], str | None]:
    def missing() -> str | None:
        absent = [n for n in names if importlib.util.find_spec(n) is None]
        if absent:
            return f"not installed: {', '.join(absent)} (the nox session installs it)"
        return None

    return missing


#: Environment for every server process: ``PYTHONPATH`` then points at the
#: trio-sse source under test (see ``--trio-sse``), ahead of the installed one.
SERVER_ENV: dict[str, str] = {}


def _trio_sse(asgi: bool) -> Callable[[], str | None]:
    def missing() -> str | None:
        if asgi and importlib.util.find_spec("hypercorn") is None:
            return "hypercorn is not installed"
        # Ask a child with the servers' environment: the trio-sse under test
        # may not be the one this process would import.
        check = "asgi_missing" if asgi else "missing"
        code = f"import trio_sse_server as m; print(m.{check}() or '')"
        env = {**os.environ, **SERVER_ENV}
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=SERVERS, env=env, capture_output=True, text=True
        )
        if out.returncode:
            last = (out.stderr.strip().splitlines() or ["?"])[-1]
            return f"benchmarks/servers/trio_sse_server.py does not import: {last}"
        return out.stdout.strip() or None

    return missing


def export_trio_sse(rev: str) -> tuple[Path, str]:
    """Extract ``trio_sse/`` as of git revision ``rev`` into ``.build/``.

    Returns the directory to put on ``PYTHONPATH`` and the full commit hash,
    so that a run measures committed code even while the work tree changes.
    """
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    dest = HERE / ".build" / f"trio_sse-{commit[:12]}"
    if not (dest / "trio_sse" / "__init__.py").exists():
        tar = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", commit, "trio_sse"],
            capture_output=True,
            check=True,
        ).stdout
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
            archive.extractall(dest, filter="data")
    return dest, commit


def _express_missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not on PATH"
    if not (NODE_DIR / "node_modules" / "express" / "package.json").exists():
        return "express is not installed (npm install --prefix benchmarks/node failed or not run)"
    return None


@dataclass(frozen=True)
class Peer:
    """A server under test: how to start it, and whether it can run here."""

    name: str
    description: str
    argv: Callable[[int, Scenario], list[str]]
    missing: Callable[[], str | None]
    cwd: Path = SERVERS


def _server_args(port: int, s: Scenario) -> list[str]:
    return f"--port {port} --rate {s.rate} --padding {s.padding}".split()


def _py(script: str) -> Callable[[int, Scenario], list[str]]:
    def argv(port: int, s: Scenario) -> list[str]:
        return [sys.executable, str(SERVERS / script), *_server_args(port, s)]

    return argv


def _hypercorn(port: int, s: Scenario) -> list[str]:
    # Rate and padding reach the app through BENCH_RATE / BENCH_PADDING.
    opts = f"--worker-class trio --workers 1 --backlog 4096 --bind {HOST}:{port}"
    return [sys.executable, "-m", "hypercorn", *opts.split(), "trio_sse_server:app"]


def _node(port: int, s: Scenario) -> list[str]:
    return ["node", str(NODE_DIR / "server.js"), *_server_args(port, s)]


PEERS = [
    Peer(
        "trio-sse",
        "trio-sse, raw h11 server, Broker topic",
        _py("trio_sse_server.py"),
        _trio_sse(False),
    ),
    Peer(
        "trio-sse/hypercorn",
        "trio-sse App under hypercorn --worker-class trio",
        _hypercorn,
        _trio_sse(True),
    ),
    Peer(
        "sse-starlette",
        "sse-starlette on uvicorn (uvloop, httptools), asyncio.Queue per client",
        _py("starlette_server.py"),
        _modules("sse_starlette", "uvicorn", "uvloop", "httptools"),
    ),
    Peer(
        "aiohttp-sse",
        "aiohttp + aiohttp-sse, asyncio.Queue per client",
        _py("aiohttp_server.py"),
        _modules("aiohttp", "aiohttp_sse"),
    ),
    Peer("express", "Node + Express, a Set of responses", _node, _express_missing, cwd=NODE_DIR),
    Peer(
        "trio+h11",
        "hand-written trio + h11, memory channel per client",
        _py("trio_h11_server.py"),
        _modules("trio", "h11"),
    ),
    Peer("floor", "bare Python: one epoll loop, pre-framed chunks", _py("floor.py"), lambda: None),
]


# --------------------------------------------------------- /proc sampling


def _stat(pid: int) -> tuple[int, int] | None:
    """``(ppid, utime + stime ticks)`` of one process, or ``None`` if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # fields[0] is field 3, "state"
    return int(fields[1]), int(fields[11]) + int(fields[12])


def _tree(root: int) -> list[int]:
    """``root`` and its live descendants."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                parents.setdefault(st[0], []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(parents.get(pid, []))
    return out


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass(frozen=True)
class Sample:
    """Server CPU seconds and RSS (MiB) of the process tree at one instant.

    ``machine_busy_s`` is the whole machine's non-idle CPU time, so that the
    CPU used by everything else (other users of a shared machine) can be
    reported next to each result.
    """

    t: float
    cpu_s: float
    rss_mb: float
    processes: int
    machine_busy_s: float


def _machine_busy_s() -> float:
    """Non-idle CPU seconds of all cores since boot (``/proc/stat``)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def sample(root: int) -> Sample:
    """CPU (utime + stime, every thread, every live descendant) and RSS now."""
    pids = _tree(root)
    ticks = sum(st[1] for st in map(_stat, pids) if st is not None)
    rss = sum(_rss_kb(p) for p in pids) * PAGE_KB
    return Sample(time.monotonic(), ticks / CLK_TCK, rss / 1024, len(pids), _machine_busy_s())


# ----------------------------------------------------------------- running


def free_port() -> int:
    """A port that was free a moment ago."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def raise_fd_limit() -> int:
    """Raise RLIMIT_NOFILE to its hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def build_loadgen(force: bool = False) -> Path:
    """Compile ``loadgen.c`` with the system ``cc`` if the binary is stale."""
    if force or not LOADGEN.exists() or LOADGEN.stat().st_mtime < LOADGEN_SRC.stat().st_mtime:
        cc = shutil.which("cc")
        if cc is None:
            raise SystemExit("bench: no C compiler (cc) on PATH; the load generator needs one")
        LOADGEN.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([cc, "-O2", "-Wall", "-o", str(LOADGEN), str(LOADGEN_SRC)], check=True)
    return LOADGEN


_EVENT = re.compile(rb"data: (\d+) (\d+) (x*)\n\n")


def _dechunk(buf: bytes) -> tuple[bytes, bool]:
    """Body bytes of the complete chunks in ``buf`` (no trailer handling)."""
    out, pos = bytearray(), 0
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return bytes(out), False
        size = int(buf[pos:eol].split(b";")[0] or b"0", 16)
        if size == 0:
            return bytes(out), True
        if len(buf) < eol + 2 + size + 2:
            return bytes(out), False
        out += buf[eol + 2 : eol + 2 + size]
        pos = eol + 2 + size + 2


def probe(port: int, padding: int, timeout: float) -> dict[str, Any]:
    """Read the first event from ``GET /sub`` and check its bytes.

    Returns the response head and the event as decoded from the transfer
    coding, so that the JSON records what each server sent.

    Raises:
        RuntimeError: no event arrived in time, or it is not the common format.
    """
    deadline = time.monotonic() + timeout
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(
            f"GET /sub HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        buf = b""
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = s.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            buf += data
            head, sep, rest = buf.partition(b"\r\n\r\n")
            if not sep:
                continue
            chunked = b"transfer-encoding: chunked" in head.lower()
            body = _dechunk(rest)[0] if chunked else rest
            m = _EVENT.search(body)
            if m:
                if len(m.group(3)) != padding:
                    raise RuntimeError(f"padding is {len(m.group(3))} bytes, expected {padding}")
                return {
                    "head": head.decode("latin-1").split("\r\n"),
                    "chunked": chunked,
                    "event": m.group(0).decode()[:80] + ("..." if len(m.group(0)) > 80 else ""),
                    # Everything up to that event: other fields (id:) and events.
                    "body_start": body[: min(m.start() + 80, 400)].decode("latin-1"),
                }
    raise RuntimeError(f"no event within {timeout:.0f} s; got {buf[:300]!r}")


@contextlib.contextmanager
def running(
    peer: Peer, scenario: Scenario, port: int, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``peer`` for ``scenario`` on ``port``; stop its process group on exit."""
    env = {**os.environ, **SERVER_ENV}
    env.update(
        BENCH_PORT=str(port), BENCH_RATE=str(scenario.rate), BENCH_PADDING=str(scenario.padding)
    )
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            peer.argv(port, scenario),
            cwd=peer.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes], grace: float = 0.3) -> None:
    """SIGTERM the server's process group, then SIGKILL after ``grace`` seconds."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers in the group, too
    proc.wait()


def wait_listening(
    proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 20
) -> None:
    """Wait until ``port`` accepts connections.

    Raises:
        RuntimeError: the server exited or did not listen in time.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {tail(log)}")
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen within {timeout:.0f} s: {tail(log)}")


def tail(path: Path, n: int = 600) -> str:
    """The last ``n`` characters of a log, on one line."""
    try:
        return " | ".join(path.read_text(errors="replace")[-n:].strip().splitlines())
    except OSError:
        return ""


def loadgen_argv(port: int, s: Scenario) -> list[str]:
    """The load generator's command line for scenario ``s``."""
    argv = [
        str(LOADGEN),
        "--port",
        str(port),
        "--clients",
        str(s.clients),
        "--warmup",
        str(s.warmup),
        "--duration",
        str(s.duration),
        "--connect-timeout",
        str(s.connect_timeout),
        "--inflight",
        str(s.inflight),
    ]
    if s.stalled:
        argv += [
            "--stalled",
            str(s.stalled),
            "--stall-at",
            str(s.stall_at),
            "--drain",
            str(s.drain),
        ]
    if s.churn:
        argv += ["--churn", str(s.churn), "--settle", str(s.settle)]
    return argv


def drive(
    proc: subprocess.Popen[bytes], port: int, s: Scenario, log: Path
) -> tuple[dict[str, Any], dict[str, Sample]]:
    """Run the load generator; sample the server at each of its markers."""
    limit = s.connect_timeout + s.warmup + s.duration + s.settle + s.drain + 30
    marks: dict[str, Sample] = {"start": sample(proc.pid)}
    result: dict[str, Any] | None = None
    with open(log, "wb") as err:
        lg = subprocess.Popen(
            loadgen_argv(port, s),
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        watchdog = threading.Timer(limit, lg.kill)
        watchdog.start()
        try:
            assert lg.stdout is not None
            with lg.stdout:
                for line in lg.stdout:
                    if line.startswith("#"):
                        marks[line[1:].strip()] = sample(proc.pid)
                    elif line.startswith("{"):
                        result = json.loads(line)
            lg.wait()
        finally:
            watchdog.cancel()
    marks["final"] = sample(proc.pid)
    if result is None:
        raise RuntimeError(f"load generator gave no result (exit {lg.returncode}): {tail(log)}")
    return result, marks


def _ms(us: float | None) -> float | None:
    return None if us is None else round(us / 1000, 2)


def metrics(s: Scenario, lg: dict[str, Any], marks: dict[str, Sample]) -> dict[str, Any]:
    """The figures reported for one run."""
    window = lg["window_s"]
    events = lg["events"]
    cpu = marks["end"].cpu_s - marks["window"].cpu_s
    lat = lg["latency_us"]
    m: dict[str, Any] = {
        "offered_per_s": s.offered,
        "delivered_per_s": round(events / window, 1),
        "delivered_fraction": round(events / window / s.offered, 4),
        "published_per_s": lg["published_per_s"],
        "server_cpu_s": round(cpu, 3),
        "server_cpu_percent": round(100 * cpu / window, 1),
        "us_per_delivery": round(cpu / events * 1e6, 2) if events else None,
        "p50_ms": _ms(lat["p50"]),
        "p99_ms": _ms(lat["p99"]),
        "max_ms": _ms(lat["max"]),
        "rss_mb": round(marks["end"].rss_mb, 1),
        "rss_window_start_mb": round(marks["window"].rss_mb, 1),
        "processes": marks["end"].processes,
        "connected": lg["connected_at_window"],
        "never_connected": lg["never_connected"],
        "cut": lg["cut"],
        "starved": lg["starved"],
        # Connected at the window's end and sent events in it (stalled ones excluded).
        "served": lg["served"],
        "gaps": lg["gaps"],
        "connect_p99_ms": _ms(lg["connect_us"]["p99"]),
        "loadgen_cpu_percent": round(100 * lg["cpu_s"] / window, 1),
        # Everything else on the machine during the window, in cores.
        "other_load_cores": round(
            (marks["end"].machine_busy_s - marks["window"].machine_busy_s - cpu - lg["cpu_s"])
            / window,
            2,
        ),
        "loadgen_us_per_event": round(lg["cpu_s"] / events * 1e6, 2) if events else None,
        "loadgen_user_us_per_event": round(lg["cpu_user_s"] / events * 1e6, 2) if events else None,
    }
    if s.stalled:
        st = lg["stall"]
        m["stall"] = {
            "others_p99_before_ms": _ms(st["others_before_us"]["p99"]),
            "others_p99_during_ms": _ms(st["others_during_us"]["p99"]),
            "rss_at_stall_mb": round(marks["stall"].rss_mb, 1) if "stall" in marks else None,
            "rss_end_mb": round(marks["end"].rss_mb, 1),
            "rss_after_drain_mb": round(marks["final"].rss_mb, 1),
            "evicted": st["evicted"],
            "still_open": st["still_open"],
            "drained_events": st["drained_events"],
            "dropped_events": st["drain_gaps"],
            "backlog_s": round(st["drain_max_lag_us"] / 1e6, 2),
            "stall_s": round(window - st["at_s"], 2),
        }
    if s.churn:
        m["churn"] = {
            "reconnects": lg["churned"],
            "reconnect_p50_ms": _ms(lg["reconnect_us"]["p50"]),
            "reconnect_p99_ms": _ms(lg["reconnect_us"]["p99"]),
            "reconnect_max_ms": _ms(lg["reconnect_us"]["max"]),
            "reconnected": lg["reconnect_us"]["count"],
            "rss_window_start_mb": round(marks["window"].rss_mb, 1),
            "rss_end_mb": round(marks["end"].rss_mb, 1),
            "rss_settled_mb": round(marks["settled"].rss_mb, 1) if "settled" in marks else None,
        }
    return m


@dataclass
class Run:
    """The outcome of one peer in one scenario."""

    peer: str
    scenario: str
    status: str  # "ok", "skipped" or "failed"
    reason: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    loadgen: dict[str, Any] = field(default_factory=dict)
    wire: dict[str, Any] = field(default_factory=dict)


def run_one(peer: Peer, s: Scenario, stamp: str, reason: str | None) -> Run:
    """Start ``peer``, check its bytes, load it with ``s``, stop it (unless ``reason``)."""
    if reason:
        return Run(peer.name, s.name, "skipped", reason)
    port = free_port()
    slug = re.sub(r"[^a-z0-9]+", "-", peer.name.lower())
    log = LOGS / f"{stamp}-{s.name}-{slug}.log"
    lg_log = LOGS / f"{stamp}-{s.name}-{slug}.loadgen.log"
    try:
        with running(peer, s, port, log) as proc:
            wait_listening(proc, port, log)
            wire = probe(port, s.padding, timeout=3 + 2 / s.rate)
            lg, marks = drive(proc, port, s, lg_log)
            alive = proc.poll() is None
        run = Run(peer.name, s.name, "ok", metrics=metrics(s, lg, marks), loadgen=lg, wire=wire)
        if not alive:
            run.reason = f"server exited during the run: {tail(log)}"
        return run
    except (RuntimeError, OSError) as exc:
        return Run(peer.name, s.name, "failed", f"{exc}")


# ------------------------------------------------------------------ report


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cmd(*argv: str) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "not found"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"


def machine() -> dict[str, Any]:
    """CPU model, cores, kernel, memory."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "memory": mem,
        "python": platform.python_version(),
        "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }


def versions() -> dict[str, str]:
    """Versions of every peer and of the tools."""
    out = {
        name: _version(name)
        for name in (
            "trio-sse",
            "trio",
            "h11",
            "hypercorn",
            "sse-starlette",
            "starlette",
            "uvicorn",
            "uvloop",
            "httptools",
            "aiohttp",
            "aiohttp-sse",
        )
    }
    out["node"] = _cmd("node", "--version")
    express = NODE_DIR / "node_modules" / "express" / "package.json"
    out["express"] = (
        json.loads(express.read_text())["version"] if express.exists() else "not installed"
    )
    out["cc"] = _cmd("cc", "-dumpfullversion")
    return out


def _dirty() -> bool:
    """Whether ``trio_sse/`` has uncommitted changes."""
    return bool(
        subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "trio_sse"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    )


def _fmt(v: Any, spec: str = "") -> str:
    if v is None:
        return "—"
    return format(v, spec)


def _ratio(v: float | None, ref: float | None) -> str:
    if v is None or not ref:
        return ""
    return f" ({v / ref:.2f}{X})"


def scenario_table(s: Scenario, runs: list[Run]) -> list[str]:
    """Markdown lines for one scenario: one row per peer."""
    ref = next((r.metrics for r in runs if r.peer == REFERENCE and r.status == "ok"), {})
    head = [
        "server",
        "delivered/s (of offered)",
        f"server CPU µs/delivery ({X} trio-sse)",
        "server CPU",
        "p50 / p99 / max ms",
        "RSS MB",
        "clients served",
        "load-gen CPU (µs/ev)",
        "other load (cores)",
    ]
    if s.kind == "stall":
        head += [
            "others' p99 before → during stall",
            "RSS at stall → end",
            f"stalled client after {s.duration - s.stall_at:.0f} s",
        ]
    if s.kind == "churn":
        head += ["reconnect p50 / p99 ms", "RSS start → end → settled"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        if r.status != "ok":
            lines.append(f"| {r.peer} | {r.status}: {r.reason[:200]} |" + " |" * (len(head) - 2))
            continue
        m = r.metrics
        clients = f"{m['served']:,} / {s.clients - s.stalled:,}"
        notes = []
        if m["never_connected"]:
            notes.append(f"{m['never_connected']:,} never connected")
        if m["cut"]:
            notes.append(f"{m['cut']:,} cut")
        if m["starved"]:
            notes.append(f"{m['starved']:,} got nothing")
        if notes:
            clients += " (" + ", ".join(notes) + ")"
        row = [
            r.peer,
            f"{m['delivered_per_s']:,.0f} ({100 * m['delivered_fraction']:.0f}%)",
            _fmt(m["us_per_delivery"], ".1f")
            + _ratio(m["us_per_delivery"], ref.get("us_per_delivery")),
            f"{m['server_cpu_percent']:.0f}%",
            f"{_fmt(m['p50_ms'], '.1f')} / {_fmt(m['p99_ms'], '.1f')} / {_fmt(m['max_ms'], '.0f')}",
            f"{m['rss_mb']:.0f}",
            clients,
            f"{m['loadgen_cpu_percent']:.0f}% ({_fmt(m['loadgen_us_per_event'], '.1f')})",
            f"{max(0.0, m['other_load_cores']):.1f}",
        ]
        if s.kind == "stall":
            st = m["stall"]
            if st["evicted"]:
                verdict = "evicted"
            else:
                verdict = "kept open"
                verdict += f", {st['backlog_s']:.1f} s behind" if st["drained_events"] else ""
            verdict += f", {st['dropped_events']} dropped" if st["dropped_events"] else ""
            row += [
                f"{_fmt(st['others_p99_before_ms'], '.1f')} → "
                f"{_fmt(st['others_p99_during_ms'], '.1f')}",
                f"{_fmt(st['rss_at_stall_mb'], '.0f')} → {st['rss_end_mb']:.0f}",
                verdict,
            ]
        if s.kind == "churn":
            ch = m["churn"]
            row += [
                f"{_fmt(ch['reconnect_p50_ms'], '.1f')} / {_fmt(ch['reconnect_p99_ms'], '.1f')}",
                f"{ch['rss_window_start_mb']:.0f} → {ch['rss_end_mb']:.0f} → "
                f"{_fmt(ch['rss_settled_mb'], '.0f')}",
            ]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def targets_table(scenarios: list[Scenario], runs: list[Run]) -> list[str]:
    """trio-sse against the issue's targets (full runs only)."""
    by = {(r.scenario, r.peer): r for r in runs}

    def get(name: str) -> dict[str, Any] | None:
        r = by.get((name, REFERENCE))
        return r.metrics if r and r.status == "ok" else None

    rows = []
    m = get("fanout-10")
    if m:
        rows.append(
            (
                f"1,000 {X} 10 ev/s",
                "≤ 20 µs/delivery; p99 ≤ 40 ms",
                f"{_fmt(m['us_per_delivery'], '.1f')} µs; p99 {_fmt(m['p99_ms'], '.1f')} ms",
                (m["us_per_delivery"] or 1e9) <= 20 and (m["p99_ms"] or 1e9) <= 40,
            )
        )
    m = get("fanout-40")
    if m:
        rows.append(
            (
                f"1,000 {X} 40 ev/s",
                "all 40,000 delivered/s",
                f"{m['delivered_per_s']:,.0f}/s ({100 * m['delivered_fraction']:.1f}%)",
                m["delivered_fraction"] >= 0.99,
            )
        )
    m = get("many-1")
    if m:
        all_in = m["served"] == 10_000
        rows.append(
            (
                f"10,000 {X} 1 ev/s",
                "all connected; ≤ 25 µs/delivery; RSS ≤ 100 MB",
                f"{m['served']:,} served; {_fmt(m['us_per_delivery'], '.1f')} µs; "
                f"{m['rss_mb']:.0f} MB",
                all_in and (m["us_per_delivery"] or 1e9) <= 25 and m["rss_mb"] <= 100,
            )
        )
    m = get("stall")
    if m:
        st = m["stall"]
        before, during = st["others_p99_before_ms"] or 0, st["others_p99_during_ms"] or 0
        rows.append(
            (
                "1 stalled among 1,000",
                "others' p99 unchanged; RSS flat; evicted",
                f"p99 {before:.1f} → {during:.1f} ms; RSS {_fmt(st['rss_at_stall_mb'], '.0f')} → "
                f"{st['rss_end_mb']:.0f} MB; {'evicted' if st['evicted'] else 'not evicted'}",
                during <= max(1.25 * before, before + 5)
                and st["rss_end_mb"] <= (st["rss_at_stall_mb"] or 0) + 5
                and bool(st["evicted"]),
            )
        )
    m = get("churn")
    if m:
        ch = m["churn"]
        rows.append(
            (
                "churn 5%/s",
                "connect p99; RSS back to baseline (no target)",
                f"reconnect p99 {_fmt(ch['reconnect_p99_ms'], '.1f')} ms; RSS "
                f"{ch['rss_window_start_mb']:.0f} → {_fmt(ch['rss_settled_mb'], '.0f')} MB",
                None,
            )
        )
    if not rows:
        return []
    lines = ["| scenario | target | trio-sse measured | met? |", "|---|---|---|---|"]
    for name, target, got, ok in rows:
        lines.append(
            f"| {name} | {target} | {got} | {'—' if ok is None else ('yes' if ok else '**no**')} |"
        )
    return lines


def markdown(result: dict[str, Any], chart: str | None) -> str:
    """The ``## Fan-out load`` section."""
    meta = result["meta"]
    mach = meta["machine"]
    scenarios = [Scenario(**s) for s in result["scenarios"]]
    runs = [Run(**r) for r in result["runs"]]
    out = [
        SECTION,
        "",
        "<!-- Generated by benchmarks/bench_load.py from "
        f"benchmarks/results/{meta['file']}; rerun the benchmark rather than edit. -->",
        "",
        "Every server publishes the same broadcast to every `GET /sub` subscriber:",
        "`data: <CLOCK_MONOTONIC ns> <seq> <padding>` at a fixed rate (64-byte padding",
        "unless said). A C load generator (one epoll loop, `benchmarks/loadgen.c`)",
        "holds the connections, counts events, and takes publish-to-receive latency",
        "from the timestamp. Server CPU is utime + stime of the server's process tree",
        "from `/proc` over the measured window, divided by the events delivered in it.",
        "",
        f"- Command: `{meta['command']}` ({meta['date']}; {meta['warmup_note']})",
        f"- Machine: {mach['cpu']}, {mach['cores']} cores, {mach['memory']}, "
        f"Linux {mach['kernel']}, Python {mach['python']}. The machine is shared and noisy:",
        "  peers run one after another in the same run, so compare ratios",
        f'  ({X} trio-sse) rather than absolute numbers. "Other load" is the CPU that the',
        "  rest of the machine used during each measured window, in cores.",
        "- The load generator shares the machine (2 cores): its CPU is shown per run. Most of it",
        "  is the kernel's loopback receive path (system time); its own user time is "
        f"{meta['loadgen_user_us']} µs per event.",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".",
        "",
    ]
    targets = targets_table(scenarios, runs)
    if targets:
        out += ["### trio-sse against the targets", "", *targets, ""]
    for s in scenarios:
        out += [
            f"### {s.title}",
            "",
            *scenario_table(s, [r for r in runs if r.scenario == s.name]),
            "",
        ]
    skipped = sorted({(r.peer, r.reason) for r in runs if r.status == "skipped"})
    if skipped:
        out += ["Skipped: " + "; ".join(f"{p} ({why})" for p, why in skipped) + ".", ""]
    if chart:
        out += [f"![delivered/s and server CPU per delivery, per server]({chart})", ""]
    return "\n".join(out).rstrip() + "\n"


def update_doc(section: str) -> None:
    """Replace (or append) the ``## Fan-out load`` section of docs/benchmarks.md.

    Other sections are left as they are; hand-written notes inside this section
    survive between ``<!-- notes -->`` and ``<!-- /notes -->``.
    """
    text = DOC_PAGE.read_text() if DOC_PAGE.exists() else "# Benchmarks\n"
    start = text.find(SECTION + "\n")
    if start < 0:
        DOC_PAGE.write_text(text.rstrip() + "\n\n" + section)
        return
    nxt = text.find("\n## ", start + len(SECTION))
    end = len(text) if nxt < 0 else nxt + 1
    old = text[start:end]
    notes = re.search(r"<!-- notes -->.*?<!-- /notes -->\n", old, re.S)
    if notes:
        section = section + "\n" + notes.group(0)
    tail_text = text[end:]
    DOC_PAGE.write_text(text[:start] + section + ("\n" + tail_text if tail_text else ""))


def draw_chart(result: dict[str, Any], path: Path) -> bool:
    """Delivered/s and CPU µs per delivery, one panel per scenario and metric.

    Returns False (and draws nothing) without matplotlib.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: matplotlib is not installed; no chart", file=sys.stderr)
        return False
    import textwrap

    scenarios = [Scenario(**s) for s in result["scenarios"]]
    runs = [Run(**r) for r in result["runs"] if r["status"] == "ok"]
    peers = [p.name for p in PEERS if any(r.peer == p.name for r in runs)]
    colors = plt.get_cmap("tab10")
    fig, axes = plt.subplots(
        2, len(scenarios), figsize=(2.9 * len(scenarios) + 1, 7.5), squeeze=False
    )
    rows = (
        ("delivered_per_s", "delivered events/s\n(dashed: offered)"),
        ("us_per_delivery", "server CPU µs per delivery\n(lower is better)"),
    )
    for col, s in enumerate(scenarios):
        for row, (key, label) in enumerate(rows):
            ax = axes[row][col]
            for i, peer in enumerate(peers):
                r = next((r for r in runs if r.peer == peer and r.scenario == s.name), None)
                value = r.metrics.get(key) if r else None
                if value is not None:
                    ax.bar(i, value, color=colors(i), label=peer)
            if key == "delivered_per_s":
                ax.axhline(s.offered, color="black", linestyle="dashed", linewidth=1)
                ax.set_title("\n".join(textwrap.wrap(s.title, 28)), fontsize=9)
            ax.set_xticks(range(len(peers)))
            ax.set_xticklabels(peers, rotation=60, ha="right", fontsize=7)
            ax.tick_params(axis="y", labelsize=7)
            ax.grid(axis="y", alpha=0.3)
            if col == 0:
                ax.set_ylabel(label, fontsize=9)
    meta = result["meta"]
    fig.suptitle(
        f"SSE fan-out on {meta['machine']['cores']} cores, {meta['date']} "
        f"(benchmarks/results/{meta['file']})",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


# -------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """Run the scenarios, print the table, write JSON, chart and docs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small scenarios, under two minutes")
    parser.add_argument(
        "--peers", help="comma-separated subset of: " + ", ".join(p.name for p in PEERS)
    )
    parser.add_argument("--scenarios", help="comma-separated subset of scenario names")
    parser.add_argument(
        "--no-docs", action="store_true", help="do not touch docs/ (complete full runs write it)"
    )
    parser.add_argument(
        "--trio-sse",
        default="HEAD",
        metavar="REV",
        help="git revision of trio_sse/ to measure (default HEAD: committed code only), "
        "or 'worktree' for the files as they are",
    )
    args = parser.parse_args(argv)

    scenarios = QUICK if args.quick else FULL
    if args.scenarios:
        wanted = args.scenarios.split(",")
        scenarios = [s for s in scenarios if s.name in wanted]
    peers = PEERS
    if args.peers:
        wanted = args.peers.split(",")
        unknown = set(wanted) - {p.name for p in PEERS}
        if unknown:
            parser.error(f"unknown peers: {', '.join(sorted(unknown))}")
        peers = [p for p in PEERS if p.name in wanted]
    fd_limit = raise_fd_limit()
    need = max(s.clients for s in scenarios) + 100
    if fd_limit < need:
        print(
            f"bench: the fd limit is {fd_limit}, below the {need} the largest scenario needs",
            file=sys.stderr,
        )
    build_loadgen()
    LOGS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    if args.trio_sse == "worktree":
        trio_sse_under_test = "work tree" + (" (with uncommitted changes)" if _dirty() else "")
    else:
        path, commit = export_trio_sse(args.trio_sse)
        SERVER_ENV["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(path), os.environ.get("PYTHONPATH")])
        )
        trio_sse_under_test = f"commit {commit[:12]}"
    print(f"bench: trio-sse under test: {trio_sse_under_test}", file=sys.stderr)
    skip = {p.name: p.missing() for p in peers}
    for name, reason in skip.items():
        if reason:
            print(f"bench: skipping {name}: {reason}", file=sys.stderr)

    runs: list[Run] = []
    started = time.monotonic()
    for s in scenarios:
        for p in peers:
            t0 = time.monotonic()
            run = run_one(p, s, stamp, skip[p.name])
            runs.append(run)
            m = run.metrics
            if run.status == "ok":
                print(
                    f"{s.name:10} {p.name:20} {m['delivered_per_s']:9,.0f}/s "
                    f"{_fmt(m['us_per_delivery'], '6.1f')} µs/del  "
                    f"p99 {_fmt(m['p99_ms'], '7.1f')} ms  "
                    f"RSS {m['rss_mb']:6.0f} MB  lg {m['loadgen_cpu_percent']:3.0f}%  "
                    f"other {m['other_load_cores']:4.1f} cores  "
                    f"({time.monotonic() - t0:.0f} s)",
                    flush=True,
                )
            else:
                print(f"{s.name:10} {p.name:20} {run.status}: {run.reason}", flush=True)
            time.sleep(0.5)

    kind = "quick" if args.quick else "full"
    partial = bool(args.peers or args.scenarios)
    name = f"load-{stamp}" + ("-quick" if args.quick else "") + ("-partial" if partial else "")
    ok = [r for r in runs if r.status == "ok" and r.metrics.get("loadgen_user_us_per_event")]
    user_us = max((r.metrics["loadgen_user_us_per_event"] for r in ok), default=None)
    result: dict[str, Any] = {
        "meta": {
            "file": f"{name}.json",
            "kind": kind,
            "date": dt.date.today().isoformat(),
            "command": os.environ.get("BENCH_INVOCATION")
            or "python3 benchmarks/bench_load.py " + " ".join(sys.argv[1:]),
            "warmup_note": "per scenario: connect all clients, warm up, then a measured window",
            "elapsed_s": round(time.monotonic() - started, 1),
            "machine": machine(),
            "versions": {"trio-sse source": trio_sse_under_test, **versions()},
            "loadgen_user_us": "at most " + _fmt(user_us, ".1f"),
            "peers": {p.name: p.description for p in peers},
        },
        "scenarios": [dataclasses.asdict(s) for s in scenarios],
        "runs": [dataclasses.asdict(r) for r in runs],
    }
    out = RESULTS / f"{name}.json"
    write_docs = not (args.quick or partial or args.no_docs)
    chart_path = CHART if write_docs else RESULTS / f"{name}.png"
    drew = draw_chart(result, chart_path)
    chart_ref = chart_path.name if write_docs else None
    section = markdown(result, chart_ref if drew else None)
    out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print()
    print(section)
    print(
        f"bench: wrote {out.relative_to(ROOT)}"
        + (f" and {chart_path.relative_to(ROOT)}" if drew else "")
    )
    if write_docs:
        update_doc(section)
        print(f"bench: updated the '{SECTION}' section of {DOC_PAGE.relative_to(ROOT)}")
    print(f"bench: {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
