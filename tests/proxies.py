"""Real processes for deployment tests: hypercorn serving an App, nginx in front.

Both listen on free loopback ports; nginx gets its own temporary prefix
directory and configuration (no system files are touched). The processes are
killed when the fixture ends. ``nginx`` comes from the Debian package
``nginx-light`` (``.ci/run`` installs it on a fresh machine).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from clients import Client

ROOT = Path(__file__).resolve().parent.parent

NGINX_CONF = """\
{user}worker_processes 1;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 128; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    upstream app {{ server 127.0.0.1:{upstream}; keepalive 8; }}
    server {{
        listen 127.0.0.1:{port};
        {location}
    }}
}}
"""

# The deployment of docs/hypercorn.md: HTTP/1.1 upstream, no buffering.
APP_LOCATION = """location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering off;
            proxy_read_timeout 1h;
        }"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within 15 s")


async def http_get(port: int, target: str = "/hello") -> bytes:
    """One HTTP/1.0 GET; the whole reply, raw (b"" if the connection failed)."""
    try:
        async with await Client.connect("127.0.0.1", port) as client:
            await client.send_request("GET", target, http_version="1.0")
            return await client.wait_closed()
    except OSError:
        return b""


@dataclass
class Processes:
    hypercorn: subprocess.Popen[bytes]
    hypercorn_port: int
    nginx: subprocess.Popen[bytes] | None = None
    nginx_port: int = 0


def nginx_binary() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
    )
    if found is None:
        pytest.fail("nginx is not installed: apt-get install nginx-light (.ci/run does it)")
    return found


def start_hypercorn(app: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "hypercorn", "-k", "trio", "-b", f"127.0.0.1:{port}", app],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_listening(port, process, "hypercorn")
    return process, port


def start_nginx(
    tmp: Path, upstream: int, location: str = APP_LOCATION
) -> tuple[subprocess.Popen[bytes], int]:
    """nginx on a free port, proxying to ``upstream`` (named ``app``) with ``location``."""
    binary = nginx_binary()
    port = free_port()
    (tmp / "body").mkdir()
    (tmp / "proxy").mkdir()
    user = "user root root;\n" if os.geteuid() == 0 else ""
    conf = tmp / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(user=user, prefix=tmp, upstream=upstream, port=port, location=location)
    )
    process = subprocess.Popen(
        [binary, "-p", str(tmp), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, process, "nginx")
    except RuntimeError as exc:
        log = tmp / "error.log"
        raise RuntimeError(f"{exc}: {log.read_text() if log.exists() else ''}") from None
    return process, port


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:  # pragma: no cover - a stuck process
        process.kill()
        process.wait(5)


@pytest.fixture
def hypercorn_alone() -> Iterator[Processes]:
    """hypercorn serving ``tests.proxied_app:app`` on a free loopback port."""
    process, port = start_hypercorn("tests.proxied_app:app")
    try:
        yield Processes(process, port)
    finally:
        stop(process)


@pytest.fixture
def nginx_hypercorn(tmp_path: Path) -> Iterator[Processes]:
    """nginx on a free loopback port, proxying to hypercorn serving ``tests.proxied_app:app``."""
    process, port = start_hypercorn("tests.proxied_app:app")
    procs = Processes(process, port)
    try:
        procs.nginx, procs.nginx_port = start_nginx(tmp_path, port)
        yield procs
    finally:
        stop(procs.nginx)
        stop(process)
