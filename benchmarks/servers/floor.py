"""Bare-Python floor: one epoll loop writing pre-framed chunked bytes to every socket.

Strategy: the least work a Python SSE server can do per delivery. One
``selectors`` (epoll) loop accepts connections, reads the request head, answers
with a chunked ``text/event-stream`` head, and then, at every tick, frames the
event once as an HTTP/1.1 chunk and ``send``\\s the same ``bytes`` object to every
subscriber. A socket that cannot take the whole chunk keeps the rest in a
per-client buffer flushed on ``EVENT_WRITE``; past ``MAX_PENDING`` bytes the
client is dropped (evicted). No HTTP parsing beyond finding the blank line: it
is a floor to compare against, not a server to deploy.

Standard library only, so the harness test can run it in CI.
"""

from __future__ import annotations

import argparse
import selectors
import socket
import time

HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"\r\n"
)
MAX_PENDING = 256 * 1024


class Client:
    __slots__ = ("head", "pending", "sock", "subscribed")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.head = b""
        self.pending = bytearray()
        self.subscribed = False


def serve(host: str, port: int, rate: float, padding: int) -> None:
    sel = selectors.EpollSelector()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(4096)
    listener.setblocking(False)
    sel.register(listener, selectors.EVENT_READ, None)
    clients: dict[int, Client] = {}
    subscribers: dict[int, Client] = {}
    pad = "x" * padding
    period = 1.0 / rate
    seq = 0
    next_tick = time.monotonic() + period

    def drop(c: Client) -> None:
        fd = c.sock.fileno()
        sel.unregister(c.sock)
        clients.pop(fd, None)
        subscribers.pop(fd, None)
        c.sock.close()

    def write(c: Client, data: bytes) -> None:
        if c.pending:
            c.pending += data
            if len(c.pending) > MAX_PENDING:
                drop(c)
            return
        try:
            n = c.sock.send(data)
        except BlockingIOError:
            n = 0
        except OSError:
            drop(c)
            return
        if n < len(data):
            c.pending += data[n:]
            sel.modify(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)

    while True:
        timeout = next_tick - time.monotonic()
        for key, mask in sel.select(timeout if timeout > 0 else 0):
            c = key.data
            if c is None:
                while True:
                    try:
                        sock, _ = listener.accept()
                    except BlockingIOError:
                        break
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    c = Client(sock)
                    clients[sock.fileno()] = c
                    sel.register(sock, selectors.EVENT_READ, c)
                continue
            if mask & selectors.EVENT_READ:
                try:
                    data = c.sock.recv(4096)
                except BlockingIOError:
                    data = None
                except OSError:
                    data = b""
                if data == b"":
                    drop(c)
                    continue
                if data and not c.subscribed:
                    c.head += data
                    if b"\r\n\r\n" in c.head:
                        c.subscribed = True
                        subscribers[c.sock.fileno()] = c
                        write(c, HEAD)
            if mask & selectors.EVENT_WRITE and c.sock.fileno() in clients:
                try:
                    n = c.sock.send(c.pending)
                except BlockingIOError:
                    n = 0
                except OSError:
                    drop(c)
                    continue
                del c.pending[:n]
                if not c.pending:
                    sel.modify(c.sock, selectors.EVENT_READ, c)
        if time.monotonic() >= next_tick:
            seq += 1
            body = f"data: {time.monotonic_ns()} {seq} {pad}\n\n".encode()
            chunk = b"%x\r\n%b\r\n" % (len(body), body)
            for c in list(subscribers.values()):
                write(c, chunk)
            next_tick += period


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, default=10.0, help="events per second")
    parser.add_argument("--padding", type=int, default=64, help="bytes of padding per event")
    args = parser.parse_args()
    serve(args.host, args.port, args.rate, args.padding)


if __name__ == "__main__":
    main()
