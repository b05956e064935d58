"""``trio-sse listen URL``, run as a real subprocess against a real server on 127.0.0.1."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import trio
from servers import RunningServer, start_raw

from trio_sse import App, Event, EventStream, Request, StreamResponse


def numbers_app(seen: list[tuple[str | None, str | None]]) -> App:
    app = App()

    @app.stream("/numbers")
    async def numbers(request: Request, stream: EventStream) -> None:
        seen.append((request.last_event_id, request.headers.get("x-token")))
        start = int(request.last_event_id or 0)
        await stream.send(Event(retry=10))
        await stream.send(Event(f"n{start + 1}\nsecond line", event="number", id=str(start + 1)))
        await stream.send(Event(f"plain {start + 2}", id=str(start + 2)))
        # ... and the response ends: the listener reconnects.

    return app


async def run_listen(*args: str) -> subprocess.CompletedProcess[bytes]:
    """``python -m trio_sse listen ARGS`` to its end (20 s at most); output captured."""
    with trio.fail_after(20):
        return await trio.run_process(
            [sys.executable, "-m", "trio_sse", "listen", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


class Listener:
    """``python -m trio_sse listen ...`` with its stdout read line by line."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.buffer = b""

    async def line(self) -> str:
        assert self.process.stdout is not None
        while b"\n" not in self.buffer:
            chunk = await self.process.stdout.receive_some(65536)
            assert chunk, "listener exited"
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    async def stop(self) -> tuple[int, str]:
        """Ctrl-C; return the exit status and stderr."""
        self.process.send_signal(signal.SIGINT)
        assert self.process.stderr is not None
        err = b""
        while chunk := await self.process.stderr.receive_some(65536):
            err += chunk
        return await self.process.wait(), err.decode()


async def start_listener(*args: str) -> Listener:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trio_sse", "listen", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    return Listener(process)


async def serve(nursery: trio.Nursery, seen: list[tuple[str | None, str | None]]) -> RunningServer:
    return await start_raw(nursery, numbers_app(seen))


async def test_listen_lines_reconnect_and_ctrl_c(nursery: trio.Nursery) -> None:
    seen: list[tuple[str | None, str | None]] = []
    server = await serve(nursery, seen)
    with trio.fail_after(20):
        listener = await start_listener(f"{server.url}/numbers", "-H", "X-Token: abc")
        lines = [await listener.line() for _ in range(5)]
        status, err = await listener.stop()
    assert lines == ["number: n1", "second line", "plain 2", "number: n3", "second line"]
    assert seen[:2] == [(None, "abc"), ("2", "abc")]
    assert status == 130
    assert "Traceback" not in err
    assert "stream ended; reconnecting in 0.01 s" in err


async def test_listen_json_and_last_event_id(nursery: trio.Nursery) -> None:
    seen: list[tuple[str | None, str | None]] = []
    server = await serve(nursery, seen)
    with trio.fail_after(20):
        listener = await start_listener(f"{server.url}/numbers", "--json", "--last-event-id", "9")
        records = [json.loads(await listener.line()) for _ in range(3)]
        status, err = await listener.stop()
    assert records == [
        {"type": "number", "data": "n10\nsecond line", "id": "10"},
        {"type": "message", "data": "plain 11", "id": "11"},
        {"type": "number", "data": "n12\nsecond line", "id": "12"},
    ]
    assert seen[0] == ("9", None)
    assert status == 130
    assert "Traceback" not in err


async def test_listen_refused_stream_exits_with_a_reason(nursery: trio.Nursery) -> None:
    server = await serve(nursery, [])
    result = await run_listen(f"{server.url}/nowhere")
    assert result.returncode == 1
    err = result.stderr.decode()
    assert "status 404" in err
    assert "Traceback" not in err
    assert err.count("\n") == 1


async def test_listen_bad_header_option() -> None:
    result = await run_listen("http://127.0.0.1:9/", "-H", "nocolon")
    assert result.returncode == 1
    assert b"expected --header 'Name: value'" in result.stderr


async def test_listen_into_a_closed_pipe_exits_quietly(nursery: trio.Nursery) -> None:
    server = await serve(nursery, [])
    with trio.fail_after(20):
        listener = await start_listener(f"{server.url}/numbers")
        assert await listener.line() == "number: n1"
        assert listener.process.stdout is not None
        await listener.process.stdout.aclose()  # like `| head -1`
        assert listener.process.stderr is not None
        err = b""
        while chunk := await listener.process.stderr.receive_some(65536):
            err += chunk
        status = await listener.process.wait()
    assert status == 0
    assert b"Traceback" not in err


async def test_listen_post_json_with_a_sentinel(nursery: trio.Nursery) -> None:
    app = App()
    bodies: list[bytes] = []

    @app.post("/chat")
    async def chat(request: Request) -> StreamResponse:
        bodies.append(await request.body())

        async def run(stream: EventStream) -> None:
            for word in ("Hello", "there", "[DONE]"):
                await stream.send(Event(word))
            await trio.sleep_forever()

        return StreamResponse(run)

    server = await start_raw(nursery, app)
    result = await run_listen(
        f"{server.url}/chat", "--data", '{"prompt": "hi"}', "--sentinel", "[DONE]"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines() == ["Hello", "there"]
    assert [json.loads(b) for b in bodies] == [{"prompt": "hi"}]


async def test_listen_data_must_be_json() -> None:
    result = await run_listen("http://127.0.0.1:9/", "--data", "{x")
    assert result.returncode == 1
    assert b"--data is not valid JSON" in result.stderr
    assert b"Traceback" not in result.stderr
