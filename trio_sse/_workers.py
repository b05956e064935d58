"""Several worker processes on one port: ``trio-sse serve --workers N``.

Theory of operation
-------------------

A small supervisor (this module, run with trio like everything else) binds
the listening sockets once, exactly as :func:`trio_sse.serve` would (same
host, port and backlog, one socket per address ``trio.open_tcp_listeners``
returns), then runs N copies of ``python -m trio_sse`` that *inherit* those
sockets (``pass_fds``) and serve them with the ordinary server
(:func:`trio_sse.serve_listeners`). The supervisor never accepts a
connection: it only starts, restarts and stops workers.

Why an inherited socket rather than ``SO_REUSEPORT`` (each worker binding
its own socket to the port):

- one accept queue: a connection waiting in the backlog of a worker that
  crashes or restarts is accepted by another worker, whereas with
  ``SO_REUSEPORT`` the kernel has already assigned it to the dead worker's
  queue and resets it;
- the port is bound once, so ``--port 0`` and dual-stack hosts behave as with
  one process, and no other process can join the port;
- it works the same on every Unix (``SO_REUSEPORT`` balances on Linux only).

The price is that the kernel does not spread connections evenly: whichever
idle worker wakes first accepts, so short requests sent one at a time may
cluster on one worker. Long-lived streams spread (100 streams on two workers:
between 44/56 and 53/47 in docs/benchmarks.md), which is what this server
holds.

Rules:

1. Structured: one task per worker slot in one nursery. A slot task starts
   its process, waits for it, and restarts it when it ends without being
   asked to. A process never outlives its task: cancelling the task kills
   it (``SIGKILL``) and waits for it.
2. Crash loops are bounded: a worker that ends within
   :data:`FAST_FAILURE` seconds of starting is restarted after a delay
   doubling from :data:`BACKOFF_MIN` to :data:`BACKOFF_MAX`; after
   ``max_failures`` such ends in a row the supervisor gives up, stops the
   other workers and exits non-zero. A worker that ran longer is restarted
   at once and its count starts again.
3. Shutdown: the first SIGINT or SIGTERM is forwarded to every worker as
   SIGTERM (each ends its streams with the jittered ``retry:`` and closes
   within ``shutdown_grace_period``); workers still running
   ``shutdown_grace_period + close_linger + kill_margin`` seconds later are
   killed. A second signal kills the workers and exits at once.
4. Workers run in their own process group, so a Ctrl-C in a terminal reaches
   the supervisor only (which forwards it once), and each holds the read end
   of a pipe whose write end only the supervisor has: if the supervisor dies
   (even by SIGKILL), the pipe reports end-of-file and the workers shut down
   gracefully instead of serving on as orphans.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any, Final, final

import trio

from ._broker import _live_brokers
from ._config import Config

__all__ = ["Supervisor", "check_backplanes", "inherited_listeners", "watch_parent"]

logger = logging.getLogger("trio_sse.workers")

#: A worker that ends within this many seconds of starting counts as a failure in a row.
FAST_FAILURE: Final = 10.0
#: First restart delay after a fast failure (seconds); doubles with each one.
BACKOFF_MIN: Final = 0.1
#: Cap of the restart delay (seconds).
BACKOFF_MAX: Final = 5.0
#: Hidden command-line options that make ``python -m trio_sse serve`` a worker.
LISTEN_FDS_OPTION: Final = "--listen-fds"
PARENT_FD_OPTION: Final = "--parent-fd"


def check_backplanes(workers: int) -> None:
    """Refuse several workers when a broker keeps its topics in-process.

    Called in the supervisor after the app was imported, so it sees the
    brokers created at import time.

    Raises:
        SystemExit: with one line saying what to configure.
    """
    if workers <= 1:
        return
    local = [b for b in _live_brokers() if not b.backplane.cross_process]
    if local:
        kind = type(local[0].backplane).__name__
        raise SystemExit(
            f"trio-sse: --workers {workers} would split topics between workers: the app's "
            f"broker uses {kind}, which delivers events only inside one process; configure "
            "the Redis backplane (RedisBackplane, see docs/scaling.md) or run --workers 1"
        )


def inherited_listeners(fds: Sequence[int]) -> list[trio.SocketListener]:
    """Listeners on listening sockets inherited from the supervisor.

    The descriptors are made non-inheritable again so that processes the
    app starts do not hold the port open.
    """
    listeners = []
    for fd in fds:
        os.set_inheritable(fd, False)
        sock = socket.socket(fileno=fd)  # family and type read from the descriptor
        listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
    return listeners


async def watch_parent(fd: int, serving: trio.CancelScope) -> None:
    """Cancel ``serving`` (a graceful shutdown) when the supervisor is gone.

    ``fd`` is the read end of a pipe nobody writes to: it becomes readable
    (end-of-file) only when the supervisor's write end is closed, which the
    kernel does when the supervisor exits, however it exits.
    """
    try:
        await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)
    logger.warning("the supervisor is gone: shutting down")
    serving.cancel()


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


@final
class Supervisor:
    """Runs ``workers`` worker processes on shared listening sockets.

    Args:
        argv: the ``trio-sse`` arguments the supervisor was started with;
            each worker runs ``python -m trio_sse`` with them plus the hidden
            options naming the inherited descriptors.
        workers: how many worker processes (at least 1).
        config: the served configuration (its shutdown timings bound the stop).
        max_failures: fast failures in a row of one worker before giving up.
        kill_margin: seconds granted beyond ``shutdown_grace_period +
            close_linger`` before stragglers are killed.

    Attributes:
        pids: the running workers' process ids, by slot.
        failure: why the supervisor gave up, or ``None``.

    """

    def __init__(
        self,
        argv: Sequence[str],
        workers: int,
        config: Config,
        *,
        max_failures: int = 5,
        kill_margin: float = 5.0,
    ) -> None:
        if workers < 1 or max_failures < 1 or kill_margin < 0:
            raise ValueError("workers and max_failures must be >= 1, kill_margin >= 0")
        self.argv = list(argv)
        self.workers = workers
        self.config = config
        self.max_failures = max_failures
        self.kill_margin = kill_margin
        self.pids: dict[int, int] = {}
        self.failure: str | None = None
        self._procs: dict[int, trio.Process] = {}
        self._stopping = trio.Event()
        self._workers_scope = trio.CancelScope()

    async def run(
        self,
        host: str | None,
        port: int,
        *,
        task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Bind, run the workers until a signal (or giving up), stop them.

        Raises:
            OSError: the address cannot be bound.
        """
        backlog: dict[str, Any] = {}
        if self.config.backlog is not None:
            backlog["backlog"] = self.config.backlog
        listeners = await trio.open_tcp_listeners(port, host=host, **backlog)
        for listener in listeners:
            host_, port_ = listener.socket.getsockname()[:2]
            host_ = f"[{host_}]" if ":" in host_ else host_
            scheme = "https" if self.config.certfile else "http"
            logger.info(
                "trio-sse serving on %s://%s:%s/ with %d workers",
                scheme,
                host_,
                port_,
                self.workers,
            )
        read_end, write_end = os.pipe()
        try:
            fds = [listener.socket.fileno() for listener in listeners]
            command = [
                sys.executable,
                "-m",
                "trio_sse",
                *self.argv,
                LISTEN_FDS_OPTION,
                ",".join(map(str, fds)),
                PARENT_FD_OPTION,
                str(read_end),
            ]
            options: dict[str, Any] = {"pass_fds": (*fds, read_end), "process_group": 0}
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._watch_signals, signals)
                    with self._workers_scope:
                        async with trio.open_nursery() as slots:
                            for index in range(self.workers):
                                slots.start_soon(self._run_slot, index, command, options)
                            task_status.started(listeners)
                    nursery.cancel_scope.cancel()
        finally:
            os.close(read_end)
            os.close(write_end)
            for listener in listeners:
                listener.socket.close()
        if self._workers_scope.cancelled_caught:
            logger.warning("workers still running after the grace period were killed")

    def stop(self) -> None:
        """Ask every worker to shut down gracefully; kill those too slow."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        for proc in self._procs.values():
            proc.send_signal(signal.SIGTERM)
        cfg = self.config
        bound = cfg.shutdown_grace_period + cfg.close_linger + self.kill_margin
        self._workers_scope.deadline = trio.current_time() + bound

    async def _watch_signals(self, signals: Any) -> None:
        async for signum in signals:
            if self._stopping.is_set():
                logger.warning("second signal: killing the workers and exiting now")
                for proc in self._procs.values():
                    proc.kill()
                os._exit(1)
            logger.info(
                "%s: stopping %d workers (grace period %.1f s; again to exit now)",
                signal.Signals(signum).name,
                len(self._procs),
                self.config.shutdown_grace_period,
            )
            self.stop()

    async def _run_slot(self, index: int, command: list[str], options: dict[str, Any]) -> None:
        failures = 0
        while not self._stopping.is_set():
            started = trio.current_time()
            try:
                proc = await trio.lowlevel.open_process(command, **options)
            except OSError as exc:  # e.g. out of memory or processes
                logger.error("worker %d: cannot start a process: %s", index, exc)
                if not await self._failed(index, failures := failures + 1, f"failed: {exc}"):
                    return
                continue
            self._procs[index] = proc
            self.pids[index] = proc.pid
            if self._stopping.is_set():
                proc.send_signal(signal.SIGTERM)
            logger.info("worker %d started (pid %d)", index, proc.pid)
            try:
                code = await proc.wait()
            finally:
                if proc.returncode is None:
                    # Cancelled (the stop deadline passed): no orphans.
                    proc.kill()
                    with trio.CancelScope(shield=True):
                        await proc.wait()
                    logger.warning("worker %d (pid %d) killed", index, proc.pid)
                del self._procs[index], self.pids[index]
            if self._stopping.is_set():
                logger.info("worker %d (pid %d) %s", index, proc.pid, _describe(code))
                return
            uptime = trio.current_time() - started
            failures = failures + 1 if uptime < FAST_FAILURE else 0
            logger.warning(
                "worker %d (pid %d) %s after %.1f s", index, proc.pid, _describe(code), uptime
            )
            if not await self._failed(index, failures, _describe(code)):
                return

    async def _failed(self, index: int, failures: int, what: str) -> bool:
        """Wait before a restart; ``False`` if the supervisor stops (or gives up) instead."""
        if failures >= self.max_failures:
            self.failure = (
                f"trio-sse: giving up: worker {index} ended {failures} times in a row "
                f"within {FAST_FAILURE:g} s of starting (last: {what}); its error is in "
                "the log above (--max-worker-failures sets the limit)"
            )
            logger.error("worker %d keeps failing: stopping the other workers", index)
            self.stop()
            return False
        delay = min(BACKOFF_MIN * 2 ** (failures - 1), BACKOFF_MAX) if failures else 0.0
        logger.info("worker %d: restarting in %.1f s", index, delay)
        with trio.move_on_after(delay):
            await self._stopping.wait()
        return not self._stopping.is_set()
