"""``trio-sse serve --workers N``: real processes, a real port on 127.0.0.1.

Each test starts the supervisor with ``python -m trio_sse`` on a small app
written to a temp dir, reads its log (and its workers', which share stderr)
to learn the port and the worker pids, and talks HTTP to the port.

With one inherited listening socket the kernel hands each connection to
whichever worker calls ``accept`` first, so which worker answers is not
deterministic. To prove that *every* worker serves the port, the tests stop
all workers but one (SIGSTOP) and check that the remaining one answers, then
let them go on (SIGCONT).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from clients import Client, Reply, open_event_stream
from redis_servers import RedisServer

from trio_sse._workers import LISTEN_FDS_OPTION

APP = f'''
import os
import sys
from contextlib import asynccontextmanager

import trio

from trio_sse import App, Broker, Event, EventStream, LocalBackplane, Request

MODE = os.environ.get("WAPP_MODE", "")

if MODE == "crash" and {LISTEN_FDS_OPTION!r} in sys.argv:  # in the workers only
    raise RuntimeError("this worker crashes at import")


class SharedForTests:
    """Stands for a cross-process backplane (Redis is not part of these tests)."""

    cross_process = True

    def __init__(self):
        self._local = LocalBackplane()

    def __getattr__(self, name):  # everything else is the local backplane's
        return getattr(self._local, name)


broker = Broker() if MODE == "local" else Broker(backplane=SharedForTests())


@asynccontextmanager
async def lifespan(app):
    try:
        yield
    finally:
        if MODE == "slow_exit":
            await trio.sleep(60)  # runs shielded: a worker that hangs at exit


app = App(lifespan=lifespan)


@app.get("/pid")
async def pid(request: Request) -> str:
    return str(os.getpid())


@app.stream("/s")
async def stream(request: Request, stream: EventStream) -> None:
    await stream.send(Event(str(os.getpid())))
    await trio.sleep_forever()
'''

ROOT = Path(__file__).resolve().parent.parent

#: Bound on every test (process start-up is slow on a busy 2-core machine).
GUARD = 30


class Log:
    """The supervisor's stderr, line by line, with waiting for a pattern."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.closed = False
        self._changed = trio.Event()

    async def read(self, stream: trio.abc.ReceiveStream) -> None:
        buffer = b""
        async for chunk in stream:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            self.lines += [line.decode(errors="replace") for line in lines]
            self._wake()
        self.closed = True  # every process holding the pipe (workers too) is gone
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def matches(self, pattern: str) -> list[re.Match[str]]:
        return [m for line in self.lines if (m := re.search(pattern, line))]

    async def wait_for(self, pattern: str, count: int = 1) -> re.Match[str]:
        """The ``count``-th line matching ``pattern``, once it is there."""
        while len(found := self.matches(pattern)) < count:
            if self.closed:
                raise AssertionError(f"no {pattern!r} in the log:\n" + "\n".join(self.lines))
            await self._changed.wait()
        return found[count - 1]

    async def wait_closed(self) -> None:
        while not self.closed:
            await self._changed.wait()


class Running:
    def __init__(self, proc: trio.Process, log: Log) -> None:
        self.proc = proc
        self.log = log
        self.port = 0

    async def worker_pid(self, index: int, start: int = 1) -> int:
        """The pid of worker ``index``'s ``start``-th process."""
        m = await self.log.wait_for(rf"worker {index} started \(pid (\d+)\)", start)
        return int(m.group(1))

    async def ready(self, pid: int) -> None:
        """Wait until worker ``pid`` serves (it logs its listeners)."""
        await self.log.wait_for(rf"\[{pid}\] INFO trio_sse: trio-sse serving on")

    async def serving_workers(self, count: int) -> list[int]:
        """The pids of workers ``0..count-1``, once each of them serves."""
        pids = [await self.worker_pid(i) for i in range(count)]
        for pid in pids:
            await self.ready(pid)
        return pids


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its parent does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


async def all_gone(pids: list[int]) -> bool:
    """Whether ``pids`` have all exited within a second.

    A killed process closes its files (our log pipe) shortly before it
    finishes exiting, so poll briefly.
    """
    with trio.move_on_after(1):
        while any(alive(pid) for pid in pids):
            await trio.sleep(0.01)
    return not any(alive(pid) for pid in pids)


@asynccontextmanager
async def supervised(
    tmp_path: Path,
    *args: str,
    mode: str = "",
    app: str = "wapp:app",
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> AsyncIterator[Running]:
    """Run ``trio-sse serve APP --port 0 ARGS`` in ``cwd``; stop it at the end.

    ``wapp:app`` (the app above, in ``tmp_path``) unless told otherwise. It
    runs in a session of its own, as a command typed in a terminal has its
    own process group.
    """
    (tmp_path / "wapp.py").write_text(APP)
    command = [sys.executable, "-m", "trio_sse", "serve", app, "--port", "0", *args]
    proc = await trio.lowlevel.open_process(
        command,
        cwd=cwd or tmp_path,
        env={**os.environ, "WAPP_MODE": mode, **(env or {})},
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stderr is not None
    log = Log()
    running = Running(proc, log)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(log.read, proc.stderr)
            yield running
            # Cleanup: killing the supervisor makes its workers exit (the pipe).
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            with trio.move_on_after(GUARD):
                await log.wait_closed()
    finally:
        if proc.returncode is None:
            proc.kill()
        for m in log.matches(r"worker \d+ started \(pid (\d+)\)"):
            pid = int(m.group(1))
            if alive(pid):  # only if a test failed: SIGKILL the stragglers
                os.kill(pid, signal.SIGKILL)


@asynccontextmanager
async def start(tmp_path: Path, *args: str, **options: Any) -> AsyncIterator[Running]:
    """:func:`supervised`, once the port is known."""
    async with supervised(tmp_path, *args, **options) as running:
        m = await running.log.wait_for(r"serving on http://127\.0\.0\.1:(\d+)/ with")
        running.port = int(m.group(1))
        yield running


async def get(port: int, path: str) -> Reply:
    """``GET path`` on a fresh connection: the whole response."""
    async with await Client.connect("127.0.0.1", port) as client:
        return await client.request("GET", path, [("connection", "close")])


async def open_sse(port: int) -> Client:
    """An event stream of ``/s`` over HTTP/1.0, once its first event arrived."""
    return await open_event_stream(port, "/s", first_events=1)


async def get_pid(port: int) -> int:
    """``GET /pid``: the pid of the worker that answered."""
    reply = await get(port, "/pid")
    assert reply.status == 200, reply
    return int(reply.body)


@contextmanager
def stopped(*pids: int) -> Iterator[None]:
    """SIGSTOP ``pids`` for the duration of a block (SIGCONT even on errors)."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


async def answered_by(port: int, pid: int, others: list[int]) -> None:
    """With ``others`` stopped, requests on ``port`` are answered by ``pid``."""
    with stopped(*others):
        for _ in range(3):
            assert await get_pid(port) == pid


async def test_every_worker_answers_on_the_one_port(tmp_path: Path) -> None:
    with trio.fail_after(GUARD):
        async with start(tmp_path, "--workers", "3") as running:
            pids = [await running.worker_pid(i) for i in range(3)]
            assert len(set(pids)) == 3
            for pid in pids:
                assert pid != running.proc.pid
                await running.ready(pid)
            for pid in pids:
                await answered_by(running.port, pid, [p for p in pids if p != pid])


async def test_a_killed_worker_is_restarted(tmp_path: Path) -> None:
    with trio.fail_after(GUARD):
        async with start(tmp_path, "--workers", "2") as running:
            first, other = await running.worker_pid(0), await running.worker_pid(1)
            await running.ready(first)
            await running.ready(other)
            os.kill(first, signal.SIGKILL)
            # The port keeps answering meanwhile (the other worker).
            assert await get_pid(running.port) == other
            await running.log.wait_for(
                rf"worker 0 \(pid {first}\) was killed by SIGKILL after [\d.]+ s$"
            )
            second = await running.worker_pid(0, start=2)
            assert second not in (first, other)
            assert not alive(first)
            await running.ready(second)
            await answered_by(running.port, second, [other])


async def test_sigterm_ends_streams_with_jittered_retry_and_exits_0(tmp_path: Path) -> None:
    args = ("--workers", "2", "--stream-end-retry", "1000", "--stream-end-retry-jitter", "2000")
    with trio.fail_after(GUARD):
        async with start(tmp_path, *args) as running:
            pids = await running.serving_workers(2)
            streams = []
            for pid in pids:  # one stream on each worker at least
                with stopped(*(p for p in pids if p != pid)):
                    streams.append(await open_sse(running.port))
            streams += [await open_sse(running.port) for _ in range(6)]
            assert {s.received[0].data for s in streams} == {str(pid) for pid in pids}
            sent = trio.current_time()
            running.proc.send_signal(signal.SIGTERM)
            async with trio.open_nursery() as nursery:
                for s in streams:
                    nursery.start_soon(s.rest)
            assert await running.proc.wait() == 0
            # Nothing to wait for: shutdown_grace_period (5 s) is a bound, not a delay.
            assert trio.current_time() - sent < 5
            for s in streams:
                await s.aclose()
                assert s.body.endswith(b"\n\nretry: %d\n\n" % s.decoder.retry), s.body
                assert s.decoder.retry is not None
                assert 1000 <= s.decoder.retry <= 3000
            await running.log.wait_closed()  # no process holds the log pipe any more
            assert await all_gone(pids)
            assert running.log.matches(r"worker 1 \(pid \d+\) exited with code 0")


async def test_ctrl_c_to_the_process_group_is_one_graceful_shutdown(tmp_path: Path) -> None:
    """A terminal's Ctrl-C signals the whole foreground group, not just the supervisor."""
    with trio.fail_after(GUARD):
        async with start(tmp_path, "--workers", "2") as running:
            pids = await running.serving_workers(2)
            stream = await open_sse(running.port)
            os.killpg(running.proc.pid, signal.SIGINT)
            await stream.rest()
            await stream.aclose()
            assert stream.decoder.retry is not None
            assert await running.proc.wait() == 0
            await running.log.wait_closed()
            assert len(running.log.matches(r"worker \d \(pid \d+\) exited with code 0")) == 2
            assert await all_gone(pids)


async def test_workers_that_hang_at_exit_are_killed_after_the_bound(tmp_path: Path) -> None:
    args = ("--workers", "2", "--shutdown-grace-period", "0.5", "--close-linger", "0.1")
    with trio.fail_after(GUARD):
        async with start(tmp_path, *args, "--worker-kill-margin", "0.5", mode="slow_exit") as r:
            pids = await r.serving_workers(2)
            sent = trio.current_time()
            r.proc.send_signal(signal.SIGTERM)
            assert await r.proc.wait() == 0
            # 0.5 + 0.1 + 0.5 s, then SIGKILL.
            assert 1.1 <= trio.current_time() - sent < 5
            assert len(r.log.matches(r"worker \d \(pid \d+\) killed")) == 2
            assert await all_gone(pids)


async def test_a_second_signal_exits_at_once(tmp_path: Path) -> None:
    with trio.fail_after(GUARD):
        async with start(tmp_path, "--workers", "2", mode="slow_exit") as r:
            pids = await r.serving_workers(2)
            r.proc.send_signal(signal.SIGTERM)
            await r.log.wait_for(r"SIGTERM: stopping 2 workers")
            sent = trio.current_time()
            r.proc.send_signal(signal.SIGINT)
            assert await r.proc.wait() == 1
            assert trio.current_time() - sent < 3  # not the 5 + 1 + 5 s bound
            await r.log.wait_closed()
            assert await all_gone(pids)


async def test_workers_of_a_killed_supervisor_shut_down(tmp_path: Path) -> None:
    """No orphans: even a SIGKILLed supervisor takes its workers with it."""
    with trio.fail_after(GUARD):
        async with start(tmp_path, "--workers", "2") as running:
            pids = await running.serving_workers(2)
            stream = await open_sse(running.port)
            running.proc.kill()
            await stream.rest()  # ended by the worker's graceful shutdown
            await stream.aclose()
            assert stream.decoder.retry is not None
            await running.log.wait_closed()
            assert running.log.matches(r"the supervisor is gone: shutting down")
            assert await all_gone(pids)


async def test_a_worker_crashing_at_import_makes_the_supervisor_give_up(tmp_path: Path) -> None:
    with trio.fail_after(GUARD):
        async with supervised(
            tmp_path, "--workers", "2", "--max-worker-failures", "3", mode="crash"
        ) as running:
            assert await running.proc.wait() == 1
            await running.log.wait_closed()
            assert len(running.log.matches(r"RuntimeError: this worker crashes at import")) >= 3
            (m,) = running.log.matches(r"^trio-sse: giving up: .*")
            assert "3 times in a row" in m.group(0)
            assert "exited with code 1" in m.group(0)
            assert "--max-worker-failures" in m.group(0)
            # Restarted with a growing delay (0.1 s, then 0.2 s), not in a hot loop.
            assert running.log.matches(r"restarting in 0\.1 s")
            assert running.log.matches(r"restarting in 0\.2 s")


async def test_an_in_process_broker_refuses_several_workers(tmp_path: Path) -> None:
    with trio.fail_after(GUARD):
        async with supervised(tmp_path, "--workers", "2", mode="local") as running:
            assert await running.proc.wait() == 1
            await running.log.wait_closed()
    (line,) = running.log.lines
    assert line.startswith("trio-sse: --workers 2 would split topics between workers")
    for needed in ("LocalBackplane", "RedisBackplane", "docs/scaling.md"):
        assert needed in line
    assert not running.log.matches(r"worker \d started")


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_workers_must_be_a_positive_integer(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    from trio_sse._cli import main

    with pytest.raises(SystemExit) as raised:
        main(["serve", "wapp:app", "--workers", value])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "argument --workers:" in err
    assert ("must be at least 1" in err) if value != "two" else ("expected an integer" in err)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--max-worker-failures", "0", "must be at least 1, got 0"),
        ("--max-worker-failures", "1.5", "expected an integer, got '1.5'"),
        ("--worker-kill-margin", "-1", "must be a finite number >= 0, got '-1'"),
        ("--worker-kill-margin", "inf", "must be a finite number >= 0, got 'inf'"),
        ("--worker-kill-margin", "soon", "expected a number, got 'soon'"),
    ],
)
def test_worker_options_are_checked(
    option: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from trio_sse._cli import main

    with pytest.raises(SystemExit) as raised:
        main(["serve", "wapp:app", "--workers", "2", option, value])
    assert raised.value.code == 2
    assert f"argument {option}: {message}" in capsys.readouterr().err


async def test_a_worker_that_cannot_be_started_counts_as_a_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from trio_sse import Config
    from trio_sse._workers import Supervisor

    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    supervisor = Supervisor(["serve", "m:app"], 2, Config(), max_failures=2)
    with trio.fail_after(GUARD):
        await supervisor.run("127.0.0.1", 0)
    assert supervisor.failure is not None
    assert "ended 2 times in a row" in supervisor.failure
    assert "No such file or directory" in supervisor.failure
    assert supervisor.pids == {}


def test_port_in_use_is_a_clear_error_with_workers(tmp_path: Path) -> None:
    import socket

    # In a process of its own: this one has brokers of other tests alive.
    (tmp_path / "wapp.py").write_text(APP)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        command = ["serve", "wapp:app", "--workers", "2", "--port", str(port)]
        done = subprocess.run(
            [sys.executable, "-m", "trio_sse", *command],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=GUARD,
            check=False,
        )
    assert done.returncode == 1
    assert done.stderr.startswith(f"trio-sse: cannot serve on 127.0.0.1:{port}: "), done.stderr
    assert "worker" not in done.stderr


async def test_every_address_of_the_host_is_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``host=None``: one IPv4 and one IPv6 socket, as ``trio.open_tcp_listeners`` binds them."""
    from trio_sse import Config
    from trio_sse._workers import Supervisor

    (tmp_path / "wapp.py").write_text(APP)
    monkeypatch.chdir(tmp_path)
    supervisor = Supervisor(["serve", "wapp:app"], 2, Config())
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(supervisor.run, None, 0)
            addresses = [listener.socket.getsockname() for listener in listeners]
            assert {len(a) for a in addresses} == {2, 4}  # IPv4 and IPv6
            for address in addresses:
                loopback = "127.0.0.1" if len(address) == 2 else "::1"
                async with await Client.connect(loopback, address[1]) as client:
                    reply = await client.request("GET", "/pid", http_version="1.0")
                assert int(reply.body) in supervisor.pids.values()
            pids = list(supervisor.pids.values())
            supervisor.stop()
    assert supervisor.failure is None
    assert await all_gone(pids)


async def test_workers_share_topics_through_redis(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """``--workers 2`` with the Redis backplane (allowed): an event published
    through one worker reaches a subscriber of the other; SIGTERM ends the stream."""
    env = {"TRIO_SSE_REDIS_URL": redis_server.url}
    args = ("--workers", "2", "--stream-end-retry-jitter", "2000")
    with trio.fail_after(GUARD):
        async with start(tmp_path, *args, app="examples.scaled:app", cwd=ROOT, env=env) as r:
            a, b = await r.serving_workers(2)
            for other in (b, a):  # each worker's backplane is connected
                with stopped(other):
                    while (await get(r.port, "/health")).status != 200:
                        await trio.sleep(0.05)
            with stopped(b):  # subscribe on worker a
                stream = await open_event_stream(r.port, "/events/news")
                # The id-only first event says the subscription is registered:
                # only then can it not miss what is published next.
                await stream.until(b"id: ")
            with stopped(a):  # publish through worker b
                published = await post(r.port, "/publish/news", b"hello from b")
            await stream.events(1)
            (event,) = stream.received
            assert event.data == "hello from b"
            assert event.last_event_id == json.loads(published)["id"]
            r.proc.send_signal(signal.SIGTERM)
            await stream.rest()
            await stream.aclose()
            assert await r.proc.wait() == 0
            assert stream.decoder.retry is not None
            assert 1000 <= stream.decoder.retry <= 3000
            await r.log.wait_closed()
            assert await all_gone([a, b])


async def post(port: int, path: str, body: bytes) -> bytes:
    """``POST`` with the example's admin token; the 200 response's body."""
    headers = [("connection", "close"), ("authorization", "Bearer admin-token")]
    async with await Client.connect("127.0.0.1", port) as client:
        reply = await client.request("POST", path, headers, body)
    assert reply.status == 200, reply
    return reply.body
