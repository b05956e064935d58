"""Time from SIGTERM to the exit of ``trio-sse serve --workers W`` with S open streams.

Run with ``python3 noxfile.py -s bench-workers`` or
``python benchmarks/bench_workers_shutdown.py [WORKERS] [STREAMS]`` (default 2
and 100). Starts the supervisor on 127.0.0.1 on a free port, opens STREAMS
event streams (HTTP/1.0, each waits for its first event, which names the
worker's pid), sends SIGTERM to the supervisor and reports: how the streams
were spread over the workers, when the last stream received its final
``retry:`` event, when the supervisor exited (and its exit code), and the
spread of the ``retry:`` values (``stream_end_retry`` 1000 ms plus up to
``stream_end_retry_jitter`` 5000 ms, the defaults).
"""

from __future__ import annotations

import collections
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from trio_sse import Decoder

APP = """
import os
import trio
from trio_sse import App, Event

app = App()


@app.stream("/s")
async def stream(request, stream):
    await stream.send(Event(str(os.getpid())))
    await trio.sleep_forever()
"""


async def open_stream(port: int) -> tuple[trio.SocketStream, Decoder, str]:
    sock = await trio.open_tcp_stream("127.0.0.1", port)
    await sock.send_all(b"GET /s HTTP/1.0\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += await sock.receive_some()
    decoder = Decoder()
    events = decoder.feed(data.partition(b"\r\n\r\n")[2])
    while not events:
        events = decoder.feed(await sock.receive_some())
    return sock, decoder, events[0].data


async def finish(sock: trio.SocketStream, decoder: Decoder, ends: list[float]) -> None:
    async for chunk in sock:
        decoder.feed(chunk)
    ends.append(time.monotonic())
    await sock.aclose()


async def measure(proc: subprocess.Popen[bytes], port: int, streams: int) -> None:
    with trio.fail_after(30):
        opened = [await open_stream(port) for _ in range(streams)]
    spread = collections.Counter(pid for _, _, pid in opened)
    ends: list[float] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            for sock, decoder, _ in opened:
                nursery.start_soon(finish, sock, decoder, ends)
        code = await trio.to_thread.run_sync(proc.wait)
        exited = time.monotonic()
    retries = sorted(d.retry for _, d, _ in opened if d.retry is not None)
    print(f"workers {len(spread)} answering, streams {streams}, per worker pid: {dict(spread)}")
    print(f"last stream ended {1000 * (max(ends) - sent):.0f} ms after SIGTERM")
    print(f"supervisor exited with code {code} {1000 * (exited - sent):.0f} ms after SIGTERM")
    if retries:
        print(
            f"final retry: received by {len(retries)}/{streams}, "
            f"min {retries[0]} ms, median {retries[len(retries) // 2]} ms, max {retries[-1]} ms"
        )


def main(workers: int, streams: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "bench_app.py").write_text(APP)
        command = [sys.executable, "-m", "trio_sse", "serve", "bench_app:app", "--port", "0"]
        command += ["--workers", str(workers)]
        log = Path(tmp, "log")
        with log.open("w") as err:
            proc = subprocess.Popen(command, cwd=tmp, stderr=err)
        try:
            deadline = time.monotonic() + 30
            # Wait for every worker to serve (each logs its listener).
            while len(ports := re.findall(r"serving on http://[\d.]+:(\d+)/", log.read_text())) <= (
                workers
            ):
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            trio.run(measure, proc, int(ports[0]), streams)
        finally:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    main(*(args + [2, 100][len(args) :]))
