"""Issue 11, finding 9: hypercorn's crash input, alone and behind nginx.

hypercorn 0.18's trio worker dies on ``GET /hello HTTP/1.0\\r\\n\\r\\nX`` (a
request followed by a byte on a connection that is not kept alive; upstream
hypercorn issues #203/#225). The first test shows the hazard on hypercorn
alone: if it starts failing, hypercorn fixed it, and docs/hypercorn.md must
say so. The second shows the safe deployment of docs/hypercorn.md: nginx
parses HTTP itself, the stray byte never reaches hypercorn, and hypercorn
keeps serving.
"""

from __future__ import annotations

import socket

from proxies import Processes, http_get, hypercorn_alone, nginx_hypercorn, receive_all

__all__ = ["hypercorn_alone", "nginx_hypercorn"]

CRASH = b"GET /hello HTTP/1.0\r\n\r\nX"


def send_crash_input(port: int, times: int) -> None:
    for _ in range(times):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(CRASH)
                receive_all(s)
        except OSError:
            return  # the server is gone


def test_the_crash_input_kills_hypercorn_alone(hypercorn_alone: Processes) -> None:
    assert http_get(hypercorn_alone.hypercorn_port).startswith(b"HTTP/1.1 200")
    # The crash is a race inside hypercorn: it takes a few to a few dozen tries
    # (more on a loaded machine); sending stops as soon as the server is gone.
    send_crash_input(hypercorn_alone.hypercorn_port, 100)
    hypercorn_alone.hypercorn.wait(10)
    assert http_get(hypercorn_alone.hypercorn_port) == b""


def test_behind_nginx_the_crash_input_does_not_reach_hypercorn(
    nginx_hypercorn: Processes,
) -> None:
    port = nginx_hypercorn.nginx_port
    assert http_get(port).endswith(b"\r\n\r\nhello")
    send_crash_input(port, 20)
    reply = http_get(port)
    assert reply.startswith(b"HTTP/1.1 200"), reply
    assert reply.endswith(b"\r\n\r\nhello")
    assert nginx_hypercorn.hypercorn.poll() is None, "hypercorn died"
