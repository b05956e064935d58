"""The scale-out benchmark's processes: redis-server, the server processes, failover.

Used by ``bench_scale.py`` (see its docstring for the method). Every process
started here is stopped by the context manager or method that started it:
server process groups get SIGTERM then SIGKILL (``bench_load.stop``), and
redis-server is killed and its temporary directory deleted.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bench_load as bl

SERVER = bl.SERVERS / "trio_sse_scaled_server.py"
HOST = bl.HOST

# ------------------------------------------------------------------ Redis


class Redis:
    """A private ``redis-server`` on a free loopback port, in a temporary directory."""

    def __init__(self, *, appendonly: bool) -> None:
        if shutil.which("redis-server") is None:
            raise SystemExit(
                "bench-scale: redis-server is not on PATH; install the Debian package "
                "redis-server (or run `bash .ci/system-deps` as root) and run again"
            )
        self.appendonly = appendonly
        self.port = bl.free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="trio-sse-bench-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, deadline: float = 15.0) -> float:
        """Start it and wait until it answers PING; returns ``time.monotonic()`` then."""
        args = [
            "redis-server", "--bind", HOST, "--port", str(self.port), "--dir", str(self.dir),
            "--save", "", "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always", "--protected-mode", "no", "--daemonize", "no",
            "--logfile", str(self.dir / "redis.log"),
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {bl.tail(self.dir / 'redis.log')}")
            if self.command("PING") == "PONG":
                return time.monotonic()
            time.sleep(0.002)
        raise RuntimeError(f"redis-server did not answer: {bl.tail(self.dir / 'redis.log')}")

    def command(self, *args: str) -> str | None:
        """Send one inline command; the first reply line, or ``None`` if unreachable."""
        try:
            with socket.create_connection((HOST, self.port), timeout=2) as s:
                s.sendall(" ".join(args).encode() + b"\r\n")
                reply = s.recv(4096).split(b"\r\n", 1)[0].decode()
        except OSError:
            return None
        return reply[1:] if reply[:1] in ("+", "-", ":") else reply

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(10)

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def cpu_s(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds."""
    st = bl._stat(pid)
    return 0.0 if st is None else st[1] / bl.CLK_TCK


# -------------------------------------------------------- server processes


@dataclass(frozen=True)
class Config:
    """A way to serve the clients: how many processes, which backplane."""

    name: str
    processes: int
    backplane: str


CONFIGS = [
    Config("local-1", 1, "local"),
    Config("redis-1", 1, "redis"),
    Config("redis-2", 2, "redis"),
]


@contextlib.contextmanager
def servers(
    config: Config, redis: Redis, rate: float, stamp: str, tag: str, overflow: str = "evict"
) -> Iterator[list[tuple[subprocess.Popen[bytes], int, Path]]]:
    """Start ``config``'s server processes (the first one publishes); stop them at exit."""
    started: list[tuple[subprocess.Popen[bytes], int, Path]] = []
    env = {**os.environ, **bl.SERVER_ENV}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    try:
        for i in range(config.processes):
            port = bl.free_port()
            log = bl.LOGS / f"{stamp}-{tag}-{config.name}-{i}.log"
            argv = [sys.executable, str(SERVER), "--port", str(port), "--rate", str(rate)]
            argv += ["--backplane", config.backplane, "--redis-url", redis.url]
            argv += ["--overflow", overflow, "--publish" if i == 0 else "--no-publish"]
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    argv,
                    cwd=bl.SERVERS,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            started.append((proc, port, log))
        for proc, port, log in started:
            bl.wait_listening(proc, port, log)
        yield started
    finally:
        for proc, _, _ in started:
            bl.stop(proc)
        redis.command("FLUSHALL")


def last_stats(log: Path) -> str:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.startswith("stats ")]
    return lines[-1] if lines else ""


# ---------------------------------------------------------------- failover

_DATA = re.compile(rb"data: (\d+) (\d+) ")


class Subscriber(threading.Thread):
    """Reads ``GET /sub`` and records ``(receive time, publish time, seq)`` per event."""

    def __init__(self, port: int, limit: float) -> None:
        super().__init__(daemon=True)
        self.port, self.limit = port, limit
        self.events: list[tuple[float, int, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        end = time.monotonic() + self.limit
        with socket.create_connection((HOST, self.port), timeout=1) as s:
            s.sendall(f"GET /sub HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
            buf = b""
            while not self.stop.is_set() and time.monotonic() < end:
                try:
                    data = s.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    break
                now = time.monotonic_ns()
                buf += data
                last = 0
                for m in _DATA.finditer(buf):
                    self.events.append((now / 1e9, int(m[1]), int(m[2])))
                    last = m.end()
                buf = buf[last:] if last else buf[-200:]


#: Seconds after Redis is back within which an event must arrive again.
RECOVERY_LIMIT = 10.0


def failover(rounds: int, steady: float, stamp: str) -> list[dict[str, Any]]:
    """Kill -9 an AOF-backed Redis under two processes; time the recovery."""
    redis = Redis(appendonly=True)
    out = []
    try:
        redis.start()
        with servers(CONFIGS[2], redis, 100, stamp, "failover") as procs:
            subs = [Subscriber(port, 30 + 15 * rounds) for _, port, _ in procs]
            for sub in subs:
                sub.start()
            time.sleep(steady)
            for _ in range(rounds):
                t_kill = time.monotonic()
                redis.kill()
                t_up = redis.start()
                firsts: list[float | None] = [None] * len(subs)
                while time.monotonic() < t_up + RECOVERY_LIMIT and None in firsts:
                    time.sleep(0.01)
                    for i, sub in enumerate(subs):
                        after = [e for e in list(sub.events) if e[1] / 1e9 > t_kill]
                        firsts[i] = after[0][0] if after else None
                time.sleep(steady)
                out.append(
                    {
                        "redis_down_ms": round((t_up - t_kill) * 1000, 1),
                        "first_event_after_restart_ms": [
                            None if f is None else round((f - t_up) * 1000, 1) for f in firsts
                        ],
                    }
                )
            for sub in subs:
                sub.stop.set()
                sub.join(5)
            for i, sub in enumerate(subs):
                seqs = [e[2] for e in sub.events]
                dup = len(seqs) - len(set(seqs))
                missing = (max(seqs) - min(seqs) + 1 - len(set(seqs))) if seqs else 0
                for r in out:
                    r.setdefault("subscribers", []).append(
                        {"process": i, "events": len(seqs), "duplicates": dup, "missing": missing}
                    )
            stats = [last_stats(log) for _, _, log in procs]
        lost = re.search(r"publish_errors=(\d+)", stats[0])
        for r in out:
            r["server_stats"] = stats
            r["publish_errors"] = int(lost[1]) if lost else None
    finally:
        redis.close()
    return out
