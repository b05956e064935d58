"""``trio-sse doctor`` against trio-sse directly and behind a real nginx, one config per fault.

The app runs in the test's trio loop on a loopback port; nginx (Debian
``nginx-light``) runs as a process proxying to it, with the location block
each test names. Each finding must appear exactly when its fault is there
(as docs/deploying.md says; its `trio-sse doctor` command is the one run here).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
import trio
from proxies import ROOT, free_port, start_nginx, stop
from servers import hypercorn_config, serving, start_hypercorn

from trio_sse import App, Config, diagnose, diagnostics_stream
from trio_sse._cli import main

HTTP11 = 'proxy_http_version 1.1; proxy_set_header Connection "";'
CLEAN = HTTP11 + " proxy_buffering off; proxy_read_timeout 1h;"
# nginx's defaults (HTTP/1.0 upstream, buffering on), the header ignored: nothing
# reaches the client, not even the head (nginx 1.22 with an HTTP/1.1 upstream
# passes each chunk on at once even with buffering on).
BUFFERING = "proxy_buffering on; proxy_ignore_headers X-Accel-Buffering;"
GZIP = CLEAN + " gzip on; gzip_types text/event-stream; gzip_min_length 1;"
SHORT_READ_TIMEOUT = HTTP11 + " proxy_buffering off; proxy_read_timeout 1s;"
NO_LAST_EVENT_ID = CLEAN + ' proxy_set_header Last-Event-ID "";'
CACHED = CLEAN + ' proxy_hide_header Cache-Control; add_header Cache-Control "max-age=60";'

DURATION = 2.5


@contextmanager
def nginx(tmp: Path, upstream: int, location: str) -> Iterator[int]:
    if not location.startswith("location "):
        location = f"location / {{ proxy_pass http://127.0.0.1:{upstream}; {location} }}"
    process, port = start_nginx(tmp, upstream, location)
    try:
        yield port
    finally:
        stop(process)


@asynccontextmanager
async def app_server(heartbeat: float | None) -> AsyncIterator[int]:
    app = App()
    app.stream("/doctor")(diagnostics_stream(count=5, interval=0.1))
    app.stream("/events/doctor")(diagnostics_stream(count=5, interval=0.1))

    @app.get("/page")
    async def page(request: object) -> str:
        return "not a stream"

    async with serving(app, Config(heartbeat_interval=heartbeat), tcp=True) as running:
        yield running.port


@pytest.mark.parametrize(
    ("location", "heartbeat", "expected"),
    [
        (CLEAN, 0.5, {"http1"}),
        (BUFFERING, 0.5, {"buffered"}),
        (GZIP, 0.5, {"http1", "compressed"}),
        (SHORT_READ_TIMEOUT, 3.0, {"http1", "cut"}),
        (NO_LAST_EVENT_ID, 0.5, {"http1", "last-event-id"}),
        (CLEAN, None, {"http1", "heartbeat"}),
        (CACHED, 0.5, {"http1", "cache-control"}),
    ],
    ids=[
        "clean",
        "buffering",
        "gzip",
        "short-read-timeout",
        "no-last-event-id",
        "no-heartbeat",
        "cache-control",
    ],
)
async def test_each_finding_appears_exactly_behind_its_nginx_config(
    tmp_path: Path, location: str, heartbeat: float | None, expected: set[str]
) -> None:
    with trio.fail_after(20):
        async with app_server(heartbeat) as upstream:
            with nginx(tmp_path, upstream, location) as port:
                report = await diagnose(f"http://127.0.0.1:{port}/doctor", duration=DURATION)
    assert report.codes() == expected, report.findings
    assert all(finding.fix for finding in report.findings)
    if "compressed" in expected:  # the doctor inflates gzip and still times the probes
        assert len(report.probes) == 5


async def test_trio_sse_alone_has_no_problems_and_exact_probes() -> None:
    with trio.fail_after(20):
        async with app_server(0.5) as port:
            report = await diagnose(f"http://127.0.0.1:{port}/doctor", duration=DURATION)
    assert report.codes() == {"http1"}
    assert report.status == 200
    assert report.problems == []
    assert len(report.probes) == 5
    assert max(report.probes) < 0.2


def test_the_command_line_reports_and_fails_on_a_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def run_doctor(url_path: str, location: str) -> int:
        async with app_server(0.5) as upstream:
            with nginx(tmp_path / url_path.strip("/"), upstream, location) as port:
                url = f"http://127.0.0.1:{port}{url_path}"
                with pytest.raises(SystemExit) as exit_:
                    await trio.to_thread.run_sync(main, ["doctor", url, "--duration", "1.5"])
        return int(exit_.value.code or 0)

    (tmp_path / "doctor").mkdir()
    assert trio.run(run_doctor, "/doctor", GZIP) == 1
    out = capsys.readouterr().out
    assert "PROBLEM compressed:" in out
    assert "    fix: turn compression off" in out
    with pytest.raises(SystemExit) as refused:
        main(["doctor", f"http://127.0.0.1:{free_port()}/"])
    assert refused.value.code == 2
    assert "cannot connect to" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("alpn", "expected"), [(["h2", "http/1.1"], set()), (["http/1.1"], {"http1"})]
)
async def test_over_tls_the_http_version_is_what_a_browser_would_negotiate(
    tmp_path: Path, alpn: list[str], expected: set[str]
) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    pem = tmp_path / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    app = App(config=Config(heartbeat_interval=0.5))
    app.stream("/doctor")(diagnostics_stream(count=3, interval=0.1))
    config = hypercorn_config(certfile=str(pem), keyfile=str(pem), alpn_protocols=alpn)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            server = await start_hypercorn(nursery, app, config)
            report = await diagnose(
                f"https://127.0.0.1:{server.port}/doctor", duration=1.5, ssl_context=client
            )
            await server.stop()
    assert report.codes() == expected, report.findings
    assert len(report.probes) == 3


async def test_the_nginx_config_of_the_deploying_page_is_clean(tmp_path: Path) -> None:
    page = (ROOT / "docs/deploying.md").read_text(encoding="utf-8")
    block = page.split("<!-- run-by: tests/test_doctor.py -->\n```nginx\n", 1)[1]
    block = block.split("```", 1)[0]
    with trio.fail_after(20):
        async with app_server(0.5) as upstream:
            location = block.replace("127.0.0.1:8000", f"127.0.0.1:{upstream}")
            with nginx(tmp_path, upstream, location) as port:
                report = await diagnose(f"http://127.0.0.1:{port}/events/doctor", duration=DURATION)
    assert report.codes() == {"http1"}, report.findings
    assert len(report.probes) == 5


async def test_a_page_that_is_not_a_stream_gets_content_type_and_cache_findings() -> None:
    with trio.fail_after(20):
        async with app_server(0.5) as port:
            report = await diagnose(f"http://127.0.0.1:{port}/page", duration=DURATION)
    assert report.codes() == {"http1", "content-type", "cache-control", "no-probes"}
    assert [f.code for f in report.problems] == ["content-type", "cache-control"]
