"""Start-up of the raw server when the app fails at once.

A background task, or a task of the lifespan, that raises as soon as it runs
races the server's own start-up (trio runs the tasks of one batch in random
order). Whichever wins, ``serve_listeners`` must end, raise that one error as
itself (no ``ExceptionGroup``) and close its listeners. Each case runs many
times on a real TCP listener, in a fresh interpreter: a hang there sits in a
shielded cancel scope that no ``fail_after`` can break, so a watchdog task
ends the process instead, naming the iteration.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

ROUNDS = 60

SCRIPT = """
import os, sys
from contextlib import asynccontextmanager
from functools import partial
import trio
from trio_sse import App, Config, serve_listeners

class Boom(Exception):
    pass

def failing_background() -> App:
    app = App()

    @app.background
    async def fails() -> None:
        raise Boom("background failed")

    return app

def failing_lifespan_task() -> App:
    async def fails() -> None:
        raise Boom("lifespan task failed")

    @asynccontextmanager
    async def lifespan(app):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fails)
            yield

    return App(lifespan=lifespan)

async def watchdog(state: list[int]) -> None:
    await trio.sleep(10)
    print(f"serve_listeners hung at round {state[0]}", flush=True)
    os._exit(3)

def idle_background() -> App:
    app = App()

    @app.background
    async def idle() -> None:
        await trio.sleep_forever()

    return app

async def cancelled_at_start_up(round: int, listeners) -> None:
    # Cancelled after 0 to 6 checkpoints: before the server task ran, while
    # it starts the lifespan, while it starts serving, or once it serves.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(serve_listeners, idle_background(), listeners, config=Config()))
        for _ in range(round % 7):
            await trio.lowlevel.checkpoint()
        nursery.cancel_scope.cancel()

async def main(case: str, rounds: int) -> None:
    state = [0]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watchdog, state)
        for state[0] in range(rounds):
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            if case == "cancelled":
                await cancelled_at_start_up(state[0], listeners)
            else:
                app = {"background": failing_background, "lifespan": failing_lifespan_task}[case]()
                try:
                    await serve_listeners(app, listeners, config=Config())
                except Boom:
                    pass
                else:
                    raise AssertionError("serve_listeners returned")
            assert all(listener.socket.fileno() == -1 for listener in listeners)
        nursery.cancel_scope.cancel()
    print("ok")

trio.run(main, sys.argv[1], int(sys.argv[2]))
"""


@pytest.mark.parametrize("case", ["background", "lifespan"])
def test_serve_listeners_ends_with_the_error_of_a_task_failing_at_start_up(case: str) -> None:
    run_rounds(case)


def test_serve_listeners_can_be_cancelled_at_any_point_of_start_up() -> None:
    run_rounds("cancelled")


def run_rounds(case: str) -> None:
    # Any other error than Boom (an ExceptionGroup, say) escapes main() and
    # shows in stderr; a hang is reported by the watchdog.
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, case, str(ROUNDS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stdout + result.stderr
