"""A minimal hand-written trio + h11 server: a bounded memory channel per client.

What one writes with trio and h11 and no framework: h11 parses the request
and frames every chunk; a ticker task ``send_nowait``\\s each event's bytes into
every client's channel (64 deep) and drops a client whose channel is full.
There is no reader task: a closed client is noticed on the next write.
"""

from __future__ import annotations

import sys
from pathlib import Path

import h11
import trio

sys.path.insert(0, str(Path(__file__).parent))
from _common import parse_args, payload

ARGS = parse_args(__doc__.splitlines()[0])
clients: set[trio.MemorySendChannel[bytes]] = set()
HEADERS = [
    ("Content-Type", "text/event-stream"),
    ("Cache-Control", "no-cache"),
]


async def ticker() -> None:
    pad = "x" * ARGS.padding
    period = 1.0 / ARGS.rate
    seq = 0
    deadline = trio.current_time()
    while True:
        deadline += period
        await trio.sleep_until(deadline)
        seq += 1
        data = f"data: {payload(seq, pad)}\n\n".encode()
        for channel in list(clients):
            try:
                channel.send_nowait(data)
            except trio.WouldBlock:  # 64 events behind: drop the client
                clients.discard(channel)
                channel.close()
            except trio.BrokenResourceError:  # its handler is on its way out
                clients.discard(channel)


async def handle(stream: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(4096)
                if not data:
                    return
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                break
            return
        send, receive = trio.open_memory_channel[bytes](64)
        clients.add(send)
        with receive:
            try:
                await stream.send_all(conn.send(h11.Response(status_code=200, headers=HEADERS)))
                async for data in receive:
                    await stream.send_all(conn.send(h11.Data(data=data)))
            finally:
                clients.discard(send)
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
        pass
    finally:
        await stream.aclose()


async def main() -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await trio.serve_tcp(handle, ARGS.port, host=ARGS.host, backlog=4096)


if __name__ == "__main__":
    trio.run(main)
