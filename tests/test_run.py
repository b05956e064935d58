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
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from examples.hello import app
from trio_sse import run
run(app, port={port})
"""


def _start(tmp_path: Path, port: int) -> subprocess.Popen[str]:
    script = tmp_path / "app.py"
    script.write_text(SCRIPT.format(root=str(ROOT), port=port))
    return subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )


def _serving_port(proc: subprocess.Popen[str]) -> int:
    assert proc.stderr is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        found = re.search(r"serving on http://127\.0\.0\.1:(\d+)/", line)
        if found:
            return int(found.group(1))
    proc.kill()
    raise AssertionError(f"no 'serving on' line; stderr: {proc.communicate()[1]!r}")


def _open_stream(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /clock HTTP/1.1\r\nhost: test\r\n\r\n")
    received = b""
    while b"data: " not in received:
        chunk = sock.recv(65536)
        assert chunk, received
        received += chunk
    assert received.startswith(b"HTTP/1.1 200 ")
    return sock


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_streams_with_retry_and_the_process_exits_cleanly(
    tmp_path: Path, signum: signal.Signals
) -> None:
    proc = _start(tmp_path, 0)
    try:
        sock = _open_stream(_serving_port(proc))
        proc.send_signal(signum)
        rest = b""
        while not rest.endswith(b"0\r\n\r\n"):  # the terminating chunk
            chunk = sock.recv(65536)
            assert chunk, rest
            rest += chunk
        sock.close()
        assert re.search(rb"retry: \d+\n\n", rest), rest
        _, stderr = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert f"{signum.name}: shutting down" in stderr


def test_an_address_in_use_is_one_line_and_a_failure(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _start(tmp_path, port)
        try:
            _, stderr = proc.communicate(timeout=20)
        finally:
            proc.kill()
    assert proc.returncode == 1
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
