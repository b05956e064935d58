"""``trio_sse.run(app)`` in a real process behaves like ``trio-sse serve``.

Each test starts ``python script.py`` (the shape of every example's
``__main__`` block), talks to it over a loopback socket and signals it.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from clients import Client
from servers import serving_process

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from examples.hello import app
from trio_sse import run
run(app, port={port})
"""


def _script(tmp_path: Path, port: int) -> list[str]:
    script = tmp_path / "app.py"
    script.write_text(SCRIPT.format(root=str(ROOT), port=port))
    return [sys.executable, str(script)]


async def _read_until_the_end(port: int, proc: subprocess.Popen[bytes], signum: int) -> bytes:
    """Open ``/clock``; once it streams, signal ``proc``; the raw bytes after that."""
    async with await Client.connect("127.0.0.1", port) as client:
        await client.open("GET", "/clock")
        assert client.status == 200
        await client.until(b"data: ")
        seen = len(client.raw)
        proc.send_signal(signum)
        await client.rest()
        return bytes(client.raw[seen:])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_streams_with_retry_and_the_process_exits_cleanly(
    tmp_path: Path, signum: signal.Signals
) -> None:
    with serving_process(_script(tmp_path, 0), cwd=tmp_path) as server:
        rest = trio.run(_read_until_the_end, server.port, server.proc, signum)
        assert rest.endswith(b"0\r\n\r\n"), rest  # the terminating chunk
        assert re.search(rb"retry: \d+\n\n", rest), rest
        assert server.proc.wait(timeout=20) == 0, server.log()
        stderr = server.log()
    assert "Traceback" not in stderr
    assert f"{signum.name}: shutting down" in stderr


def test_an_address_in_use_is_one_line_and_a_failure(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            _script(tmp_path, port), capture_output=True, text=True, timeout=20, cwd=tmp_path
        )
    stderr = done.stderr
    assert done.returncode == 1
    assert stderr.strip().splitlines() == [
        f"trio-sse: cannot serve on 127.0.0.1:{port}: [Errno 98] Address already in use"
    ], stderr


def test_an_app_error_is_its_own_traceback_not_nested_groups(tmp_path: Path) -> None:
    script = tmp_path / "failing.py"
    script.write_text(
        "import trio\n"
        "from trio_sse import App, run\n"
        "app = App()\n"
        "@app.background\n"
        "async def ticker() -> None:\n"
        "    await trio.sleep(0.1)\n"
        "    raise RuntimeError('the database is down')\n"
        "run(app, port=0)\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=20, cwd=tmp_path
    )
    assert done.returncode == 1
    assert done.stderr.rstrip().endswith("RuntimeError: the database is down"), done.stderr
    assert "ExceptionGroup" not in done.stderr
    assert "raise RuntimeError('the database is down')" in done.stderr  # where it happened
