"""Real redis-server processes for tests: one server, or a 3-master cluster.

Nothing here mocks Redis: :class:`RedisServer` runs the ``redis-server`` on
PATH (Debian package ``redis-server``; ``.ci/system-deps`` installs it) on
``127.0.0.1`` on a free port, in its own temporary directory, with AOF on by
default (``appendfsync always``, so a ``kill -9`` loses no acknowledged write).
:class:`RedisCluster` runs three such servers as cluster masters and joins
them with ``redis-cli --cluster create``.

``tests/conftest.py`` imports the fixtures, so any test module can use them::

    async def test_set_get(redis_server):
        async with coredis.Redis(redis_server.host, redis_server.port) as client:
            await client.set("k", "v")
        assert redis_server.cli("GET", "k") == "v"

        redis_server.restart()  # kill -9, then start again on the same port
        redis_server.restart(keep_data=False)  # ... with its data files deleted

Fixtures:

* ``redis_server`` (function scope): a started server, stopped at teardown.
* ``redis_server_factory`` (function scope): ``redis_server_factory(appendonly=False)``
  starts one more server; all are stopped at teardown.
* ``redis_cluster`` (module scope): creating a cluster takes one to two
  seconds, too slow for every test but cheap per module; a module's tests share
  it, so they must use distinct keys (nothing flushes it between tests).

The methods are synchronous and block for up to a few hundred milliseconds
(``restart`` waits until the server answers PING). In a trio test that needs
its other tasks to keep running meanwhile (a reader loop that must notice the
outage), call them through ``await trio.to_thread.run_sync(server.restart)``.

Free ports: a socket is bound to ``127.0.0.1:0`` and closed, and the server is
started on that port. Another process can take the port in between (a small
race); ``start`` then retries once on a fresh port, except on ``restart``,
which must keep its port. Cluster ports stay below 55000 because each node also
listens on its port + 10000 (the cluster bus), which must be free as well.

Every process started here is killed in the fixtures' finalizers and, as a
last resort (Ctrl-C, an error in a finalizer), by an ``atexit`` hook.
"""

from __future__ import annotations

import atexit
import contextlib
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from coredis.typing import Node

HOST = "127.0.0.1"
#: Bound on waiting for a server to answer PING, or for a cluster to be ok.
START_DEADLINE = 15.0
#: Bound on waiting for a server to exit after SIGTERM before SIGKILL.
STOP_DEADLINE = 5.0
#: Highest port given to a cluster node (its bus port is port + 10000).
CLUSTER_MAX_PORT = 55000

CLUSTER_ARGS = (
    "--cluster-enabled", "yes",
    "--cluster-config-file", "nodes.conf",
    "--cluster-node-timeout", "5000",
)  # fmt: skip

_LIVE: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:
    for process in list(_LIVE):
        with contextlib.suppress(OSError):
            process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(STOP_DEADLINE)
    _LIVE.clear()


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port(below: int | None = None) -> int:
    """Return a loopback port that was free a moment ago (see the module docstring).

    With ``below`` (cluster nodes), the port is lower and port + 10000 is free too.
    """
    for _ in range(200):
        if below is None:
            with socket.socket() as sock:
                sock.bind((HOST, 0))
                port: int = sock.getsockname()[1]
            return port
        # The kernel hands out ephemeral ports from 32768 up: pick low ones ourselves.
        port = random.randrange(20000, below)
        if _port_is_free(port) and _port_is_free(port + 10000):
            return port
    raise RuntimeError(f"no free loopback port below {below} after 200 tries")


_PID = re.compile(rb"\r\nprocess_id:(\d+)\r\n")


def _answers(port: int, pid: int) -> bool:
    """Whether the redis-server with process id ``pid`` answers PING on ``port``.

    Checking the pid catches a server that failed to bind while another one
    answers on that port; PING is refused (``-LOADING``) until the AOF is loaded.
    """
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\nINFO server\r\n")
            reply = b""
            for _ in range(100):
                chunk = sock.recv(65536)
                reply += chunk
                if not chunk or not reply.startswith(b"+PONG") or _PID.search(reply):
                    break
    except OSError:
        return False
    found = _PID.search(reply)
    return reply.startswith(b"+PONG") and found is not None and int(found[1]) == pid


class RedisServer:
    """One ``redis-server`` process on ``127.0.0.1`` in its own temporary directory.

    Args:
        appendonly: Persist to an AOF with ``appendfsync always`` (so
            :meth:`kill` loses nothing); ``False`` keeps data in memory only.
        port: A fixed port; default: a free one.
        extra_args: More ``redis-server`` arguments, e.g.
            ``("--cluster-enabled", "yes")``.
    """

    def __init__(
        self, *, appendonly: bool = True, port: int | None = None, extra_args: tuple[str, ...] = ()
    ) -> None:
        self.appendonly = appendonly
        self._fixed_port = port is not None
        self._port = port if port is not None else free_port()
        self._extra_args = extra_args
        self._dir = Path(tempfile.mkdtemp(prefix="trio-sse-redis-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """The address the server listens on, ``127.0.0.1``."""
        return HOST

    @property
    def port(self) -> int:
        """The server's port (kept across :meth:`restart`)."""
        return self._port

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT``."""
        return f"redis://{HOST}:{self._port}"

    @property
    def dir(self) -> Path:
        """The server's working directory: AOF, log file, cluster config."""
        return self._dir

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.poll() is None

    def _args(self) -> list[str]:
        args = [
            "redis-server",
            "--bind", HOST,
            "--port", str(self._port),
            "--dir", str(self._dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            "--protected-mode", "no",
            "--daemonize", "no",
            "--logfile", str(self._dir / "redis.log"),
        ]  # fmt: skip
        return [*args, *self._extra_args]

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's log file, for error messages."""
        try:
            text = (self._dir / "redis.log").read_text(errors="replace")
        except OSError:
            return "(no log file)"
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> None:
        """Start the server and wait until it answers PING.

        Raises:
            RuntimeError: It exited or did not answer within ``START_DEADLINE``
                seconds; the message holds the end of its log.
        """
        try:
            self._start_once()
        except RuntimeError as exc:
            if self._fixed_port or "Address already in use" not in str(exc):
                raise
            self._port = free_port()  # lost the free-port race: one retry
            self._start_once()

    def _start_once(self) -> None:
        if self.running:
            raise RuntimeError(f"redis-server on port {self._port} is already running")
        with contextlib.suppress(FileNotFoundError):
            (self._dir / "redis.log").unlink()  # so log_tail shows this run only
        self._process = subprocess.Popen(
            self._args(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        _LIVE.add(self._process)
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._forget()
                raise RuntimeError(
                    f"redis-server on port {self._port} exited at start-up:\n{self.log_tail()}"
                )
            if _answers(self._port, self._process.pid):
                return
            time.sleep(0.01)
        self.kill()
        raise RuntimeError(
            f"redis-server on port {self._port} did not answer PING within "
            f"{START_DEADLINE} s:\n{self.log_tail()}"
        )

    def _forget(self) -> None:
        if self._process is not None:
            _LIVE.discard(self._process)
        self._process = None

    def kill(self) -> None:
        """SIGKILL the server (like ``kill -9``) and wait for it to exit."""
        if self._process is not None:
            with contextlib.suppress(OSError):
                self._process.send_signal(signal.SIGCONT)  # in case it was frozen
                self._process.kill()
            self._process.wait(STOP_DEADLINE)
        self._forget()

    def freeze(self) -> None:
        """SIGSTOP the server: connections stay open but nothing answers."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT a frozen server."""
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """SIGTERM the server; SIGKILL it if it has not exited within ``STOP_DEADLINE``."""
        if self._process is not None:
            with contextlib.suppress(OSError):
                self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                self.kill()
        self._forget()

    def restart(self, keep_data: bool = True) -> None:
        """Kill -9 the server and start it again on the same port.

        Args:
            keep_data: Keep its data files (the AOF: with ``appendonly`` every
                acknowledged write survives); ``False`` deletes them, so it
                comes back empty.
        """
        self.kill()
        if not keep_data:
            for path in self._dir.iterdir():
                if path.name in ("redis.log", "nodes.conf"):
                    continue
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        self._start_once()

    def close(self) -> None:
        """Stop the server and delete its directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def cli(self, *args: str) -> str:
        """Run ``redis-cli -p PORT ARGS...`` (like a non-Python client) and return its output.

        Raises:
            RuntimeError: redis-cli failed or the server replied with an error.
        """
        result = subprocess.run(
            ["redis-cli", "-h", HOST, "-p", str(self._port), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        out = result.stdout.rstrip("\n")
        if result.returncode != 0 or out.startswith(("ERR", "WRONGTYPE", "MOVED", "CROSSSLOT")):
            raise RuntimeError(f"redis-cli {' '.join(args)}: {out} {result.stderr}".strip())
        return out


class RedisCluster:
    """Three ``redis-server`` cluster masters on loopback, joined and ready.

    Args:
        appendonly: As for :class:`RedisServer`, for each node.
    """

    def __init__(self, *, appendonly: bool = True) -> None:
        self.servers = [
            RedisServer(
                appendonly=appendonly,
                port=free_port(below=CLUSTER_MAX_PORT),
                extra_args=CLUSTER_ARGS,
            )
            for _ in range(3)
        ]

    @property
    def nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of each master."""
        return [(s.host, s.port) for s in self.servers]

    @property
    def startup_nodes(self) -> list[Node]:
        """``[{"host": ..., "port": ...}, ...]``, as coredis' ``RedisCluster`` takes them."""
        return [Node(host=host, port=port) for host, port in self.nodes]

    def start(self) -> None:
        """Start the nodes, create the cluster, wait for ``cluster_state:ok`` everywhere.

        Raises:
            RuntimeError: A node did not start, ``redis-cli --cluster create``
                failed, or the cluster was not ok within ``START_DEADLINE``.
        """
        for server in self.servers:
            server.start()
        addresses = [f"{host}:{port}" for host, port in self.nodes]
        create = ["--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"]
        result = subprocess.run(
            ["redis-cli", *create],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            output = result.stdout + result.stderr
            raise RuntimeError(f"redis-cli --cluster create failed:\n{output}")
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            if all("cluster_state:ok" in s.cli("CLUSTER", "INFO") for s in self.servers):
                return
            time.sleep(0.05)
        tail = self.servers[0].log_tail()
        raise RuntimeError(f"cluster not ok within {START_DEADLINE} s:\n{tail}")

    def node_for_key(self, key: str) -> tuple[str, int]:
        """``(host, port)`` of the master that owns ``key``'s slot."""
        slot = int(self.servers[0].cli("CLUSTER", "KEYSLOT", key))
        for line in self.servers[0].cli("CLUSTER", "NODES").splitlines():
            fields = line.split()
            address = fields[1].split("@")[0]
            for span in fields[8:]:
                low, _, high = span.partition("-")
                if span[0].isdigit() and int(low) <= slot <= int(high or low):
                    host, _, port = address.rpartition(":")
                    return host, int(port)
        raise RuntimeError(f"no node owns slot {slot} of {key!r}")

    def server_for_key(self, key: str) -> RedisServer:
        """The :class:`RedisServer` that owns ``key``'s slot."""
        _, port = self.node_for_key(key)
        return next(s for s in self.servers if s.port == port)

    def stop(self) -> None:
        """Kill every node and delete their directories."""
        for server in self.servers:
            server.kill()
            server.close()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A started ``redis-server`` with AOF, stopped at teardown."""
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_server_factory() -> Iterator[Callable[..., RedisServer]]:
    """Start more servers: ``redis_server_factory(appendonly=False)``; all stopped at teardown."""
    servers: list[RedisServer] = []

    def start(**kwargs: Any) -> RedisServer:
        server = RedisServer(**kwargs)
        servers.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.close()


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisCluster]:
    """A 3-master cluster, shared by the tests of one module (see the module docstring)."""
    cluster = RedisCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
