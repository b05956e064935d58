"""Fuzz and flood the raw server's edge; report what happened.

Run with ``python3 noxfile.py -s fuzz`` (``-- --requests N --flood N``).
``tests/test_fuzz_edge.py`` runs a short bounded version of both in the suite.

*Fuzz*: mutated HTTP/1.1 requests (byte flips, cuts, duplications, inserted
tokens such as ``Transfer-Encoding`` or a folded line) against a
:class:`trio_sse._server.Server` over in-memory streams, 16 at a time. Checked for
every input: the server task survives, the answer (if any) is a parseable
status line and never ``500``, nothing is logged at ``ERROR`` (a traceback),
and at the end no connection is left open.

*Flood*: real loopback sockets. ``max_connections`` streams subscribe to a
topic; while far more connections than that arrive (a few hundred at once),
events are published; then every subscriber must have every event, in order,
and every flooding connection must have read a ``503`` (not a reset).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from dataclasses import asdict, dataclass, field

import trio
import trio.testing

from trio_sse import (
    App,
    Broker,
    Config,
    Event,
    EventStream,
    Request,
    publish_endpoint,
    topic_stream,
)
from trio_sse._server import Server

SEEDS = [
    b"GET / HTTP/1.1\r\nhost: x\r\n\r\n",
    b"HEAD / HTTP/1.1\r\nhost: x\r\n\r\n",
    b"GET /events HTTP/1.1\r\nhost: x\r\nlast-event-id: 5\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello",
    b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"POST /publish/news HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    b'content-length: 37\r\n\r\n{"data": "x", "id": "7", "retry": 10}',
    b"POST /publish/news HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded"
    b"\r\ncontent-length: 16\r\n\r\ndata=x&retry=100",
    b"POST /json HTTP/1.1\r\nhost: x\r\ncontent-length: 9\r\n\r\n[[[{}]]] ",
    b"OPTIONS /events HTTP/1.1\r\nhost: x\r\norigin: https://a.example\r\n"
    b"access-control-request-method: GET\r\n\r\n",
    b"GET / HTTP/1.1\r\nhost: x\r\n\r\nGET /items/1?q=2 HTTP/1.1\r\nhost: x\r\n\r\n",
    b"GET /events/news HTTP/1.0\r\n\r\n",
]

TOKENS = [
    b"\r\n",
    b"\r\n ",
    b" ",
    b":",
    b"\x00",
    b"\xff",
    "²".encode(),
    b"transfer-encoding: chunked\r\n",
    b"transfer-encoding:\r\n chunked\r\n",
    b"content-length: 3\r\n",
    b"content-length: 99999999999\r\n",
    b"authorization: a\r\n",
    b"host: y\r\n",
    b"expect: 100-continue\r\n",
    b"HTTP/1.2",
    b"HEAD",
    b"[" * 64,
    b"{" * 2000,
    b"0\r\n\r\n",
    b"x-h: v\r\n" * 120,
    b"a" * 20_000,
]


@dataclass
class FuzzReport:
    requests: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    closed_without_response: int = 0
    errors_logged: int = 0
    bad_status_lines: int = 0
    connections_left: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.errors_logged == 0
            and self.bad_status_lines == 0
            and self.connections_left == 0
            and "500" not in self.statuses
        )


def fuzz_app() -> App:
    config = Config(
        header_timeout=0.5,
        body_timeout=0.5,
        keep_alive_timeout=0.5,
        close_linger=0.05,
        heartbeat_interval=None,
        max_header_size=8192,
        max_body_size=256 * 1024,
    )
    app = App(config=config)
    broker = Broker()
    broker.declare("news")

    @app.get("/")
    async def index(request: Request) -> str:
        return "hello"

    @app.get("/items/{item}")
    async def item(request: Request) -> dict[str, str]:
        return {"item": request.path_params["item"], "q": request.query_param("q") or ""}

    @app.route("/echo", methods=["POST"])
    async def echo(request: Request) -> bytes:
        return await request.body()

    @app.post("/json")
    async def parse(request: Request) -> object:
        return {"got": await request.json()}

    @app.stream("/events")
    async def events(request: Request, stream: EventStream) -> None:
        await stream.send(Event("one", id="1"))
        await stream.send(Event("two", id="2"))

    app.add_route("/events/{topic}", topic_stream(broker))
    app.add_route(
        "/publish/{topic}", publish_endpoint(broker, authorize=lambda r, t: True), ["POST"]
    )

    @app.background
    async def close_streams() -> None:  # streams on /events/news end at shutdown
        await trio.sleep_forever()

    return app


BODIES = [
    (b"/publish/news", b"application/json", b'{"data": "x", "id": "7", "retry": 10}'),
    (b"/publish/news", b"application/x-www-form-urlencoded", b"data=x&retry=100&id=9"),
    (b"/json", b"application/json", b'[[[{"a": "]]"}]]]'),
    (b"/echo", b"text/plain", b"hello"),
]

BODY_TOKENS = [
    "²".encode(),
    "٣".encode(),
    b"\xff",
    b"\x00",
    b"[" * 40,
    b"[" * 50_000,
    b'"',
    b"\\",
    b"%C2%B2",
    b"&retry=",
    b"&id=" + b"i" * 400,
    b", 1e400",
    b"-1",
    b"99999999999",
]


def mutate(rng: random.Random) -> bytes:
    """A mutated request: the head at random, or the body with a right Content-Length."""
    choice = rng.random()
    if choice < 0.4:
        return _mutate_body(rng)
    if choice < 0.55:
        # A HEAD request that the server must refuse: the answer is still a head.
        version = rng.choice([b"1.1", b"1.2", b"2.0", b"1.1"])
        extra = rng.choice([b"", b"x-h: 1\r\n" * 101, b"authorization: a\r\nauthorization: b\r\n"])
        return b"HEAD / HTTP/%s\r\nhost: x\r\n%s\r\n" % (version, extra)
    data = bytearray(rng.choice(SEEDS))
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(5)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:
            data[min(pos, len(data) - 1)] = rng.randrange(256)
        elif op == 1:
            end = min(len(data), pos + rng.randint(1, 16))
            del data[pos:end]
        elif op == 2:
            end = min(len(data), pos + rng.randint(1, 32))
            data[pos:pos] = data[pos:end]
        elif op == 3:
            data[pos:pos] = rng.choice(TOKENS)
        else:
            # Insert a token right after the request line, where headers go.
            line_end = data.find(b"\r\n") + 2
            data[line_end:line_end] = rng.choice(TOKENS)
    return bytes(data)


def _mutate_body(rng: random.Random) -> bytes:
    target, content_type, body = rng.choice(BODIES)
    data = bytearray(body)
    for _ in range(rng.randint(1, 2)):
        pos = rng.randrange(len(data) + 1)
        data[pos:pos] = rng.choice(BODY_TOKENS)
    return b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s" % (
        target,
        content_type,
        len(data),
        bytes(data),
    )


class _ErrorCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0
        self.first: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if self.first is None:
            self.first = self.format(record)


async def fuzz(requests: int, seed: int = 0, concurrency: int = 16) -> FuzzReport:
    """Send ``requests`` mutated requests; see the module docstring for the checks."""
    rng = random.Random(seed)
    report = FuzzReport(requests=requests)
    app = fuzz_app()
    server = Server(app, app.config)
    send, receive = trio.open_memory_channel[trio.abc.Stream](0)

    class Listener(trio.abc.Listener[trio.abc.Stream]):
        async def accept(self) -> trio.abc.Stream:
            return await receive.receive()

        async def aclose(self) -> None:
            await trio.lowlevel.checkpoint()

    errors = _ErrorCounter()
    logger = logging.getLogger("trio_sse")
    logger.addHandler(errors)
    inputs = [mutate(rng) for _ in range(requests)]
    started = time.perf_counter()

    async def one(data: bytes) -> None:
        client, server_side = trio.testing.memory_stream_pair()
        await send.send(server_side)
        with trio.move_on_after(5):
            await client.send_all(data)
            await client.send_eof()
            raw = b""
            try:
                while chunk := await client.receive_some(65536):
                    raw += chunk
            except trio.BrokenResourceError:
                pass
        await client.aclose()
        if not raw:
            report.closed_without_response += 1
            return
        line = raw.split(b"\r\n", 1)[0]
        parts = line.split(b" ", 2)
        if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0") or not parts[1].isdigit():
            report.bad_status_lines += 1
            return
        status = parts[1].decode()
        report.statuses[status] = report.statuses.get(status, 0) + 1

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run, [Listener()])
            limiter = trio.CapacityLimiter(concurrency)

            async def limited(data: bytes) -> None:
                async with limiter:
                    await one(data)

            async with trio.open_nursery() as clients:
                for data in inputs:
                    clients.start_soon(limited, data)
            with trio.move_on_after(5):
                while server.connections:  # noqa: ASYNC110 - polling a count
                    await trio.sleep(0.01)
            report.connections_left = len(server.connections)
            nursery.cancel_scope.cancel()
    finally:
        logger.removeHandler(errors)
    report.errors_logged = errors.count
    if errors.first:
        print("first error logged:\n" + errors.first, file=sys.stderr)
    report.seconds = round(time.perf_counter() - started, 2)
    return report


@dataclass
class FloodReport:
    subscribers: int = 0
    connections: int = 0
    events: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    subscribers_complete: int = 0
    refusals: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.subscribers_complete == self.subscribers
            and self.outcomes.get("503", 0) == self.connections
        )


async def flood(
    connections: int,
    subscribers: int = 50,
    events: int = 100,
    max_refusing: int = 8,
    concurrency: int = 400,
    hold: float = 0.05,
) -> FloodReport:
    """Hold ``subscribers`` streams, flood ``connections`` more, publish ``events``.

    ``max_refusing`` is small and each flooder keeps its connection ``hold``
    seconds after reading the answer, so that most refusals overflow the
    refusal pool (``refusal_not_awaited``): the path a real connect flood takes.
    """
    report = FloodReport(subscribers=subscribers, connections=connections, events=events)
    config = Config(
        max_connections=subscribers,
        max_refusing=max_refusing,
        heartbeat_interval=None,
        close_linger=1.0,
    )
    app = App(config=config)
    broker = Broker()
    topic = broker.declare("news")
    app.add_route("/events/{topic}", topic_stream(broker))
    server = Server(app, config)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1", backlog=4096)
    port = listeners[0].socket.getsockname()[1]
    started = time.perf_counter()
    flooded = trio.Event()

    async def subscriber(got: list[bytes], task_status: trio.TaskStatus[None]) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET /events/news HTTP/1.1\r\nhost: x\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += await stream.receive_some(65536)
        task_status.started()
        while buf.count(b"data: e") < events:
            data = await stream.receive_some(65536)
            if not data:
                break
            buf += data
        got.append(buf)
        await flooded.wait()  # hold the slot until the flood is over
        await stream.aclose()

    async def flooder() -> None:
        outcome = "other"
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"GET /events/news HTTP/1.1\r\nhost: x\r\n\r\n")
            raw = b""
            with trio.move_on_after(10) as timer:
                while data := await stream.receive_some(65536):
                    raw += data
            await trio.sleep(hold)  # a flooder in no hurry to close
            await stream.aclose()
            outcome = raw[9:12].decode() if raw.startswith(b"HTTP/1.1 ") else "empty"
            if timer.cancelled_caught:
                outcome = "hung"
        except (trio.BrokenResourceError, OSError):
            outcome = "reset"
        report.outcomes[outcome] = report.outcomes.get(outcome, 0) + 1

    async with trio.open_nursery() as nursery:
        await nursery.start(server.run, listeners)
        got: list[bytes] = []
        async with trio.open_nursery() as subs:
            for _ in range(subscribers):
                await subs.start(subscriber, got)
            while topic.stats().subscribers < subscribers:  # noqa: ASYNC110 - polling a count
                await trio.sleep(0.01)
            limiter = trio.CapacityLimiter(concurrency)

            async def limited() -> None:
                async with limiter:
                    await flooder()

            async with trio.open_nursery() as floods:
                for i in range(connections):
                    floods.start_soon(limited)
                    if (
                        i % (max(1, connections // events)) == 0
                        and topic.stats().published < events
                    ):
                        topic.publish_nowait(Event(f"e{topic.stats().published}"))
                        await trio.lowlevel.checkpoint()
            while topic.stats().published < events:
                topic.publish_nowait(Event(f"e{topic.stats().published}"))
            flooded.set()
        expected = b"".join(b"data: e%d\n\n" % i for i in range(events))
        for buf in got:
            data = b"".join(
                line + b"\n\n"
                for line in (p.split(b"\n")[-1] for p in buf.split(b"\n\n"))
                if line.startswith(b"data: e")
            )
            if data == expected:
                report.subscribers_complete += 1
        report.refusals = dict(app.refusals)
        nursery.cancel_scope.cancel()
    report.seconds = round(time.perf_counter() - started, 2)
    return report


async def main(requests: int, connections: int, seed: int) -> bool:
    fuzzed = await fuzz(requests, seed)
    print(json.dumps({"fuzz": asdict(fuzzed), "ok": fuzzed.ok}, indent=2))
    flooded = await flood(connections)
    print(json.dumps({"flood": asdict(flooded), "ok": flooded.ok}, indent=2))
    return fuzzed.ok and flooded.ok


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--flood", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ok = trio.run(main, args.requests, args.flood, args.seed)
    sys.exit(0 if ok else 1)
