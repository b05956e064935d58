"""The ``trio-sse`` command line and the demo app, over real loopback sockets."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from functools import partial

import pytest
import trio
from clients import Client
from servers import serving_process

from trio_sse import App, Config, Decoder, Event, EventStream, MessageEvent, Request
from trio_sse._cli import _build_config, _parser, load_app, main, run


async def _get(
    port: int, target: str, headers: list[tuple[str, str]] | None = None, *, events: int = 0
) -> tuple[Client, bytes, list[MessageEvent]]:
    """GET ``target``; read the whole body, or until ``events`` events arrived."""
    async with await Client.connect("127.0.0.1", port) as client:
        await client.open("GET", target, headers or [])
        got = await client.events(events) if events else (await client.rest()).events
    return client, bytes(client.body), got


def test_load_app_errors(tmp_path: object) -> None:
    with pytest.raises(SystemExit, match="expected MODULE:APP"):
        load_app("no_colon")
    with pytest.raises(SystemExit, match="cannot import module 'no_such_module_xyz'"):
        load_app("no_such_module_xyz:app")
    with pytest.raises(SystemExit, match="has no attribute 'missing'"):
        load_app("trio_sse.demo:missing")
    with pytest.raises(SystemExit, match=r"not a trio_sse\.App"):
        load_app("trio_sse.demo:make_app")
    assert isinstance(load_app("trio_sse.demo:app"), App)


def test_config_options_map_to_config() -> None:
    args = _parser().parse_args(
        [
            "serve",
            "m:app",
            "--heartbeat-interval",
            "none",
            "--max-connections",
            "7",
            "--write-timeout",
            "2.5",
            "--heartbeat-comment",
            "ping",
        ]
    )
    cfg = _build_config(Config(), args)
    assert cfg.heartbeat_interval is None
    assert cfg.max_connections == 7
    assert cfg.write_timeout == 2.5
    assert cfg.heartbeat_comment == "ping"
    # Options not given keep the app's values.
    assert _build_config(Config(keep_alive_timeout=3), _parser().parse_args(["demo"])) == Config(
        keep_alive_timeout=3
    )


def test_option_types_come_from_the_config_annotations() -> None:
    """``backlog: int | None = None`` once parsed ``--backlog 128`` as 128.0 (rejected)."""

    def build(*options: str) -> Config:
        return _build_config(Config(), _parser().parse_args(["serve", "m:app", *options]))

    cfg = build("--backlog", "128", "--stream-end-retry-jitter", "250", "--close-linger", "2")
    assert cfg.backlog == 128
    assert type(cfg.backlog) is int
    assert cfg.stream_end_retry_jitter == 250
    assert cfg.close_linger == 2.0
    assert build("--backlog", "none").backlog is None
    assert build("--stream-end-retry-jitter", "0").stream_end_retry_jitter == 0


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--backlog", "12.5", "expected an integer or 'none', got '12.5'"),
        ("--stream-end-retry-jitter", "1.5", "expected an integer, got '1.5'"),
        ("--stream-end-retry-jitter", "none", "expected an integer, got 'none'"),
        ("--max-connections", "none", "expected an integer, got 'none'"),
        ("--write-timeout", "soon", "expected a number, got 'soon'"),
    ],
)
def test_option_type_errors_say_what_is_expected(
    option: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["serve", "m:app", option, value])
    assert message in capsys.readouterr().err


def test_negative_jitter_option_is_a_clear_error() -> None:
    args = _parser().parse_args(["serve", "m:app", "--stream-end-retry-jitter", "-5"])
    with pytest.raises(SystemExit, match="stream_end_retry_jitter must be a non-negative int"):
        _build_config(Config(), args)


def test_bad_config_option_is_a_clear_error() -> None:
    args = _parser().parse_args(["demo", "--write-timeout", "-1"])
    with pytest.raises(SystemExit, match="write_timeout must be a positive"):
        _build_config(Config(), args)
    with pytest.raises(SystemExit):
        _parser().parse_args(["demo", "--max-connections", "many"])


def test_port_in_use_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(SystemExit, match=f"cannot serve on 127.0.0.1:{port}") as info:
            main(["demo", "--port", str(port)])
    # One line naming the cause, not "Exceptions from Trio nursery".
    message = str(info.value.code)
    assert "in use" in message.lower(), message
    assert "\n" not in message
    assert "sub-exception" not in message


async def test_demo_page_and_stream() -> None:
    from trio_sse.demo import app

    app.state.tick_interval = 0.05
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(run, app, "127.0.0.1", 0, Config()))
            port = listeners[0].socket.getsockname()[1]
            response, body, _ = await _get(port, "/")
            assert response.status == 200
            assert b"new EventSource" in body
            response, _, events = await _get(port, "/events", events=4)
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
            types = [e.type for e in events]
            assert set(types) == {"clock", "metrics"}
            clock = next(e for e in events if e.type == "clock")
            assert re.fullmatch(r"\d\d:\d\d:\d\d", clock.data)
            # Every tab sees the same events; a reconnect resumes after its cursor.
            cursor = events[1].last_event_id
            _, _, again = await _get(port, "/events", [("last-event-id", cursor)], events=2)
            assert [(e.type, e.data) for e in again] == [(e.type, e.data) for e in events[2:4]]
            response, body, _ = await _get(port, "/stats")
            assert response.status == 200
            assert set(json.loads(body)) == {"clock", "metrics", "notifications", "bulk"}
            nursery.cancel_scope.cancel()


async def test_signal_shuts_down_gracefully() -> None:
    app = App(config=Config(stream_end_retry=2500, stream_end_retry_jitter=0))
    started = trio.Event()

    @app.stream("/s")
    async def s(request: Request, stream: EventStream) -> None:
        await stream.send(Event("hello"))
        started.set()
        await trio.sleep_forever()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(run, app, "127.0.0.1", 0, app.config))
            port = listeners[0].socket.getsockname()[1]
            result: list[bytes] = []

            async def client() -> None:
                _, body, _ = await _get(port, "/s")
                result.append(body)

            nursery.start_soon(client)
            await started.wait()
            os.kill(os.getpid(), signal.SIGTERM)
    # run() returned by itself; the stream ended with the retry hint and the last chunk.
    decoder = Decoder()
    assert [e.data for e in decoder.feed(result[0])] == ["hello"]
    assert decoder.retry == 2500


def test_command_line_end_to_end(tmp_path: object) -> None:
    """``python -m trio_sse demo`` serves, logs its address, and exits 0 on SIGTERM."""
    with serving_process([sys.executable, "-m", "trio_sse", "demo", "--port", "0"]) as server:
        response, _, _ = trio.run(partial(_get, server.port, "/"))
        assert response.status == 200
        server.stop(signal.SIGTERM)
    assert (
        subprocess.run(
            [sys.executable, "-m", "trio_sse", "--help"], capture_output=True, check=False
        ).returncode
        == 0
    )
